/*
 * loadview.c: queue sizing and orphan collection as text. See loadview.h.
 */
#include "tui/loadview.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "util/timeutil.h"

const char *loadview_queue_mode(const json_t *queue)
{
    return json_is_true(json_object_get(queue, "pinned")) ? "pinned" : "sized to the load";
}

static double real_field(const json_t *o, const char *key)
{
    return json_number_value(json_object_get(o, key));
}

void loadview_queue_signals(const json_t *queue, char *out, size_t n)
{
    const json_t *s = json_object_get(queue, "signals");
    if (!json_is_object(s)) {
        snprintf(out, n, "?");
        return;
    }
    char pressure[160], rate[32];
    if (json_is_true(json_object_get(s, "psi")))
        snprintf(pressure, sizeof(pressure), "I/O some %.1f%% full %.1f%%, memory full %.1f%%",
                 real_field(s, "io_some_avg10"), real_field(s, "io_full_avg10"),
                 real_field(s, "memory_full_avg10"));
    else
        snprintf(pressure, sizeof(pressure), "no PSI");
    const char *disk = json_string_value(json_object_get(s, "disk"));
    if (disk) { /* the queue's disk is measured: its foreign I/O */
        char foreign[32];
        double f = real_field(s, "foreign_io_bps");
        format_bytes(f > 0 ? (uint64_t)f : 0, foreign, sizeof(foreign));
        size_t len = strlen(pressure);
        snprintf(pressure + len, sizeof(pressure) - len, ", foreign I/O %s/s on %s", foreign, disk);
    }
    double tput = real_field(s, "throughput");
    format_bytes(tput > 0 ? (uint64_t)tput : 0, rate, sizeof(rate));
    snprintf(out, n, "%s; %lld running, %lld waiting; %s/s", pressure,
             (long long)json_integer_value(json_object_get(s, "running")),
             (long long)json_integer_value(json_object_get(s, "waiting")), rate);
}

void loadview_queues_line(const json_t *queues_reply, char *out, size_t n)
{
    const json_t *arr = json_object_get(queues_reply, "queues");
    size_t off = 0;
    out[0] = '\0';
    for (size_t i = 0; i < json_array_size(arr) && off < n; i++) {
        const json_t *q = json_array_get(arr, i);
        const char *change = json_string_value(json_object_get(q, "last_change"));
        char sig[256];
        loadview_queue_signals(q, sig, sizeof(sig));
        int w = snprintf(out + off, n - off, "%s%s %lld (%s, max %lld%s%s; %s)", i ? "  " : "",
                         json_string_value(json_object_get(q, "queue")) ?: "?",
                         (long long)json_integer_value(json_object_get(q, "limit")),
                         loadview_queue_mode(q),
                         (long long)json_integer_value(json_object_get(q, "max")),
                         change ? "; last " : "", change ? change : "", sig);
        if (w < 0)
            break;
        off += (size_t)w;
    }
}

/* "in 4m10s" for a time after now, "now" otherwise. */
static void until(int64_t at, int64_t now, char *out, size_t n)
{
    if (at <= now) {
        snprintf(out, n, "now");
        return;
    }
    char d[32];
    format_duration_ms(at - now, d, sizeof(d));
    snprintf(out, n, "in %s", d);
}

void loadview_orphans_line(const json_t *gc_reply, int64_t now, char *out, size_t n)
{
    const json_t *o = json_object_get(gc_reply, "auto_gc_orphans");
    if (!json_is_object(o)) {
        snprintf(out, n, "?");
        return;
    }
    if (!json_is_true(json_object_get(o, "enabled"))) {
        snprintf(out, n,
                 "idle collection off (--no-auto-gc-orphans): `thinimg gc --force` "
                 "removes them");
        return;
    }
    long long waiting = (long long)json_integer_value(json_object_get(o, "waiting"));
    const char *refused = json_string_value(json_object_get(o, "refused"));
    if (refused) {
        snprintf(out, n, "%lld waiting; not collected while the host is not healthy: %s", waiting,
                 refused);
        return;
    }
    int64_t due = json_integer_value(json_object_get(o, "next_due_ms"));
    int64_t look = json_integer_value(json_object_get(o, "next_pass_ms"));
    char grace[32], due_s[48], look_s[48];
    format_duration_ms(json_integer_value(json_object_get(o, "grace_ms")), grace, sizeof(grace));
    until(look, now, look_s, sizeof(look_s));
    if (!json_object_get(o, "last_pass_ms") || json_is_null(json_object_get(o, "last_pass_ms"))) {
        snprintf(out, n, "not looked yet (grace %s; each orphan goes once idle and past it)",
                 grace);
        return;
    }
    if (waiting == 0) {
        snprintf(out, n, "none waiting; next look %s (grace %s)", look_s, grace);
        return;
    }
    /* An orphan past its grace goes at the next look the daemon is idle; one within it at the
     * first look after its grace ends. */
    until(due && due > look ? due : look, now, due_s, sizeof(due_s));
    snprintf(out, n, "%lld waiting; the next may go %s when idle (grace %s), next look %s", waiting,
             due_s, grace, look_s);
}
