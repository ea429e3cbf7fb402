/*
 * pathset.c: an open-addressing hash set of paths with flags, used per layer by apply (which
 * paths this layer created, which directories hold deferred metadata). Linear probing, grown at
 * 3/4 load.
 *
 * A path is kept as 94 bits of its SipHash-2-4-128 under a random per-set key, not as a
 * string: 16 bytes a node whatever the name's length, so a layer of 300k entries costs 8 MiB
 * of table rather than a larger table plus every name. The names come from a hostile
 * archive; the key is secret (getrandom at the first insert), so names cannot be chosen to
 * collide (a collision would make a whiteout spare a lower entry) nor to pile into one probe
 * run. By chance, two of a million names share a hash with a probability of about 2^-55.
 * See internal.h.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "archive/internal.h"

#define PATHSET_FIRST_CAP 1024 /* first table: enough for a small layer */

/* ---- SipHash-2-4 with a 128-bit output (Aumasson and Bernstein, the reference design) ----- */

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = ROTL(v1, 13);                                                                         \
        v1 ^= v0;                                                                                  \
        v0 = ROTL(v0, 32);                                                                         \
        v2 += v3;                                                                                  \
        v3 = ROTL(v3, 16);                                                                         \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = ROTL(v3, 21);                                                                         \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = ROTL(v1, 17);                                                                         \
        v1 ^= v2;                                                                                  \
        v2 = ROTL(v2, 32);                                                                         \
    } while (0)

static void siphash128(const uint64_t key[2], const char *in, size_t len, uint64_t out[2])
{
    uint64_t v0 = 0x736f6d6570736575ULL ^ key[0], v1 = 0x646f72616e646f6dULL ^ key[1];
    uint64_t v2 = 0x6c7967656e657261ULL ^ key[0], v3 = 0x7465646279746573ULL ^ key[1];
    v1 ^= 0xee;
    const unsigned char *p = (const unsigned char *)in;
    size_t whole = len & ~(size_t)7;
    for (size_t i = 0; i < whole; i += 8) {
        uint64_t m;
        memcpy(&m, p + i, 8); /* little-endian hosts (x86-64, arm64): the reference order */
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    uint64_t b = (uint64_t)len << 56;
    for (size_t i = 0; i < (len & 7); i++)
        b |= (uint64_t)p[whole + i] << (8 * i);
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xee;
    for (int half = 0; half < 2; half++) { /* four finalization rounds per output word */
        if (half)
            v1 ^= 0xdd;
        for (int i = 0; i < 4; i++)
            SIPROUND;
        out[half] = v0 ^ v1 ^ v2 ^ v3;
    }
}

/* The node's hash: 64 bits for the slot and 30 to check, never both zero (an empty slot). */
struct node_hash {
    uint64_t hash;
    uint32_t check;
};

static struct node_hash path_hash(const struct pathset *s, const char *key, size_t len)
{
    uint64_t h[2];
    siphash128(s->key, key, len, h);
    return (struct node_hash){.hash = h[0], .check = (uint32_t)(h[1] >> 34) | 1};
}

static bool slot_empty(const struct pathset_node *n)
{
    return n->hash == 0 && n->check == 0;
}

static struct pathset_node *find_slot(struct pathset_node *slots, size_t cap, struct node_hash h)
{
    size_t mask = cap - 1;
    for (size_t i = (size_t)h.hash & mask;; i = (i + 1) & mask) {
        struct pathset_node *n = &slots[i];
        if (slot_empty(n) || (n->hash == h.hash && n->check == h.check))
            return n;
    }
}

struct pathset_node *pathset_get(const struct pathset *s, const char *key, size_t len)
{
    if (s->cap == 0)
        return NULL;
    struct pathset_node *n = find_slot(s->slots, s->cap, path_hash(s, key, len));
    return slot_empty(n) ? NULL : n;
}

static int grow(struct pathset *s)
{
    if (s->cap == 0 && getrandom(s->key, sizeof(s->key), GRND_NONBLOCK) != sizeof(s->key)) {
        /* No entropy yet (early boot): still varies per set and process. */
        s->key[0] = (uint64_t)(uintptr_t)s ^ (uint64_t)rand();
        s->key[1] = (uint64_t)(uintptr_t)&s ^ ((uint64_t)rand() << 31);
    }
    size_t cap = s->cap ? s->cap * 2 : PATHSET_FIRST_CAP;
    struct pathset_node *slots = calloc(cap, sizeof(*slots));
    if (!slots)
        return -1;
    for (size_t i = 0; i < s->cap; i++)
        if (!slot_empty(&s->slots[i]))
            *find_slot(slots, cap,
                       (struct node_hash){.hash = s->slots[i].hash, .check = s->slots[i].check}) =
                s->slots[i];
    free(s->slots);
    s->slots = slots;
    s->cap = cap;
    return 0;
}

struct pathset_node *pathset_put(struct pathset *s, const char *key, size_t len)
{
    if ((s->n + 1) * 4 > s->cap * 3 && grow(s) < 0)
        return NULL;
    struct node_hash h = path_hash(s, key, len);
    struct pathset_node *n = find_slot(s->slots, s->cap, h);
    if (!slot_empty(n))
        return n;
    n->hash = h.hash;
    n->check = h.check;
    n->flags = 0;
    n->dir_idx = -1;
    s->n++;
    return n;
}

void pathset_free(struct pathset *s)
{
    free(s->slots);
    s->slots = NULL;
    s->cap = s->n = 0;
}
