/*
 * pool_status.c: thin-pool / thin status and thin-pool table parsers; see pool_status.h.
 *
 * Lines are tokenized in place on a bounded stack copy; numbers must be plain decimal
 * (no sign, no leading spaces) and fit 64 bits.
 */
#include "dm/pool_status.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* A status line longer than this is not one the kernel writes. */
#define STATUS_LINE_MAX   1024
#define STATUS_TOKENS_MAX 32

struct tokens {
    char buf[STATUS_LINE_MAX];
    char *v[STATUS_TOKENS_MAX];
    size_t n;
};

static int tokenize(const char *line, struct tokens *t)
{
    if (!line)
        return -EBADMSG;
    size_t len = strnlen(line, STATUS_LINE_MAX);
    if (len >= STATUS_LINE_MAX)
        return -EBADMSG;
    memcpy(t->buf, line, len + 1);
    t->n = 0;
    char *p = t->buf;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == '\n')
            *p++ = '\0';
        if (!*p)
            break;
        if (t->n == STATUS_TOKENS_MAX)
            return -EBADMSG;
        t->v[t->n++] = p;
        while (*p && *p != ' ' && *p != '\t' && *p != '\n')
            p++;
    }
    return 0;
}

static int parse_u64(const char *s, uint64_t *out)
{
    if (!s || !*s)
        return -EBADMSG;
    uint64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -EBADMSG;
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -EBADMSG;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* "used/total" with used <= total. */
static int parse_ratio(const char *s, uint64_t *used, uint64_t *total)
{
    const char *slash = strchr(s, '/');
    if (!slash || slash == s || strchr(slash + 1, '/'))
        return -EBADMSG;
    char a[32];
    size_t n = (size_t)(slash - s);
    if (n >= sizeof(a))
        return -EBADMSG;
    memcpy(a, s, n);
    a[n] = '\0';
    if (parse_u64(a, used) < 0 || parse_u64(slash + 1, total) < 0 || *used > *total)
        return -EBADMSG;
    return 0;
}

int pool_status_parse(const char *line, struct pool_status *out)
{
    memset(out, 0, sizeof(*out));
    struct tokens t;
    if (tokenize(line, &t) < 0 || t.n == 0)
        return -EBADMSG;
    if (t.n == 1 && !strcmp(t.v[0], "Fail")) {
        out->mode = POOL_MODE_FAIL;
        return 0;
    }
    if (t.n == 1 && !strcmp(t.v[0], "Error")) {
        out->mode = POOL_MODE_ERROR;
        return 0;
    }
    /* transaction, meta, data, held root, mode: the minimum every kernel writes. */
    if (t.n < 5)
        return -EBADMSG;
    if (parse_u64(t.v[0], &out->transaction_id) < 0 ||
        parse_ratio(t.v[1], &out->meta_used, &out->meta_total) < 0 ||
        parse_ratio(t.v[2], &out->data_used, &out->data_total) < 0)
        return -EBADMSG;
    if (strcmp(t.v[3], "-") != 0) {
        if (parse_u64(t.v[3], &out->held_root) < 0)
            return -EBADMSG;
        out->has_held_root = true;
    }
    if (!strcmp(t.v[4], "rw"))
        out->mode = POOL_MODE_RW;
    else if (!strcmp(t.v[4], "ro"))
        out->mode = POOL_MODE_RO;
    else if (!strcmp(t.v[4], "out_of_data_space"))
        out->mode = POOL_MODE_OUT_OF_DATA_SPACE;
    else
        return -EBADMSG;
    out->discard = POOL_DISCARD_PASSDOWN;
    if (t.n > 5) {
        if (!strcmp(t.v[5], "discard_passdown"))
            out->discard = POOL_DISCARD_PASSDOWN;
        else if (!strcmp(t.v[5], "no_discard_passdown"))
            out->discard = POOL_DISCARD_NO_PASSDOWN;
        else if (!strcmp(t.v[5], "ignore_discard"))
            out->discard = POOL_DISCARD_IGNORE;
        else
            return -EBADMSG;
    }
    if (t.n > 6) {
        if (!strcmp(t.v[6], "error_if_no_space"))
            out->error_if_no_space = true;
        else if (!strcmp(t.v[6], "queue_if_no_space"))
            out->error_if_no_space = false;
        else
            return -EBADMSG;
    }
    if (t.n > 7) {
        if (!strcmp(t.v[7], "needs_check"))
            out->needs_check = true;
        else if (strcmp(t.v[7], "-") != 0)
            return -EBADMSG;
    }
    if (t.n > 8) {
        if (parse_u64(t.v[8], &out->meta_low_watermark) < 0)
            return -EBADMSG;
        out->has_low_watermark = true;
    }
    return 0;
}

const char *pool_mode_name(enum pool_mode m)
{
    switch (m) {
    case POOL_MODE_RW:
        return "rw";
    case POOL_MODE_RO:
        return "ro";
    case POOL_MODE_OUT_OF_DATA_SPACE:
        return "out_of_data_space";
    case POOL_MODE_FAIL:
        return "Fail";
    case POOL_MODE_ERROR:
        return "Error";
    }
    return "unknown";
}

const char *pool_discard_name(enum pool_discard d)
{
    switch (d) {
    case POOL_DISCARD_PASSDOWN:
        return "discard_passdown";
    case POOL_DISCARD_NO_PASSDOWN:
        return "no_discard_passdown";
    case POOL_DISCARD_IGNORE:
        return "ignore_discard";
    }
    return "unknown";
}

double pool_status_data_pct(const struct pool_status *s)
{
    return s->data_total ? 100.0 * (double)s->data_used / (double)s->data_total : 0.0;
}

double pool_status_meta_pct(const struct pool_status *s)
{
    return s->meta_total ? 100.0 * (double)s->meta_used / (double)s->meta_total : 0.0;
}

int thin_status_parse(const char *line, struct thin_status *out)
{
    memset(out, 0, sizeof(*out));
    struct tokens t;
    if (tokenize(line, &t) < 0 || t.n == 0 || t.n > 2)
        return -EBADMSG;
    if (t.n == 1) {
        if (!strcmp(t.v[0], "Fail") || !strcmp(t.v[0], "Error")) {
            out->failed = true;
            return 0;
        }
        if (!strcmp(t.v[0], "-")) {
            out->deleting = true;
            return 0;
        }
        return -EBADMSG;
    }
    if (parse_u64(t.v[0], &out->mapped_sectors) < 0)
        return -EBADMSG;
    if (!strcmp(t.v[1], "-"))
        return out->mapped_sectors == 0 ? 0 : -EBADMSG;
    if (parse_u64(t.v[1], &out->highest_sector) < 0)
        return -EBADMSG;
    out->has_highest = true;
    return 0;
}

static int copy_word(char *dst, size_t n, const char *src)
{
    size_t len = strlen(src);
    if (len == 0 || len >= n)
        return -EBADMSG;
    memcpy(dst, src, len + 1);
    return 0;
}

int pool_table_parse(const char *line, struct pool_table *out)
{
    memset(out, 0, sizeof(*out));
    struct tokens t;
    if (tokenize(line, &t) < 0 || t.n < 4)
        return -EBADMSG;
    if (copy_word(out->metadata_dev, sizeof(out->metadata_dev), t.v[0]) < 0 ||
        copy_word(out->data_dev, sizeof(out->data_dev), t.v[1]) < 0 ||
        parse_u64(t.v[2], &out->block_sectors) < 0 || parse_u64(t.v[3], &out->low_water_blocks) < 0)
        return -EBADMSG;
    if (t.n == 4)
        return 0;
    uint64_t nf = 0;
    if (parse_u64(t.v[4], &nf) < 0 || nf > POOL_TABLE_FEATURES_MAX || t.n != 5 + nf)
        return -EBADMSG;
    for (size_t i = 0; i < nf; i++)
        if (copy_word(out->features[i], sizeof(out->features[i]), t.v[5 + i]) < 0)
            return -EBADMSG;
    out->n_features = (unsigned)nf;
    return 0;
}

bool pool_table_has_feature(const struct pool_table *t, const char *feature)
{
    for (unsigned i = 0; i < t->n_features; i++)
        if (!strcmp(t->features[i], feature))
            return true;
    return false;
}
