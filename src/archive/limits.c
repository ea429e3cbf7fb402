/*
 * limits.c: the policy's limits as options: one table with each limit's option name, unit
 * and valid range, the parser the CLI uses (`--max-path 4095`, `--max-file-size 8G`,
 * `--max-time 20ms`), and the range check scan and apply run on every policy.
 *
 * Every number is parsed in uint64_t with overflow checks (a suffix or a unit conversion that
 * would wrap is "too large"), then checked against the limit's range before it is stored in
 * its field, so a value can never be truncated to a field's width.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "archive/limits.h"

#define LIMIT(name, unit, units, field, lo, hi, none)                                              \
    {                                                                                              \
        name, unit, units, offsetof(struct archive_policy, field),                                 \
            sizeof(((struct archive_policy *)0)->field), lo, hi, none                              \
    }

const struct archive_limit archive_limits[] = {
    LIMIT("max-blob-size", ARCHIVE_LIMIT_BYTES, "bytes", max_blob_bytes, 1, ARCHIVE_MAX_BYTES_LIMIT,
          true),
    LIMIT("max-entries", ARCHIVE_LIMIT_COUNT, "entries", max_entries, 1, ARCHIVE_MAX_BYTES_LIMIT,
          true),
    LIMIT("max-file-size", ARCHIVE_LIMIT_BYTES, "bytes", max_file_bytes, 1, ARCHIVE_MAX_BYTES_LIMIT,
          true),
    LIMIT("max-total-size", ARCHIVE_LIMIT_BYTES, "bytes", max_total_bytes, 1,
          ARCHIVE_MAX_BYTES_LIMIT, true),
    LIMIT("max-path", ARCHIVE_LIMIT_COUNT, "bytes", max_path_bytes, 1, ARCHIVE_MAX_PATH_BYTES_LIMIT,
          false),
    LIMIT("max-depth", ARCHIVE_LIMIT_COUNT, "components", max_depth, 1, ARCHIVE_MAX_DEPTH_LIMIT,
          false),
    LIMIT("max-header-size", ARCHIVE_LIMIT_BYTES, "bytes", max_header_bytes,
          ARCHIVE_MIN_HEADER_BYTES_LIMIT, ARCHIVE_MAX_BYTES_LIMIT, true),
    LIMIT("max-time", ARCHIVE_LIMIT_MS, "ms", max_time_ms, 1, ARCHIVE_MAX_TIME_MS_LIMIT, true),
    LIMIT("max-ratio", ARCHIVE_LIMIT_COUNT, "(decompressed bytes per compressed byte)", max_ratio,
          1, ARCHIVE_MAX_RATIO_LIMIT, true),
};
const size_t archive_limits_count = sizeof(archive_limits) / sizeof(archive_limits[0]);

static uint64_t limit_get(const struct archive_limit *l, const struct archive_policy *p)
{
    const char *f = (const char *)p + l->offset;
    if (l->size == sizeof(uint32_t)) {
        uint32_t v;
        memcpy(&v, f, sizeof(v));
        return v;
    }
    uint64_t v;
    memcpy(&v, f, sizeof(v));
    return v;
}

/* v has been range-checked: it fits the field. */
static void limit_put(const struct archive_limit *l, struct archive_policy *p, uint64_t v)
{
    char *f = (char *)p + l->offset;
    if (l->size == sizeof(uint32_t)) {
        uint32_t v32 = (uint32_t)v;
        memcpy(f, &v32, sizeof(v32));
    } else {
        memcpy(f, &v, sizeof(v));
    }
}

/* "0 (no limit) or 1 to 4095 bytes" */
static void range_text(const struct archive_limit *l, char *out, size_t out_len)
{
    snprintf(out, out_len, "%s%" PRIu64 " to %" PRIu64 " %s",
             l->zero_is_none ? "0 (no limit) or " : "", l->min, l->max, l->units);
}

static int out_of_range(const struct archive_limit *l, const char *value, char *why, size_t why_len)
{
    char range[96];
    range_text(l, range, sizeof(range));
    snprintf(why, why_len, "--%s: '%s' is out of range: %s", l->option, value, range);
    return -EINVAL;
}

/* The multiplier of a suffix for the limit's unit; 0 when the suffix is not one. */
static uint64_t suffix_scale(const struct archive_limit *l, const char *s)
{
    if (*s == '\0')
        return l->unit == ARCHIVE_LIMIT_MS ? 1000 : 1; /* a bare duration is in seconds */
    switch (l->unit) {
    case ARCHIVE_LIMIT_BYTES:
        if (s[1] != '\0')
            return 0;
        switch (*s) {
        case 'K':
        case 'k':
            return 1ULL << 10;
        case 'M':
        case 'm':
            return 1ULL << 20;
        case 'G':
        case 'g':
            return 1ULL << 30;
        case 'T':
        case 't':
            return 1ULL << 40;
        default:
            return 0;
        }
    case ARCHIVE_LIMIT_MS:
        return !strcmp(s, "ms") ? 1 : !strcmp(s, "s") ? 1000 : 0;
    case ARCHIVE_LIMIT_COUNT:
        break;
    }
    return 0;
}

int archive_limit_set(struct archive_policy *p, const char *option, const char *value, char *why,
                      size_t why_len)
{
    const struct archive_limit *l = NULL;
    for (size_t i = 0; i < archive_limits_count; i++)
        if (!strcmp(archive_limits[i].option, option))
            l = &archive_limits[i];
    if (!l) {
        snprintf(why, why_len, "--%s: not a limit", option);
        return -ENOENT;
    }
    static const char *const forms[] = {
        [ARCHIVE_LIMIT_BYTES] = "a size: N, or N with a K, M, G or T suffix",
        [ARCHIVE_LIMIT_COUNT] = "a whole number",
        [ARCHIVE_LIMIT_MS] = "a duration: N or Ns seconds, Nms milliseconds",
    };
    /* strtoull accepts blanks, signs ("-1" is 2^64-1) and an empty string: refuse them. */
    if (value[0] < '0' || value[0] > '9') {
        snprintf(why, why_len, "--%s: '%s' is not %s", l->option, value, forms[l->unit]);
        return -EINVAL;
    }
    char *end;
    errno = 0;
    unsigned long long n = strtoull(value, &end, 10);
    if (errno == ERANGE)
        return out_of_range(l, value, why, why_len);
    uint64_t scale = suffix_scale(l, end);
    if (scale == 0) {
        snprintf(why, why_len, "--%s: '%s' is not %s", l->option, value, forms[l->unit]);
        return -EINVAL;
    }
    if (n > UINT64_MAX / scale)
        return out_of_range(l, value, why, why_len);
    uint64_t v = (uint64_t)n * scale;
    if (v == 0 ? !l->zero_is_none : v < l->min || v > l->max)
        return out_of_range(l, value, why, why_len);
    limit_put(l, p, v);
    return 0;
}

int archive_policy_check(const struct archive_policy *p, char *why, size_t why_len)
{
    for (size_t i = 0; i < archive_limits_count; i++) {
        const struct archive_limit *l = &archive_limits[i];
        uint64_t v = limit_get(l, p);
        if (v == 0 ? !l->zero_is_none : v < l->min || v > l->max) {
            char range[96];
            range_text(l, range, sizeof(range));
            snprintf(why, why_len, "%s is %" PRIu64 ", out of range: %s", l->option, v, range);
            return -EINVAL;
        }
    }
    return 0;
}
