/*
 * reslock.c: database resource locks owned by live processes. See reslock.h.
 */
#include "guard/reslock.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/buf.h"
#include "util/fsutil.h"
#include "util/log.h"
#include "util/timeutil.h"

/* Field 22 (starttime, clock ticks since boot) of /proc/PID/stat. */
static int read_start_ticks(pid_t pid, int64_t *out)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    struct buf b = BUF_INIT;
    int r = read_file(path, 4096, &b);
    if (r < 0) {
        buf_free(&b);
        return r;
    }
    char *p = strrchr(b.data, ')'); /* comm may contain spaces and parentheses */
    r = -EBADMSG;
    if (p) {
        /* after ") " come fields 3.. ; starttime is field 22, i.e. the 20th after comm */
        int field = 2;
        for (char *tok = strtok(p + 1, " "); tok; tok = strtok(NULL, " ")) {
            if (++field == 22) {
                *out = strtoll(tok, NULL, 10);
                r = 0;
                break;
            }
        }
    }
    buf_free(&b);
    return r;
}

int lock_owner_self(struct lock_owner *out)
{
    memset(out, 0, sizeof(*out));
    out->pid = getpid();
    int r = boot_id_read(out->boot_id, sizeof(out->boot_id));
    if (r < 0)
        return r;
    return read_start_ticks(out->pid, &out->start_ticks);
}

bool lock_owner_alive(const struct lock_owner *o)
{
    struct lock_owner self;
    if (lock_owner_self(&self) < 0)
        return true; /* cannot tell: never break a lock on doubt */
    if (strcmp(self.boot_id, o->boot_id) != 0)
        return false; /* owner lived in an earlier boot */
    int64_t ticks;
    if (read_start_ticks(o->pid, &ticks) < 0)
        return false; /* no such process */
    return ticks == o->start_ticks;
}

int reslock_acquire(struct db *db, const char *resource, const char *purpose, struct err *e)
{
    struct lock_owner self;
    int r = lock_owner_self(&self);
    if (r < 0)
        return err_set(e, r, "cannot identify this process for locking: %s", strerror(-r));
    r = db_begin(db);
    if (r < 0)
        return err_set(e, r, "cannot lock %s: database busy", resource);
    sqlite3_stmt *q = db_prepare(db, "SELECT owner_pid, owner_boot_id, owner_start_ticks, purpose,"
                                     " acquired_at_ms FROM resource_locks WHERE resource = ?");
    if (!q) {
        db_rollback(db);
        return -EIO;
    }
    db_bind_text(q, 1, resource);
    r = db_step(db, q);
    if (r == 1) {
        struct lock_owner o = {.pid = sqlite3_column_int(q, 0),
                               .start_ticks = sqlite3_column_int64(q, 2)};
        snprintf(o.boot_id, sizeof(o.boot_id), "%s", (const char *)sqlite3_column_text(q, 1));
        char held_for[128];
        snprintf(held_for, sizeof(held_for), "%s", (const char *)sqlite3_column_text(q, 3));
        int64_t since = sqlite3_column_int64(q, 4);
        db_done(q);
        bool mine = o.pid == self.pid && o.start_ticks == self.start_ticks &&
                    !strcmp(o.boot_id, self.boot_id);
        if (!mine && lock_owner_alive(&o)) {
            db_rollback(db);
            char age[32];
            format_duration_ms(now_ms() - since, age, sizeof(age));
            return err_set(e, -EBUSY,
                           "%s is locked by pid %d (%s, for %s); wait for it to finish", resource,
                           (int)o.pid, held_for, age);
        }
        if (!mine)
            log_warn("breaking stale lock of a dead process", "resource=%s pid=%d purpose=%s",
                     resource, (int)o.pid, held_for);
    } else {
        db_done(q);
        if (r < 0) {
            db_rollback(db);
            return r;
        }
    }
    sqlite3_stmt *ins = db_prepare(db, "INSERT OR REPLACE INTO resource_locks(resource, owner_pid,"
                                       " owner_boot_id, owner_start_ticks, purpose, acquired_at_ms)"
                                       " VALUES(?,?,?,?,?,?)");
    if (!ins) {
        db_rollback(db);
        return -EIO;
    }
    db_bind_text(ins, 1, resource);
    db_bind_i64(ins, 2, self.pid);
    db_bind_text(ins, 3, self.boot_id);
    db_bind_i64(ins, 4, self.start_ticks);
    db_bind_text(ins, 5, purpose);
    db_bind_i64(ins, 6, now_ms());
    r = db_step(db, ins);
    db_done(ins);
    if (r < 0) {
        db_rollback(db);
        return r;
    }
    return db_commit(db);
}

int reslock_release(struct db *db, const char *resource)
{
    struct lock_owner self;
    int r = lock_owner_self(&self);
    if (r < 0)
        return r;
    db_lock(db);
    sqlite3_stmt *st = db_prepare(db, "DELETE FROM resource_locks WHERE resource = ? AND"
                                      " owner_pid = ? AND owner_boot_id = ? AND"
                                      " owner_start_ticks = ?");
    if (!st) {
        db_unlock(db);
        return -EIO;
    }
    db_bind_text(st, 1, resource);
    db_bind_i64(st, 2, self.pid);
    db_bind_text(st, 3, self.boot_id);
    db_bind_i64(st, 4, self.start_ticks);
    r = db_step(db, st);
    int changes = sqlite3_changes(db_handle(db));
    db_done(st);
    db_unlock(db);
    if (r < 0)
        return r;
    return changes ? 0 : -ENOENT;
}

int reslock_stale(struct db *db, bool remove, void (*cb)(const char *line, void *ud), void *ud)
{
    db_lock(db);
    sqlite3_stmt *st = db_prepare(db, "SELECT resource, owner_pid, owner_boot_id,"
                                      " owner_start_ticks, purpose FROM resource_locks");
    if (!st) {
        db_unlock(db);
        return -EIO;
    }
    char **stale = NULL;
    size_t n = 0;
    int r;
    while ((r = db_step(db, st)) == 1) {
        struct lock_owner o = {.pid = sqlite3_column_int(st, 1),
                               .start_ticks = sqlite3_column_int64(st, 3)};
        snprintf(o.boot_id, sizeof(o.boot_id), "%s", (const char *)sqlite3_column_text(st, 2));
        if (lock_owner_alive(&o))
            continue;
        char **p = realloc(stale, (n + 1) * sizeof(char *));
        if (!p)
            break;
        stale = p;
        stale[n++] = db_col_strdup(st, 0);
        if (cb) {
            char line[512];
            snprintf(line, sizeof(line), "%s (%s, pid %d)", sqlite3_column_text(st, 0),
                     sqlite3_column_text(st, 4), (int)o.pid);
            cb(line, ud);
        }
    }
    db_done(st);
    for (size_t i = 0; i < n; i++) {
        if (remove && r >= 0) {
            sqlite3_stmt *d = db_prepare(db, "DELETE FROM resource_locks WHERE resource = ?");
            if (d) {
                db_bind_text(d, 1, stale[i]);
                db_step(db, d);
                db_done(d);
            }
        }
        free(stale[i]);
    }
    free(stale);
    db_unlock(db);
    return r < 0 ? r : (int)n;
}
