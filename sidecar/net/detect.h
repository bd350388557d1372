/* SPDX-License-Identifier: Apache-2.0 */
/* Protocol detection for HTTP listeners in AUTO mode: peek (MSG_PEEK, nothing
 * is consumed) at the first bytes; the HTTP/2 connection preface means h2c,
 * anything else HTTP/1.1. */
#ifndef MESHD_NET_DETECT_H
#define MESHD_NET_DETECT_H

#include "snapshot.h"

struct md_worker;

/* Takes the accepted |fd| and hands it to the right codec once decided. */
void md_detect_start(struct md_worker *w, const struct md_snap_listener *l, int fd);

/* Closes every connection still being sniffed. */
void md_detect_close_all(struct md_worker *w);

#endif
