/*
 * path.c: entry names: normalisation and the name rules (traversal, absolute, control bytes,
 * length, depth), the printable form used in error messages, and the policy defaults.
 *
 * Names are checked lexically *and* resolved by the kernel inside the root (apply.c): the
 * lexical rules reject what no legitimate layer contains, so that an error names the rule,
 * and the kernel's RESOLVE_IN_ROOT makes escapes impossible whatever the lexical check misses.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "archive/internal.h"

struct archive_policy archive_policy_default(void)
{
    return (struct archive_policy){
        .max_blob_bytes = ARCHIVE_DEFAULT_MAX_BLOB_BYTES,
        .max_entries = ARCHIVE_DEFAULT_MAX_ENTRIES,
        .max_file_bytes = ARCHIVE_DEFAULT_MAX_FILE_BYTES,
        .max_total_bytes = ARCHIVE_DEFAULT_MAX_TOTAL_BYTES,
        .max_path_bytes = ARCHIVE_DEFAULT_MAX_PATH_BYTES,
        .max_depth = ARCHIVE_DEFAULT_MAX_DEPTH,
        .max_header_bytes = ARCHIVE_DEFAULT_MAX_HEADER_BYTES,
        .max_time_ms = ARCHIVE_DEFAULT_MAX_TIME_MS,
        .max_ratio = ARCHIVE_DEFAULT_MAX_RATIO,
        .allow_devices = true,
        .allow_control_chars = false,
        .preserve_owner = true,
        .xattr_allow = ARCHIVE_DEFAULT_XATTR_ALLOW,
    };
}

bool archive_policy_xattr_allowed(const struct archive_policy *p, const char *name)
{
    const char *list = p && p->xattr_allow ? p->xattr_allow : ARCHIVE_DEFAULT_XATTR_ALLOW;
    size_t nlen = strlen(name);
    while (*list) {
        const char *end = strchr(list, ',');
        size_t len = end ? (size_t)(end - list) : strlen(list);
        if (len > 0) {
            bool prefix = list[len - 1] == '.';
            if (prefix ? (nlen > len && strncmp(name, list, len) == 0)
                       : (nlen == len && strncmp(name, list, len) == 0))
                return true;
        }
        if (!end)
            break;
        list = end + 1;
    }
    return false;
}

int archive_path_normalize(const char *in, const struct archive_policy *p, char *out,
                           size_t out_size, bool *trailing_slash, uint32_t *depth,
                           const char **rule, const char **why)
{
    size_t in_len = strlen(in);
    size_t max_path = p->max_path_bytes; /* never 0: archive_policy_check() */

    *trailing_slash = false;
    *depth = 0;
    if (in_len == 0) {
        *rule = "name";
        *why = "empty name";
        return -EPERM;
    }
    if (in_len > max_path || in_len >= out_size) {
        *rule = "path-length";
        *why = "name is longer than the path length limit";
        return -ENAMETOOLONG;
    }
    if (in[0] == '/') {
        *rule = "absolute";
        *why = "absolute name (names must be relative to the image root)";
        return -EPERM;
    }
    if (!p->allow_control_chars) {
        for (size_t i = 0; i < in_len; i++) {
            unsigned char c = (unsigned char)in[i];
            if (c < 0x20 || c == 0x7f) {
                *rule = "control-char";
                *why = "name contains a control character";
                return -EPERM;
            }
        }
    }
    *trailing_slash = in[in_len - 1] == '/';

    size_t o = 0;
    const char *s = in;
    while (*s) {
        const char *slash = strchr(s, '/');
        size_t len = slash ? (size_t)(slash - s) : strlen(s);
        if (len == 0 || (len == 1 && s[0] == '.')) {
            /* empty or "." component: drop */
        } else if (len == 2 && s[0] == '.' && s[1] == '.') {
            *rule = "traversal";
            *why = "name has a '..' component";
            return -EPERM;
        } else {
            if (len > NAME_MAX) {
                *rule = "path-length";
                *why = "a name component is longer than NAME_MAX (255)";
                return -ENAMETOOLONG;
            }
            if (++*depth > p->max_depth) {
                *rule = "depth";
                *why = "name has more components than the depth limit";
                return -ENAMETOOLONG;
            }
            if (o > 0)
                out[o++] = '/';
            memcpy(out + o, s, len);
            o += len;
        }
        if (!slash)
            break;
        s = slash + 1;
    }
    out[o] = '\0';
    return 0;
}

void archive_name_escape(const char *s, char *out, size_t out_size)
{
    static const size_t max_shown = 160; /* keeps one error line readable */
    size_t o = 0, shown = 0;
    if (out_size == 0)
        return;
    for (; *s && o + 5 < out_size; s++) {
        if (shown++ >= max_shown) {
            if (o + 4 < out_size)
                o += (size_t)snprintf(out + o, out_size - o, "...");
            break;
        }
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c >= 0x7f || c == '\\' || c == '\'')
            o += (size_t)snprintf(out + o, out_size - o, "\\x%02x", c);
        else
            out[o++] = (char)c;
    }
    out[o] = '\0';
}
