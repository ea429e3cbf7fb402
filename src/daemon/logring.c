/*
 * logring.c: a ring of the daemon's recent log lines. See logring.h.
 */
#include "daemon/logring.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct entry {
    uint64_t seq;
    enum log_level level;
    char *line;
};

struct logring {
    pthread_mutex_t lock;
    struct entry *v;
    size_t cap;
    uint64_t next_seq; /* seq of the next line (first is 1) */
};

int logring_new(size_t capacity, struct logring **out)
{
    if (!capacity)
        return -EINVAL;
    struct logring *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->v = calloc(capacity, sizeof(*r->v));
    if (!r->v) {
        free(r);
        return -ENOMEM;
    }
    r->cap = capacity;
    r->next_seq = 1;
    pthread_mutex_init(&r->lock, NULL);
    *out = r;
    return 0;
}

void logring_free(struct logring *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->cap; i++)
        free(r->v[i].line);
    free(r->v);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

void logring_hook(enum log_level level, const char *line, void *ud)
{
    struct logring *r = ud;
    size_t n = strnlen(line, LOGRING_LINE_MAX);
    char *copy = malloc(n + 1);
    if (!copy)
        return;
    memcpy(copy, line, n);
    copy[n] = '\0';
    pthread_mutex_lock(&r->lock);
    struct entry *e = &r->v[(r->next_seq - 1) % r->cap];
    free(e->line);
    e->line = copy;
    e->level = level;
    e->seq = r->next_seq++;
    pthread_mutex_unlock(&r->lock);
}

json_t *logring_json(struct logring *r, uint64_t since, size_t limit)
{
    static const char *const names[] = {"debug", "info", "warn", "error", "off"};
    json_t *arr = json_array();
    pthread_mutex_lock(&r->lock);
    uint64_t last = r->next_seq - 1;
    uint64_t first = last >= r->cap ? last - r->cap + 1 : 1;
    if (since + 1 > first)
        first = since + 1;
    if (limit && last >= first && last - first + 1 > limit)
        first = last - limit + 1; /* the newest `limit` of them */
    for (uint64_t s = first; s <= last; s++) {
        const struct entry *e = &r->v[(s - 1) % r->cap];
        json_array_append_new(arr, json_pack("{s:I, s:s, s:s}", "seq", (json_int_t)e->seq, "level",
                                             names[e->level], "line", e->line));
    }
    pthread_mutex_unlock(&r->lock);
    return json_pack("{s:o, s:I}", "lines", arr, "next", (json_int_t)(last > since ? last : since));
}
