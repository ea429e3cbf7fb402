/*
 * fuzz_pool_status.c: libFuzzer target for the thin-pool / thin status and thin-pool table
 * parsers (dm/pool_status.h). The input is one line from the kernel in practice, but the
 * parsers must accept any bytes: no crash, no read past the input, and for a line that parses
 * the usage figures stay within their totals.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dm/pool.h"
#include "dm/pool_status.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *line = malloc(size + 1);
    if (!line)
        return 0;
    memcpy(line, data, size);
    line[size] = '\0';
    struct pool_status s;
    if (pool_status_parse(line, &s) == 0) {
        if (s.meta_used > s.meta_total || s.data_used > s.data_total)
            abort();
        double d = pool_status_data_pct(&s), m = pool_status_meta_pct(&s);
        if (d < 0.0 || d > 100.0 || m < 0.0 || m > 100.0)
            abort();
        (void)pool_check_usable("fuzz", &s, NULL, NULL);
        (void)pool_mode_name(s.mode);
    }
    struct thin_status t;
    (void)thin_status_parse(line, &t);
    struct pool_table pt;
    if (pool_table_parse(line, &pt) == 0 && pt.n_features > POOL_TABLE_FEATURES_MAX)
        abort();
    free(line);
    return 0;
}
