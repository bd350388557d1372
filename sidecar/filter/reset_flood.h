/* SPDX-License-Identifier: Apache-2.0 */
/* Rapid reset across connections (CVE-2023-44487). nghttp2 bounds the
 * streams one connection resets; a client that reconnects after each GOAWAY,
 * or many clients at once, are bounded here. Every stream its client
 * abandoned before the answer was complete costs a token from two buckets:
 * its client address's and its listener's. While either is empty, new
 * requests from that address (or on that listener) are refused before
 * routing, so nothing more reaches an upstream; the buckets refill at a
 * steady rate. One per worker: no locks. The clock is the caller's
 * (nanoseconds, monotonic). */
#ifndef MESHD_FILTER_RESET_FLOOD_H
#define MESHD_FILTER_RESET_FLOOD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Per client address: 2,000 at once, then 100 a second. */
#define MD_RESET_FLOOD_ADDR_BURST 2000u
#define MD_RESET_FLOOD_ADDR_PER_S 100u
/* Per listener and worker: 50,000 at once, then 10,000 a second. */
#define MD_RESET_FLOOD_LISTENER_BURST 50000u
#define MD_RESET_FLOOD_LISTENER_PER_S 10000u

struct md_reset_flood {
    size_t n_listeners;
    uint64_t *listener_tat; /* [n_listeners] */
    struct md_reset_flood_slot *slots; /* client addresses; made at the first reset */
    uint64_t seed;
    uint64_t hot_until; /* 0, or while some bucket may be empty */
    uint64_t told;      /* when a dry bucket was last worth a log line */
};

/* What a note found. */
enum md_reset_flood_verdict {
    MD_RESET_FLOOD_OK,
    MD_RESET_FLOOD_DRY,      /* a bucket is empty */
    MD_RESET_FLOOD_DRY_NEWS, /* ... and none was for MD_RESET_FLOOD_TELL_S: worth a log line */
};
#define MD_RESET_FLOOD_TELL_S 10u

/* Returns 0 or MD_ENOMEM. |seed| keys the address table. */
int md_reset_flood_init(struct md_reset_flood *f, size_t n_listeners, uint64_t seed);
void md_reset_flood_fini(struct md_reset_flood *f);

/* A stream of listener |listener| from |ip| (text) was abandoned by its
 * client at |now|. */
enum md_reset_flood_verdict md_reset_flood_note(struct md_reset_flood *f, size_t listener, const char *ip, uint64_t now);

/* Whether a new request from |ip| on |listener| may go on at |now|: the
 * common case (no bucket ran dry lately) is one comparison. */
bool md_reset_flood_admit_slow(struct md_reset_flood *f, size_t listener, const char *ip,
                               uint64_t now);
static inline bool md_reset_flood_calm(const struct md_reset_flood *f)
{
    return f->hot_until == 0;
}

#endif
