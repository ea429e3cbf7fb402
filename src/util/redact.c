/*
 * redact.c: URL userinfo out of text. See redact.h.
 */
#include "util/redact.h"

#include <stdlib.h>
#include <string.h>

/* Where the userinfo of the URL whose "://" is at sep lies: [*start, *start + *len), the '@'
 * included. The authority ends at the first '/', '?', '#', quote, backslash or blank. */
static bool userinfo_span(const char *sep, size_t *start, size_t *len)
{
    const char *a = sep + 3;
    size_t n = strcspn(a, "/?#\"' \t\r\n\\");
    const char *at = NULL;
    for (size_t i = 0; i < n; i++)
        if (a[i] == '@')
            at = a + i;
    if (!at)
        return false;
    *start = (size_t)(a - sep);
    *len = (size_t)(at - a) + 1;
    return true;
}

bool url_has_userinfo(const char *url)
{
    const char *sep = strstr(url, "://");
    size_t start, len;
    return sep && userinfo_span(sep, &start, &len);
}

char *url_strip_userinfo(const char *url)
{
    char *s = strdup(url);
    if (s)
        text_strip_userinfo(s);
    return s;
}

size_t text_strip_userinfo(char *s)
{
    size_t total = strlen(s);
    char *p = s;
    while ((p = strstr(p, "://"))) {
        size_t start, len;
        if (userinfo_span(p, &start, &len)) {
            char *from = p + start;
            memmove(from, from + len, total - (size_t)(from + len - s) + 1);
            total -= len;
        }
        p += 3;
    }
    return total;
}
