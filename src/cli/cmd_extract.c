/*
 * cmd_extract.c: `thinimg extract`: apply layer archives, in order, into a directory with
 * exactly the code the unpack machine uses on a thin device (archive_apply). This is how
 * extraction is used and tested without devicemapper; --scan-only runs the fetch machine's
 * validate check (archive_scan) instead.
 *
 * A docker-archive or OCI layout given as a LAYER is expanded into its layers (each copied
 * to an anonymous memory file first, then applied like any layer). Detection and apply (or
 * scan) share one read of the blob: archive_apply_detect, archive_scan_detect.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "archive/archive.h"
#include "archive/limits.h"
#include "cli/cli.h"
#include "util/cleanup.h"
#include "util/fsutil.h"
#include "util/timeutil.h"

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: thinimg extract --root DIR [OPTIONS] LAYER [LAYER...]\n"
            "       thinimg extract --scan-only [OPTIONS] LAYER [LAYER...]\n"
            "\n"
            "Applies layer archives (tar, tar+gzip, tar+zstd; a docker-archive or OCI layout\n"
            "is expanded into its layers) in order into DIR, with OCI whiteouts, exactly as\n"
            "thinimg unpacks them onto a thin device. Unsafe or malformed archives are rejected\n"
            "with the entry and the rule they break. DIR is created when missing.\n"
            "\n"
            "Options:\n"
            "  --root DIR             target directory (required unless --scan-only)\n"
            "  --scan-only            check each layer against the policy, write nothing\n"
            "  --allow-devices        allow device nodes (the default)\n"
            "  --no-devices           reject layers with device nodes\n"
            "  --same-owner           chown entries to their uid/gid (default when root)\n"
            "  --no-same-owner        keep the extracting user as owner (default otherwise)\n"
            "  --xattrs LIST          xattr allowlist: names or prefixes ending in '.',\n"
            "                         comma-separated (default: %s)\n"
            "  --allow-control-chars  accept names with control characters\n"
            "  --json                 print per-layer statistics as JSON\n"
            "  -h, --help             this help\n"
            "\n"
            "Limits (sizes take K, M, G, T suffixes; 0 = no limit, except path and depth):\n"
            "  --max-blob-size N      largest layer blob          (default 8G)\n"
            "  --max-entries N        entries per layer           (default 1000000)\n"
            "  --max-file-size N      largest regular file        (default 8G)\n"
            "  --max-total-size N     file bytes per layer        (default 32G)\n"
            "  --max-path N           longest name in bytes, 1 to 4095 (default 4095)\n"
            "  --max-depth N          most name components, 1 to 2048 (default 256)\n"
            "  --max-header-size N    metadata bytes per entry, 512 or more (default 1M)\n"
            "  --max-time T           wall time per layer: N or Ns seconds, Nms, up to 30\n"
            "                         days (default 1800)\n"
            "  --max-ratio N          decompression ratio         (default 100)\n"
            "\n"
            "Exit codes: 0 applied, 2 usage, 6 a layer was rejected (unsafe, malformed, over a\n"
            "limit, not a layer), 1 other failures. See docs/archive.md.\n",
            ARCHIVE_DEFAULT_XATTR_ALLOW);
}

static json_t *stats_json(const char *layer, const char *format, const struct archive_stats *st)
{
    return json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "layer", layer,
                     "format", format, "entries", (json_int_t)st->entries, "files",
                     (json_int_t)st->files, "dirs", (json_int_t)st->dirs, "symlinks",
                     (json_int_t)st->symlinks, "hardlinks", (json_int_t)st->hardlinks, "devices",
                     (json_int_t)st->devices, "whiteouts", (json_int_t)st->whiteouts, "bytes",
                     (json_int_t)st->bytes, "xattrs_dropped", (json_int_t)st->xattrs_dropped,
                     "skipped", (json_int_t)st->skipped);
}

struct run {
    struct cli *cli;
    int root_fd;
    bool scan_only, json;
    struct archive_policy pol;
    json_t *out;
};

/* Report one layer applied or scanned since t0 (r: its result). An exit code. */
static int layer_done(struct run *run, const char *label, enum blob_format f, int r,
                      const struct archive_stats *stp, struct err *e, int64_t t0)
{
    if (r < 0) {
        err_prefix(e, "%s", label);
        return cli_fail("extract", r, e);
    }
    const struct archive_stats st = *stp;
    if (run->json) {
        json_t *o = stats_json(label, blob_format_name(f), &st);
        json_object_set_new(o, "ms", json_integer(mono_ms() - t0));
        json_array_append_new(run->out, o);
    } else if (!run->cli->quiet) {
        char sz[32];
        format_bytes(st.bytes, sz, sizeof(sz));
        printf("%s %s (%s): %" PRIu64 " entries: %" PRIu64 " files (%s), %" PRIu64 " dirs, %" PRIu64
               " symlinks, %" PRIu64 " hardlinks, %" PRIu64 " devices/fifos, %" PRIu64
               " whiteouts\n",
               run->scan_only ? "scanned" : "applied", label, blob_format_name(f), st.entries,
               st.files, sz, st.dirs, st.symlinks, st.hardlinks, st.devices, st.whiteouts);
    }
    return EXIT_OK;
}

/* Apply or scan one layer blob (by path). */
static int one_layer(struct run *run, const char *label, const char *path, enum blob_format f)
{
    struct archive_stats st;
    struct err e = {0};
    int64_t t0 = mono_ms();
    int r = run->scan_only ? archive_scan(path, &run->pol, &st, &e)
                           : archive_apply(run->root_fd, path, &run->pol, &st, &e);
    return layer_done(run, label, f, r, &st, &e, t0);
}

/* A docker-archive or OCI layout: each layer copied out to a memory file, then applied. */
static int multi_layer(struct run *run, const char *path)
{
    struct archive_manifest m;
    struct err e = {0};
    int r = archive_manifest_read(path, &m, &e);
    if (r < 0)
        return cli_fail("extract", r, &e);
    int rc = EXIT_OK;
    for (size_t i = 0; i < m.n_layers && rc == EXIT_OK; i++) {
        _cleanup_close_ int fd = memfd_create("thinimg-layer", MFD_CLOEXEC);
        if (fd < 0) {
            rc = cli_failf("extract", EXIT_FAIL, "memfd_create: %s", strerror(errno));
            break;
        }
        r = archive_member_copy(path, m.layers[i].member, fd, run->pol.max_blob_bytes, &e);
        if (r < 0) {
            rc = cli_fail("extract", r, &e);
            break;
        }
        char fdpath[64], label[4096 + 64];
        snprintf(fdpath, sizeof(fdpath), "/proc/self/fd/%d", fd);
        snprintf(label, sizeof(label), "%s[%s]", path, m.layers[i].member);
        rc = one_layer(run, label, fdpath, m.layers[i].format);
    }
    archive_manifest_free(&m);
    return rc;
}

/* Option codes (getopt_long values past the ASCII range). */
enum {
    OPT_ROOT = 256,
    OPT_SCAN,
    OPT_ALLOW_DEV,
    OPT_NO_DEV,
    OPT_SAME_OWNER,
    OPT_NO_SAME_OWNER,
    OPT_XATTRS,
    OPT_CTRL,
    OPT_JSON,
    OPT_MAX_BLOB,
    OPT_MAX_ENTRIES,
    OPT_MAX_FILE,
    OPT_MAX_TOTAL,
    OPT_MAX_PATH,
    OPT_MAX_DEPTH,
    OPT_MAX_HEADER,
    OPT_MAX_TIME,
    OPT_MAX_RATIO,
};

/* An option without a value check of its own; false when c is none of them. */
static bool take_option(struct run *run, int c, const char *arg, const char **root)
{
    switch (c) {
    case OPT_ROOT:
        *root = arg;
        return true;
    case OPT_SCAN:
        run->scan_only = true;
        return true;
    case OPT_ALLOW_DEV:
        run->pol.allow_devices = true;
        return true;
    case OPT_NO_DEV:
        run->pol.allow_devices = false;
        return true;
    case OPT_SAME_OWNER:
        run->pol.preserve_owner = true;
        return true;
    case OPT_NO_SAME_OWNER:
        run->pol.preserve_owner = false;
        return true;
    case OPT_XATTRS:
        run->pol.xattr_allow = arg;
        return true;
    case OPT_CTRL:
        run->pol.allow_control_chars = true;
        return true;
    case OPT_JSON:
        run->json = true;
        return true;
    default:
        return false;
    }
}

/* One LAYER operand: a layer, or an archive of layers (docker-archive, OCI layout), by
 * content, detected and applied (or scanned) in one read of the blob
 * (archive_apply_detect, archive_scan_detect). An exit code. */
static int one_file(struct run *run, const char *path)
{
    enum blob_format f;
    char why[160];
    struct archive_stats st;
    struct err e = {0};
    int64_t t0 = mono_ms();
    int r = run->scan_only ? archive_scan_detect(path, &run->pol, &f, why, sizeof(why), &st, &e)
                           : archive_apply_detect(run->root_fd, path, &run->pol, &f, why,
                                                  sizeof(why), &st, &e);
    if (r < 0 && f == BLOB_UNKNOWN)
        return cli_failf("extract", cli_exit_code(r), "%s: %s", path,
                         e.code ? err_str(&e) : strerror(-r));
    if (f == BLOB_UNKNOWN)
        return cli_failf("extract", EXIT_REJECTED, "%s: not an image layer: %s (rule: format)",
                         path, why);
    if (!blob_format_is_layer(f))
        return multi_layer(run, path);
    return layer_done(run, path, f, r, &st, &e, t0);
}

int cmd_extract(struct cli *cli, int argc, char **argv)
{
    static const struct option opts[] = {
        {"root", required_argument, NULL, OPT_ROOT},
        {"scan-only", no_argument, NULL, OPT_SCAN},
        {"allow-devices", no_argument, NULL, OPT_ALLOW_DEV},
        {"no-devices", no_argument, NULL, OPT_NO_DEV},
        {"same-owner", no_argument, NULL, OPT_SAME_OWNER},
        {"no-same-owner", no_argument, NULL, OPT_NO_SAME_OWNER},
        {"xattrs", required_argument, NULL, OPT_XATTRS},
        {"allow-control-chars", no_argument, NULL, OPT_CTRL},
        {"json", no_argument, NULL, OPT_JSON},
        {"max-blob-size", required_argument, NULL, OPT_MAX_BLOB},
        {"max-entries", required_argument, NULL, OPT_MAX_ENTRIES},
        {"max-file-size", required_argument, NULL, OPT_MAX_FILE},
        {"max-total-size", required_argument, NULL, OPT_MAX_TOTAL},
        {"max-path", required_argument, NULL, OPT_MAX_PATH},
        {"max-depth", required_argument, NULL, OPT_MAX_DEPTH},
        {"max-header-size", required_argument, NULL, OPT_MAX_HEADER},
        {"max-time", required_argument, NULL, OPT_MAX_TIME},
        {"max-ratio", required_argument, NULL, OPT_MAX_RATIO},
        {"help", no_argument, NULL, 'h'},
        {0, 0, 0, 0},
    };
    struct run run = {.cli = cli, .root_fd = -1, .pol = archive_policy_default()};
    run.pol.preserve_owner = geteuid() == 0;
    const char *root = NULL;
    int c, idx = -1;
    while ((c = getopt_long(argc, argv, "h", opts, &idx)) != -1) {
        if (c >= OPT_MAX_BLOB && c <= OPT_MAX_RATIO) {
            /* Every limit's syntax and range: src/archive/limits.c. */
            char why[256];
            if (archive_limit_set(&run.pol, opts[idx].name, optarg, why, sizeof(why)) < 0)
                return cli_usage_error("extract", "%s", why);
            continue;
        }
        if (c == 'h') {
            usage(stdout);
            return EXIT_OK;
        }
        if (!take_option(&run, c, optarg, &root))
            return cli_bad_option("extract");
    }
    int operands_rc = cli_check_operands("extract", argc, argv, optind);
    if (operands_rc != EXIT_OK)
        return operands_rc;
    if (!root && !run.scan_only)
        return cli_usage_error("extract", "--root DIR is required (or --scan-only)");

    if (!run.scan_only) {
        int r = mkdir_p(root, 0755);
        if (r < 0)
            return cli_failf("extract", EXIT_FAIL, "cannot create %s: %s", root, strerror(-r));
        run.root_fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (run.root_fd < 0)
            return cli_failf("extract", EXIT_FAIL, "cannot open %s: %s", root, strerror(errno));
    }
    if (run.json)
        run.out = json_array();

    int rc = EXIT_OK;
    for (int i = optind; i < argc && rc == EXIT_OK; i++)
        rc = one_file(&run, argv[i]);
    if (run.json) {
        if (rc == EXIT_OK)
            cli_print_json(run.out);
        else
            json_decref(run.out);
    }
    if (run.root_fd >= 0)
        close(run.root_fd);
    return rc;
}
