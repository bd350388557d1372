/* SPDX-License-Identifier: Apache-2.0 */
/* Local rate limits whose budget is shared by every worker: one state per
 * md_snapshot.rate_limits entry, made by the control thread, read and updated
 * by all workers. Each bucket is GCRA (a "theoretical arrival time" in
 * nanoseconds): at most |burst| at once, then one every 1/per_second s.
 * The unkeyed bucket is one atomic word updated by CAS (no lock); keyed
 * buckets live in a bounded map (max_keys, least recently used evicted)
 * under one mutex per limit, touched once per request. */
#ifndef MESHD_FILTER_RATELIMIT_H
#define MESHD_FILTER_RATELIMIT_H

#include "http/hdrs.h"
#include "snapshot.h"

#include <stddef.h>
#include <stdint.h>

/* One limit's buckets. Opaque; safe to use from any thread. */
struct md_ratelimit;

/* Creates the buckets of |cfg| (borrowed for the state's life: it lives in
 * the snapshot). Every bucket starts full. Returns NULL on allocation
 * failure. */
struct md_ratelimit *md_ratelimit_new(const struct md_snap_rate_limit *cfg);
void md_ratelimit_free(struct md_ratelimit *rl);

/* Takes one token at |now_ns| (md_ratelimit_now). |key| selects a keyed
 * bucket; NULL selects the shared one (requests without the key, or an
 * unkeyed limit). Keys are compared byte for byte; one longer than
 * MD_RATELIMIT_KEY_MAX is told apart from others by its length and a seeded
 * 64-bit hash of the whole. Returns 0 when allowed, else the nanoseconds
 * until a token is due (> 0). A new key that cannot be allocated falls back
 * to the shared bucket. */
uint64_t md_ratelimit_take(struct md_ratelimit *rl, const char *key, size_t key_len,
                           uint64_t now_ns);

/* The key |cfg| asks of a request: the first value of its header (names
 * compared without case), or |peer_id| (the verified SPIFFE ID) for
 * spiffe_id. NULL, for the shared bucket, when the request has none or the
 * limit is unkeyed. Borrows from |hdrs| / |peer_id|. */
const char *md_ratelimit_key(const struct md_snap_rate_limit *cfg, const struct md_hdr *hdrs,
                             size_t n_hdrs, const char *peer_id, size_t *len);

/* Keyed buckets held now (at most cfg->max_keys). */
size_t md_ratelimit_keys(struct md_ratelimit *rl);

/* The real clock in nanoseconds (md_clock_ns(NULL)): the one every worker
 * passes to take; tests pass times of their own. */
uint64_t md_ratelimit_now(void);

/* A state for each of |snap|'s rate limits, indexed by md_snap_rate_limit.idx
 * ([snap->n_rate_limits], never NULL on success even when empty). Returns
 * NULL on allocation failure. */
struct md_ratelimit **md_ratelimit_new_all(const struct md_snapshot *snap);
void md_ratelimit_free_all(struct md_ratelimit **all, size_t n);

#define MD_RATELIMIT_KEY_MAX 256u

#endif
