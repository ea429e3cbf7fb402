/*
 * s3_xml.c: expat-based parsers for ListObjectsV2 pages and S3 error bodies. See s3_xml.h.
 *
 * Both parsers keep a stack of element names and collect the text of the leaves they care
 * about; everything else is ignored. Namespaces are not processed: S3 uses a default xmlns,
 * so the names arrive unprefixed; a prefixed name ("s3:Key") is matched on its local part.
 */
#include "source/s3_xml.h"

#include <errno.h>
#include <expat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "source/httpc.h"
#include "util/buf.h"

#define XML_STR_(x) #x
#define XML_STR(x)  XML_STR_(x)

struct xp {
    XML_Parser parser;
    int depth;
    const char *stack[S3_XML_MAX_DEPTH]; /* interned names we care about, or "" */
    struct buf text;
    bool collecting;
    int fail;
    char fail_msg[160];
    bool saw_root;
    char root[32];
    /* list page */
    struct s3_list_page *page;
    struct s3_list_entry cur;
    bool in_contents;
    /* error body */
    struct s3_error *err;
};

static const char *const names[] = {
    "ListBucketResult",
    "Contents",
    "Key",
    "Size",
    "ETag",
    "LastModified",
    "IsTruncated",
    "NextContinuationToken",
    "EncodingType",
    "Error",
    "Code",
    "Message",
    "Region",
    "Endpoint",
    "RequestId",
};

static const char *intern(const char *name)
{
    const char *colon = strrchr(name, ':');
    if (colon)
        name = colon + 1;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (!strcmp(names[i], name))
            return names[i];
    return "";
}

static void xp_fail(struct xp *x, int code, const char *msg)
{
    if (!x->fail) {
        x->fail = code;
        snprintf(x->fail_msg, sizeof(x->fail_msg), "%s", msg);
    }
    XML_StopParser(x->parser, XML_FALSE);
}

/* The path below the root, e.g. at depth 3 in ListBucketResult/Contents/Key: parent(1) is
 * "Contents". */
static const char *at(struct xp *x, int level)
{
    return level < x->depth && level >= 0 ? x->stack[level] : "";
}

static void on_start(void *ud, const XML_Char *name, const XML_Char **attrs)
{
    (void)attrs;
    struct xp *x = ud;
    if (x->depth >= S3_XML_MAX_DEPTH) {
        xp_fail(x, -EPROTO, "XML nested too deeply");
        return;
    }
    const char *n = intern(name);
    if (x->depth == 0) {
        x->saw_root = true;
        snprintf(x->root, sizeof(x->root), "%s", name);
    }
    x->stack[x->depth++] = n;
    buf_reset(&x->text);
    x->collecting = *n != '\0';
    if (x->page && x->depth == 2 && n == names[1] /* Contents */ && at(x, 0) == names[0]) {
        x->in_contents = true;
        free(x->cur.key);
        free(x->cur.etag);
        x->cur = (struct s3_list_entry){0};
    }
}

static void on_text(void *ud, const XML_Char *s, int len)
{
    struct xp *x = ud;
    if (!x->collecting || len <= 0)
        return;
    if (x->text.len + (size_t)len > S3_XML_MAX_TEXT) {
        if (x->page && x->in_contents && x->depth == 3 && x->stack[2] == names[2] /* Key */) {
            /* One overlong key: keep its start for the message, skip the entry later. */
            x->cur.invalid =
                "the key is longer than the listing's limit of " XML_STR(S3_XML_MAX_TEXT) " bytes";
            return;
        }
        xp_fail(x, -EPROTO, "XML text longer than the limit");
        return;
    }
    if (buf_append(&x->text, s, (size_t)len) < 0)
        xp_fail(x, -ENOMEM, "out of memory");
}

static const char *text(struct xp *x)
{
    return x->text.data ? x->text.data : "";
}

static bool parse_u64(const char *s, uint64_t *out)
{
    if (!*s)
        return false;
    uint64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
        uint64_t d = (uint64_t)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

static void set_str(struct xp *x, char **dst)
{
    free(*dst);
    *dst = strdup(text(x));
    if (!*dst)
        xp_fail(x, -ENOMEM, "out of memory");
}

static void end_list(struct xp *x, const char *n)
{
    struct s3_list_page *p = x->page;
    if (x->depth == 2 && at(x, 0) == names[0]) {
        if (n == names[6]) /* IsTruncated */
            p->truncated = !strcmp(text(x), "true");
        else if (n == names[7]) /* NextContinuationToken */
            set_str(x, &p->next_token);
        else if (n == names[8]) /* EncodingType */
            p->url_encoded = !strcmp(text(x), "url");
        else if (n == names[1] && x->in_contents) { /* </Contents> */
            x->in_contents = false;
            if (!x->cur.key) {
                xp_fail(x, -EPROTO, "a <Contents> entry without <Key>");
                return;
            }
            if (p->n >= S3_XML_MAX_ENTRIES) {
                xp_fail(x, -EPROTO, "more entries in one page than the limit");
                return;
            }
            struct s3_list_entry *e = realloc(p->entries, (p->n + 1) * sizeof(*e));
            if (!e) {
                xp_fail(x, -ENOMEM, "out of memory");
                return;
            }
            p->entries = e;
            p->entries[p->n++] = x->cur;
            x->cur = (struct s3_list_entry){0};
        }
    } else if (x->depth == 3 && x->in_contents && at(x, 1) == names[1]) {
        if (n == names[2])
            set_str(x, &x->cur.key);
        else if (n == names[3]) {
            if (!parse_u64(text(x), &x->cur.size))
                xp_fail(x, -EPROTO, "<Size> is not a number");
        } else if (n == names[4])
            set_str(x, &x->cur.etag);
        else if (n == names[5]) {
            int64_t ms = 0;
            if (s3_parse_iso8601_ms(text(x), &ms) == 0)
                x->cur.mtime_ms = ms;
        }
    }
}

static void copy_text(struct xp *x, char *dst, size_t cap)
{
    snprintf(dst, cap, "%s", text(x));
}

static void end_error(struct xp *x, const char *n)
{
    if (x->depth != 2 || at(x, 0) != names[9])
        return;
    struct s3_error *er = x->err;
    if (n == names[10])
        copy_text(x, er->code, sizeof(er->code));
    else if (n == names[11])
        copy_text(x, er->message, sizeof(er->message));
    else if (n == names[12])
        copy_text(x, er->region, sizeof(er->region));
    else if (n == names[13])
        copy_text(x, er->endpoint, sizeof(er->endpoint));
    else if (n == names[14])
        copy_text(x, er->request_id, sizeof(er->request_id));
}

static void on_end(void *ud, const XML_Char *name)
{
    (void)name;
    struct xp *x = ud;
    if (x->depth <= 0)
        return;
    const char *n = x->stack[x->depth - 1];
    if (*n) {
        if (x->page)
            end_list(x, n);
        else if (x->err)
            end_error(x, n);
    }
    x->depth--;
    x->collecting = false;
    buf_reset(&x->text);
}

static void on_doctype(void *ud, const XML_Char *name, const XML_Char *sysid, const XML_Char *pubid,
                       int has_internal)
{
    (void)name, (void)sysid, (void)pubid, (void)has_internal;
    xp_fail(ud, -EPROTO, "XML with a DOCTYPE is refused");
}

static void on_entity(void *ud, const XML_Char *name, int is_param, const XML_Char *value,
                      int value_len, const XML_Char *base, const XML_Char *sysid,
                      const XML_Char *pubid, const XML_Char *notation)
{
    (void)name, (void)is_param, (void)value, (void)value_len, (void)base, (void)sysid;
    (void)pubid, (void)notation;
    xp_fail(ud, -EPROTO, "XML entity declarations are refused");
}

static int run(struct xp *x, const char *xml, size_t len)
{
    if (len > (size_t)1 << 30)
        return -EFBIG;
    x->parser = XML_ParserCreate("UTF-8");
    if (!x->parser)
        return -ENOMEM;
    XML_SetUserData(x->parser, x);
    XML_SetElementHandler(x->parser, on_start, on_end);
    XML_SetCharacterDataHandler(x->parser, on_text);
    XML_SetStartDoctypeDeclHandler(x->parser, on_doctype);
    XML_SetEntityDeclHandler(x->parser, on_entity);
    enum XML_Status st = XML_Parse(x->parser, xml, (int)len, XML_TRUE);
    int r = 0;
    if (x->fail)
        r = x->fail;
    else if (st != XML_STATUS_OK) {
        snprintf(x->fail_msg, sizeof(x->fail_msg), "malformed XML at line %lu: %s",
                 (unsigned long)XML_GetCurrentLineNumber(x->parser),
                 XML_ErrorString(XML_GetErrorCode(x->parser)));
        r = -EPROTO;
    }
    XML_ParserFree(x->parser);
    buf_free(&x->text);
    return r;
}

void s3_list_page_free(struct s3_list_page *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n; i++) {
        free(p->entries[i].key);
        free(p->entries[i].etag);
    }
    free(p->entries);
    free(p->next_token);
    *p = (struct s3_list_page){0};
}

int s3_xml_parse_list(const char *xml, size_t len, struct s3_list_page *out, struct err *e)
{
    *out = (struct s3_list_page){0};
    struct xp x = {.page = out};
    int r = run(&x, xml, len);
    free(x.cur.key);
    free(x.cur.etag);
    if (r == 0 && strcmp(x.root, "ListBucketResult") != 0) {
        r = -EPROTO;
        snprintf(x.fail_msg, sizeof(x.fail_msg), "expected <ListBucketResult>, got <%s>",
                 x.saw_root ? x.root : "nothing");
    }
    if (r == 0 && out->url_encoded) {
        for (size_t i = 0; i < out->n && r == 0; i++) {
            struct s3_list_entry *en = &out->entries[i];
            if (en->invalid)
                continue;
            char *dec = NULL;
            r = httpc_uri_decode(en->key, &dec);
            if (r == 0) {
                free(en->key);
                en->key = dec;
            } else if (r == -EILSEQ) {
                en->invalid = "the key has a malformed %-escape or an escaped NUL (%00)";
                r = 0;
            } else
                snprintf(x.fail_msg, sizeof(x.fail_msg), "out of memory");
        }
        if (r == 0 && out->next_token) {
            /* The continuation token is opaque and never encoded. */
        }
    }
    if (r == 0 && out->truncated && (!out->next_token || !*out->next_token)) {
        r = -EPROTO;
        snprintf(x.fail_msg, sizeof(x.fail_msg),
                 "the listing is truncated but has no NextContinuationToken");
    }
    if (r < 0) {
        s3_list_page_free(out);
        return err_set(e, r == -EILSEQ ? -EPROTO : r, "bad ListObjectsV2 response: %s",
                       x.fail_msg[0] ? x.fail_msg : "unreadable");
    }
    return 0;
}

int s3_xml_parse_error(const char *xml, size_t len, struct s3_error *out)
{
    *out = (struct s3_error){0};
    struct xp x = {.err = out};
    int r = run(&x, xml, len);
    if (r < 0 || strcmp(x.root, "Error") != 0 || !out->code[0]) {
        *out = (struct s3_error){0};
        return -EPROTO;
    }
    return 0;
}

int s3_parse_iso8601_ms(const char *s, int64_t *out)
{
    struct tm tm = {0};
    int ms = 0;
    char frac[16] = "";
    int n = 0;
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
               &tm.tm_min, &tm.tm_sec, &n) != 6)
        return -EINVAL;
    const char *p = s + n;
    if (*p == '.') {
        p++;
        size_t k = 0;
        while (*p >= '0' && *p <= '9') {
            if (k < 3)
                frac[k++] = *p;
            p++;
        }
        while (k < 3)
            frac[k++] = '0';
        ms = atoi(frac);
    }
    if (strcmp(p, "Z") != 0)
        return -EINVAL;
    if (tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 ||
        tm.tm_min > 59 || tm.tm_sec > 60)
        return -EINVAL;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return -EINVAL;
    *out = (int64_t)t * 1000 + ms;
    return 0;
}
