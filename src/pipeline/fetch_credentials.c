/*
 * fetch_credentials.c: credentials given in location URLs, kept in this process's memory only
 * (fetch_credentials.h).
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/fetch_credentials.h"
#include "util/cleanup.h"
#include "util/redact.h"

/* ---- credentials in URLs: in memory only -------------------------------------------------- */

/* The userinfo of each origin (scheme://host[:port]) a command was given, for this process
 * only: the locations that runs, rows and logs carry never have it (util/redact.h). */
struct credential {
    char *origin;   /* "http://host:8080" */
    char *userinfo; /* "alice:s3cr3t@" */
    struct credential *next;
};
static struct credential *g_credentials;
static pthread_mutex_t g_credentials_lock = PTHREAD_MUTEX_INITIALIZER;

/* Split url into origin (without userinfo) and userinfo; false when it has none. */
static bool url_origin(const char *url, char **origin, char **userinfo)
{
    *origin = *userinfo = NULL;
    if (!url_has_userinfo(url))
        return false;
    const char *a = strstr(url, "://") + 3;
    const char *at = a + strcspn(a, "/?#");
    while (at > a && at[-1] != '@')
        at--;
    _cleanup_free_ char *bare = url_strip_userinfo(url);
    if (!bare)
        return false;
    const char *host = strstr(bare, "://") + 3;
    size_t n = (size_t)(host - bare) + strcspn(host, "/?#");
    *origin = strndup(bare, n);
    *userinfo = strndup(a, (size_t)(at - a));
    if (!*origin || !*userinfo) {
        free(*origin);
        free(*userinfo);
        return false;
    }
    return true;
}

char *fetch_credentials_keep(const char *location)
{
    char *origin, *userinfo;
    if (!url_origin(location, &origin, &userinfo))
        return strdup(location);
    struct credential *cr = calloc(1, sizeof(*cr));
    if (!cr) {
        free(origin);
        free(userinfo);
        return NULL;
    }
    cr->origin = origin;
    cr->userinfo = userinfo;
    pthread_mutex_lock(&g_credentials_lock);
    cr->next = g_credentials;
    g_credentials = cr;
    pthread_mutex_unlock(&g_credentials_lock);
    return url_strip_userinfo(location);
}

void fetch_credentials_forget(void)
{
    pthread_mutex_lock(&g_credentials_lock);
    while (g_credentials) {
        struct credential *next = g_credentials->next;
        explicit_bzero(g_credentials->userinfo, strlen(g_credentials->userinfo));
        free(g_credentials->userinfo);
        free(g_credentials->origin);
        free(g_credentials);
        g_credentials = next;
    }
    pthread_mutex_unlock(&g_credentials_lock);
}

char *fetch_credentials_for_request(const char *location)
{
    char *out = NULL;
    pthread_mutex_lock(&g_credentials_lock);
    for (struct credential *cr = g_credentials; cr && !out; cr = cr->next) {
        size_t n = strlen(cr->origin);
        if (strncmp(location, cr->origin, n) != 0 || (location[n] && !strchr("/?#", location[n])))
            continue; /* another origin, or a longer host name ("host:80" vs "host:8080") */
        const char *host = strstr(location, "://") + 3;
        if (asprintf(&out, "%.*s%s%s", (int)(host - location), location, cr->userinfo, host) < 0)
            out = NULL;
    }
    pthread_mutex_unlock(&g_credentials_lock);
    return out ? out : strdup(location);
}
