/*
 * test_loadview.c: one queue's signals as `thinimg status` and the monitor print them: the
 * pressures, the foreign I/O where the pool's disk is measured, the runs and throughput.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "tui/loadview.h"

static void test_queue_signals(void **state)
{
    (void)state;
    json_t *q =
        json_pack("{s:s, s:i, s:{s:b, s:f, s:f, s:f, s:i, s:i, s:f}}", "queue", "unpack", "limit",
                  1, "signals", "psi", 1, "io_some_avg10", 22.5, "io_full_avg10", 1.0,
                  "memory_full_avg10", 0.0, "running", 4, "waiting", 2, "throughput", 2097152.0);
    char out[256];
    loadview_queue_signals(q, out, sizeof(out));
    assert_string_equal(out, "I/O some 22.5% full 1.0%, memory full 0.0%; 4 running, 2 waiting; "
                             "2.0 MiB/s");
    /* the disk measured: its foreign I/O after the pressures */
    json_t *s = json_object_get(q, "signals");
    json_object_set_new(s, "disk", json_string("vdb"));
    json_object_set_new(s, "foreign_io_bps", json_real(31.0 * 1024 * 1024));
    loadview_queue_signals(q, out, sizeof(out));
    assert_string_equal(out, "I/O some 22.5% full 1.0%, memory full 0.0%, foreign I/O 31.0 MiB/s "
                             "on vdb; 4 running, 2 waiting; 2.0 MiB/s");
    json_decref(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_queue_signals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
