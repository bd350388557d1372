/* SPDX-License-Identifier: Apache-2.0 */
#include "filter/reset_flood.h"

#include "core/err.h"
#include "core/gcra.h"
#include "core/hash.h"

#include <stdlib.h>
#include <string.h>

/* Addresses in a table of pairs of slots: an address lives in one of the
 * two slots its hash names; a new one takes the slot whose bucket is fuller
 * (so an idle neighbour goes first). Bounded memory whatever the clients. */
#define N_SLOTS 2048u

struct md_reset_flood_slot {
    uint64_t hash; /* 0: free */
    uint64_t tat;
};

#define NS 1000000000ull
#define ADDR_INTERVAL (NS / MD_RESET_FLOOD_ADDR_PER_S)
#define ADDR_TOLERANCE (MD_RESET_FLOOD_ADDR_BURST * ADDR_INTERVAL)
#define LISTENER_INTERVAL (NS / MD_RESET_FLOOD_LISTENER_PER_S)
#define LISTENER_TOLERANCE (MD_RESET_FLOOD_LISTENER_BURST * LISTENER_INTERVAL)

int md_reset_flood_init(struct md_reset_flood *f, size_t n_listeners, uint64_t seed)
{
    memset(f, 0, sizeof(*f));
    f->n_listeners = n_listeners;
    f->seed = seed;
    if (n_listeners && !(f->listener_tat = calloc(n_listeners, sizeof(*f->listener_tat))))
        return MD_ENOMEM;
    return 0;
}

void md_reset_flood_fini(struct md_reset_flood *f)
{
    free(f->listener_tat);
    free(f->slots);
    memset(f, 0, sizeof(*f));
}

static uint64_t hash_ip(const struct md_reset_flood *f, const char *ip)
{
    uint64_t h = md_hash64_seeded(f->seed, ip, strlen(ip));
    return h ? h : 1;
}

/* The slot of |h|, or NULL when it has none and |make| is false (or the
 * table could not be made). */
static struct md_reset_flood_slot *slot_of(struct md_reset_flood *f, uint64_t h, bool make)
{
    if (!f->slots && (!make || !(f->slots = calloc(N_SLOTS, sizeof(*f->slots)))))
        return NULL;
    struct md_reset_flood_slot *pair = &f->slots[(h % (N_SLOTS / 2)) * 2];
    for (int i = 0; i < 2; i++)
        if (pair[i].hash == h)
            return &pair[i];
    if (!make)
        return NULL;
    struct md_reset_flood_slot *s = pair[0].tat <= pair[1].tat ? &pair[0] : &pair[1];
    *s = (struct md_reset_flood_slot){.hash = h};
    return s;
}

/* Takes a token from |*tat|; an empty bucket keeps |f| hot until it has
 * one again. */
static bool take(struct md_reset_flood *f, uint64_t *tat, uint64_t now, uint64_t interval,
                 uint64_t tolerance)
{
    uint64_t next, wait;
    if (md_gcra(*tat, now, interval, tolerance, &next, &wait)) {
        *tat = next;
        return true;
    }
    if (now + wait > f->hot_until)
        f->hot_until = now + wait;
    return false;
}

enum md_reset_flood_verdict md_reset_flood_note(struct md_reset_flood *f, size_t listener,
                                                const char *ip, uint64_t now)
{
    bool ok = true;
    if (listener < f->n_listeners)
        ok = take(f, &f->listener_tat[listener], now, LISTENER_INTERVAL, LISTENER_TOLERANCE);
    struct md_reset_flood_slot *s = ip ? slot_of(f, hash_ip(f, ip), true) : NULL;
    if (s)
        ok = take(f, &s->tat, now, ADDR_INTERVAL, ADDR_TOLERANCE) && ok;
    if (ok)
        return MD_RESET_FLOOD_OK;
    if (f->told && now - f->told < MD_RESET_FLOOD_TELL_S * NS)
        return MD_RESET_FLOOD_DRY;
    f->told = now;
    return MD_RESET_FLOOD_DRY_NEWS;
}

/* A bucket with a token to give at |now| (none is taken). */
static bool has_token(uint64_t tat, uint64_t now, uint64_t interval, uint64_t tolerance)
{
    uint64_t next, wait;
    return md_gcra(tat, now, interval, tolerance, &next, &wait);
}

bool md_reset_flood_admit_slow(struct md_reset_flood *f, size_t listener, const char *ip,
                               uint64_t now)
{
    if (now >= f->hot_until) {
        f->hot_until = 0; /* every bucket has refilled a token since it ran dry */
        return true;
    }
    if (listener < f->n_listeners &&
        !has_token(f->listener_tat[listener], now, LISTENER_INTERVAL, LISTENER_TOLERANCE))
        return false;
    struct md_reset_flood_slot *s = ip ? slot_of(f, hash_ip(f, ip), false) : NULL;
    return !s || has_token(s->tat, now, ADDR_INTERVAL, ADDR_TOLERANCE);
}
