/* SPDX-License-Identifier: Apache-2.0 */
/* DNS and DNS_SRV clusters: c-ares on the control loop (its sockets on
 * ev_io, its timeouts on one ev_timer; never blocking) resolves every such
 * cluster at start and again when the answer's shortest TTL runs out, and
 * hands each good answer to md_clusters_update. A failed resolution keeps
 * the last good set and is retried after min_refresh_ms. */
#ifndef MESHD_DISCOVERY_DNS_H
#define MESHD_DISCOVERY_DNS_H

#include "snapshot.h"
#include "upstream/clusters.h"

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

struct md_dns;

/* Starts resolving every DNS and DNS_SRV cluster of |snap| on |loop| (the
 * first queries leave at once), updating |cs|. Borrows |loop|, |snap| and
 * |cs| until md_dns_free. A snapshot without DNS clusters gets an object
 * with nothing in it (no channel, no resolv.conf read). Returns NULL and
 * sets |*err| (MD_ENOMEM, or MD_EINVAL when c-ares refuses its options or
 * servers; logged). */
struct md_dns *md_dns_new(struct ev_loop *loop, const struct md_snapshot *snap,
                          struct md_clusters *cs, int *err);
/* Cancels what is in flight (no endpoint update follows), stops every
 * watcher and frees. NULL is ignored. */
void md_dns_free(struct md_dns *dns);

/* The shortest TTL among the records of |type| in a DNS answer (|alen|
 * bytes from a server, trusted in nothing), or UINT32_MAX when none can be
 * read. */
uint32_t md_dns_answer_min_ttl(const unsigned char *abuf, int alen, int type);

/* When to resolve again: the TTL (seconds) clamped to min/max_refresh_ms,
 * minus up to an eighth drawn from |r| (sidecars that got the same
 * remaining TTL from a caching resolver do not all ask at once); after a
 * failure, min_refresh_ms plus up to an eighth. */
uint32_t md_dns_refresh_ms(const struct md_snap_dns *cfg, bool failed, uint32_t ttl_s, uint64_t r);

#endif
