/*
 * fuzz_s3_xml.c: libFuzzer target for the S3 XML parsers (ListObjectsV2 pages and error
 * bodies), which read whatever a server, a proxy or a captive portal sends. The first byte
 * picks the parser; the rest is the document. Invariants checked: no crash, no leak, and a
 * successful list parse yields keys that are NUL-terminated strings and a token when the page
 * says it is truncated.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "source/s3_xml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *xml = (const char *)data + 1;
    size_t len = size - 1;
    if (data[0] & 1) {
        struct s3_error er;
        if (s3_xml_parse_error(xml, len, &er) == 0 && !er.code[0])
            abort();
        return 0;
    }
    struct s3_list_page p;
    struct err e = {0};
    if (s3_xml_parse_list(xml, len, &p, &e) == 0) {
        if (p.truncated && (!p.next_token || !*p.next_token))
            abort();
        if (p.n > S3_XML_MAX_ENTRIES)
            abort();
        for (size_t i = 0; i < p.n; i++)
            if (!p.entries[i].key || strlen(p.entries[i].key) > S3_XML_MAX_TEXT)
                abort();
        s3_list_page_free(&p);
    } else if (!e.msg[0]) {
        abort(); /* every failure says why */
    }
    return 0;
}
