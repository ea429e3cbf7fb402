/*
 * defaults.h: the project-wide defaults, in one place with their reasons.
 *
 * Module-specific limits live in their module's header (archive limits in archive/limits.h,
 * pool sizing in dm/pool.h, ...). What is here is shared by several modules or by the CLI.
 */
#pragma once

/* Where thinimg keeps its state. Override: --state-dir or THINIMG_STATE_DIR. Everything else
 * is derived from it unless overridden on its own. */
#define DEFAULT_STATE_DIR "/var/lib/thinimg"
#define DEFAULT_DB_NAME "thinimg.db"          /* --db, THINIMG_DB */
#define DEFAULT_BLOB_SUBDIR "blobs"           /* blobs/sha256/<hex> */
#define DEFAULT_TMP_SUBDIR "tmp"              /* partial downloads, same fs as blobs */
#define DEFAULT_MOUNT_SUBDIR "mnt"            /* private mount points for unpacking */
#define DEFAULT_POOL_SUBDIR "pool"            /* loop-backed pool files */
#define DEFAULT_LOCK_NAME "thinimg.lock"      /* flock(2) process lock */
#define DEFAULT_SOCKET_NAME "thinimg.sock"    /* daemon admin API */
#define DEFAULT_KMSG_CURSOR_NAME "kmsg.cursor"     /* how far the health check read /dev/kmsg */

/* Thin pool name. Device names are "<pool>-<kind>-<id>", so the pool name is their prefix.
 * Override: --pool or THINIMG_POOL. */
#define DEFAULT_POOL_NAME "thinimg"

/* Queue concurrency. Downloads are network-bound: five in parallel saturate a typical link
 * without hammering S3. Unpacks are CPU/IO-bound and touch devicemapper: two lets independent
 * chains overlap extraction while every dm control operation stays serialized. */
#define DEFAULT_FETCH_QUEUE_LIMIT 5
#define DEFAULT_UNPACK_QUEUE_LIMIT 2

/* Default S3 region when neither --region nor AWS_REGION is set (the public work-sample bucket
 * lives there). */
#define DEFAULT_S3_REGION "us-east-1"

/* How long finished runs keep their event history before `gc`/the daemon prunes it, and how
 * many are kept at most (a host that runs thousands of workflows a day keeps its newest
 * 20,000 runs, some megabytes of database, instead of a month of them). */
#define DEFAULT_HISTORY_RETENTION_DAYS 30
#define DEFAULT_HISTORY_RETENTION_RUNS 20000
