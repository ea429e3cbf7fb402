/*
 * pathset.c: an open-addressing hash set of path strings with flags, used per layer by apply
 * (which paths this layer created, which directories hold deferred metadata). Linear probing,
 * FNV-1a hashing, grown at 50% load so probes stay short. The names come from a hostile
 * archive, so the hash starts from a random per-set seed: colliding names cannot be computed
 * ahead of time to make every probe walk the table (the wall-time limit is the backstop).
 * See internal.h.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "archive/internal.h"

static uint64_t path_hash(const struct pathset *s, const char *key, size_t len)
{
    uint64_t h = 1469598103934665603ULL ^ s->seed; /* FNV-1a 64-bit offset basis */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 1099511628211ULL; /* FNV-1a 64-bit prime */
    }
    return h;
}

static struct pathset_node *find_slot(struct pathset_node *slots, size_t cap, const char *key,
                                      size_t len, uint64_t h)
{
    size_t mask = cap - 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        struct pathset_node *n = &slots[i];
        if (!n->key)
            return n;
        if (n->hash == h && strncmp(n->key, key, len) == 0 && n->key[len] == '\0')
            return n;
    }
}

struct pathset_node *pathset_get(const struct pathset *s, const char *key, size_t len)
{
    if (s->cap == 0)
        return NULL;
    struct pathset_node *n = find_slot(s->slots, s->cap, key, len, path_hash(s, key, len));
    return n->key ? n : NULL;
}

static int grow(struct pathset *s)
{
    if (s->cap == 0 && getrandom(&s->seed, sizeof(s->seed), GRND_NONBLOCK) != sizeof(s->seed))
        s->seed = (uint64_t)(uintptr_t)s ^ (uint64_t)rand(); /* no entropy yet: still varies */
    size_t cap = s->cap ? s->cap * 2 : 1024; /* first table: enough for a small layer */
    struct pathset_node *slots = calloc(cap, sizeof(*slots));
    if (!slots)
        return -1;
    for (size_t i = 0; i < s->cap; i++) {
        struct pathset_node *o = &s->slots[i];
        if (!o->key)
            continue;
        *find_slot(slots, cap, o->key, strlen(o->key), o->hash) = *o;
    }
    free(s->slots);
    s->slots = slots;
    s->cap = cap;
    return 0;
}

struct pathset_node *pathset_put(struct pathset *s, const char *key, size_t len)
{
    if ((s->n + 1) * 2 > s->cap && grow(s) < 0)
        return NULL;
    uint64_t h = path_hash(s, key, len);
    struct pathset_node *n = find_slot(s->slots, s->cap, key, len, h);
    if (n->key)
        return n;
    n->key = strndup(key, len);
    if (!n->key)
        return NULL;
    n->hash = h;
    n->flags = 0;
    n->dir_idx = -1;
    s->n++;
    return n;
}

void pathset_free(struct pathset *s)
{
    for (size_t i = 0; i < s->cap; i++)
        free(s->slots[i].key);
    free(s->slots);
    s->slots = NULL;
    s->cap = s->n = 0;
}
