/* SPDX-License-Identifier: Apache-2.0 */
/* Certificate rotation on the control thread: every TLS file of a snapshot
 * is looked at each second (stat through symlinks: inode, size and
 * nanosecond times, so that a Kubernetes secret volume's symlink swap and a
 * rewrite in the same second both count); when one changed, or on SIGHUP,
 * the credentials using it are rebuilt from their files (tls/tls_creds.h).
 * A change is acted on once the files have been quiet for a moment, so that
 * a certificate and its key replaced one after the other load as a pair. */
#ifndef MESHD_TLS_TLS_WATCH_H
#define MESHD_TLS_TLS_WATCH_H

#include "snapshot.h"

#include <ev.h>
#include <stdint.h>

struct md_tls_watch;

/* Watches |snap|'s TLS files on |loop|. Returns NULL on ENOMEM (logged). A
 * snapshot without TLS gets a watch with nothing in it. */
struct md_tls_watch *md_tls_watch_new(struct ev_loop *loop, const struct md_snapshot *snap);
void md_tls_watch_free(struct md_tls_watch *tw);

/* Reloads every credential now (SIGHUP). */
void md_tls_watch_reload_all(struct md_tls_watch *tw, const char *why);

/* Reloads done and refused so far (for metrics). */
void md_tls_watch_counts(const struct md_tls_watch *tw, uint64_t *reloads, uint64_t *failures);

#endif
