/*
 * fsm_id.c: run versions as ULIDs (48-bit Unix-ms timestamp + 80 random bits, 26 Crockford
 * base32 characters), monotonic within the process.
 *
 * Monotonic: within one millisecond (or when the wall clock steps back) the next id is the
 * previous one plus one in its random part, so ids made by this process always sort in
 * creation order. This matters because run lists are ordered by version, and queues on
 * resume re-admit runs in version order. Across processes, order follows the wall clock.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>

#include "fsm/fsm.h"
#include "util/timeutil.h"

static const char crockford[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

static pthread_mutex_t id_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t last_ms;
static uint8_t last_rand[10];

/* Big-endian 128-bit value -> 26 characters: the first carries the top 3 bits (130 bits of
 * base32 for 128 bits of id), each following one 5 bits. */
static void encode(const uint8_t b[16], char out[FSM_ID_LEN + 1])
{
    int bit = -2; /* position of the first bit of the current character, from the top */
    for (int i = 0; i < FSM_ID_LEN; i++, bit += 5) {
        unsigned v = 0;
        for (int k = 0; k < 5; k++) {
            int pos = bit + k;
            unsigned one = 0;
            if (pos >= 0)
                one = (b[pos / 8] >> (7 - pos % 8)) & 1u;
            v = (v << 1) | one;
        }
        out[i] = crockford[v];
    }
    out[FSM_ID_LEN] = '\0';
}

int fsm_id_new(struct fsm_id *out)
{
    uint8_t b[16];
    pthread_mutex_lock(&id_lock);
    uint64_t ms = (uint64_t)now_ms();
    if (ms <= last_ms) {
        /* Same millisecond or the clock stepped back: increment the random part. */
        ms = last_ms;
        int i = 9;
        while (i >= 0 && ++last_rand[i] == 0)
            i--;
        if (i < 0) /* 2^80 ids in one ms: move on to the next ms */
            ms = ++last_ms;
    } else {
        if (getrandom(last_rand, sizeof(last_rand), 0) != (ssize_t)sizeof(last_rand)) {
            pthread_mutex_unlock(&id_lock);
            return -EIO;
        }
        /* Keep headroom so increments within this ms cannot overflow the random part. */
        last_rand[0] &= 0x7f;
    }
    last_ms = ms;
    for (int i = 0; i < 6; i++)
        b[i] = (uint8_t)(ms >> (40 - 8 * i));
    memcpy(b + 6, last_rand, 10);
    pthread_mutex_unlock(&id_lock);
    encode(b, out->s);
    return 0;
}

bool fsm_id_is_zero(const struct fsm_id *id)
{
    return !id || id->s[0] == '\0';
}

static int decode_char(char c)
{
    if (c >= 'a' && c <= 'z')
        c = (char)(c - 'a' + 'A');
    const char *p = c ? strchr(crockford, c) : NULL;
    return p ? (int)(p - crockford) : -1;
}

int fsm_id_parse(const char *s, struct fsm_id *out)
{
    if (!s || strlen(s) != FSM_ID_LEN)
        return -EINVAL;
    struct fsm_id id;
    for (int i = 0; i < FSM_ID_LEN; i++) {
        int v = decode_char(s[i]);
        if (v < 0)
            return -EINVAL;
        if (i == 0 && v > 7) /* more than 128 bits */
            return -EINVAL;
        id.s[i] = crockford[v];
    }
    id.s[FSM_ID_LEN] = '\0';
    *out = id;
    return 0;
}
