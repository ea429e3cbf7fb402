/*
 * s3_xml.h: parsers for the two XML documents an S3 server sends us: a ListObjectsV2 page
 * (ListBucketResult) and an error body (<Error><Code>...). expat underneath.
 *
 * The input is hostile (any server, any proxy, a captive portal): no DTD or entity is accepted
 * (billion laughs), nesting deeper than S3_XML_MAX_DEPTH, text longer than S3_XML_MAX_TEXT or
 * more than S3_XML_MAX_ENTRIES entries in a page fail with -EPROTO, except a <Key> longer than
 * S3_XML_MAX_TEXT, which marks its entry invalid (one bad key does not fail the page). Keys
 * are returned as the server wrote them, URL-decoded when the page says
 * <EncodingType>url</EncodingType>; a key whose decoding would hold a NUL (which would cut
 * the string: "2.tar%00.evil" read as "2.tar") or a malformed escape is marked invalid, never
 * decoded. Keys are NOT validated here otherwise (the caller runs source_key_check()).
 *
 * Ownership: a parsed page owns its strings; free it with s3_list_page_free().
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

/* Deepest element nesting in a legitimate S3 document is 3 (ListBucketResult/Contents/Owner/ID
 * is 4); 16 leaves room and stops hostile recursion. */
#define S3_XML_MAX_DEPTH 16
/* Longest legitimate text: a URL-encoded 1024-byte key (3 bytes per byte) or a continuation
 * token; error messages are shorter. */
#define S3_XML_MAX_TEXT 4096
/* A page holds at most 1000 keys; twice that is a broken or hostile server. */
#define S3_XML_MAX_ENTRIES 2000

struct s3_list_entry {
    char *key;           /* decoded; as sent (possibly cut) when `invalid` is set */
    const char *invalid; /* NULL, or why the key cannot be used (static text): longer than
                            S3_XML_MAX_TEXT, a malformed %-escape, an escaped NUL. The entry is
                            kept so the caller can count and report it. */
    uint64_t size;
    char *etag;       /* NULL when absent */
    int64_t mtime_ms; /* 0 when absent or unparsable */
};

struct s3_list_page {
    struct s3_list_entry *entries;
    size_t n;
    bool truncated;
    char *next_token; /* NextContinuationToken, NULL when absent */
    bool url_encoded; /* keys were URL-encoded by the server (and have been decoded) */
};

/* Parse a ListBucketResult. -EPROTO with a message when it is not one (e.g. an <Error>). */
int s3_xml_parse_list(const char *xml, size_t len, struct s3_list_page *out, struct err *e);
void s3_list_page_free(struct s3_list_page *p);

struct s3_error {
    char code[128]; /* e.g. "AccessDenied", "NoSuchKey", "SlowDown"; "" if none */
    char message[512];
    char region[64];    /* <Region> of a wrong-region error, if given */
    char endpoint[256]; /* <Endpoint> of PermanentRedirect, if given */
    char request_id[128];
};

/* Parse an <Error> body. Returns 0 when a Code was found, -EPROTO when the body is not an S3
 * error document (out is then zeroed). */
int s3_xml_parse_error(const char *xml, size_t len, struct s3_error *out);

/* "2009-10-12T17:50:30.000Z" (ISO 8601 UTC, fraction optional) to Unix ms; -EINVAL if not. */
int s3_parse_iso8601_ms(const char *s, int64_t *out);
