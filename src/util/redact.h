/*
 * redact.h: keeping credentials given in URLs (http://user:secret@host/...) out of everything
 * thinimg writes down: logs, run records, the database, command output.
 *
 * A URL's userinfo (RFC 3986: "user:password@" between "://" and the host) is a secret: it
 * lives only in memory, for the request that needs it (pipeline/fetch.h keeps it per origin).
 * Everything stored or printed uses the URL without it.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* A copy of url without its userinfo (a plain copy when it has none); NULL on ENOMEM. */
char *url_strip_userinfo(const char *url);

/* Does url carry userinfo? */
bool url_has_userinfo(const char *url);

/* Remove the userinfo of every URL inside the text s (a log line, an error message), in
 * place; returns the new length. */
size_t text_strip_userinfo(char *s);
