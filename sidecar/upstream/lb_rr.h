/* SPDX-License-Identifier: Apache-2.0 */
/* Round robin over a cluster's endpoints. The cursor is per worker (no
 * locks, no shared cache line); workers start at different offsets. */
#ifndef MESHD_UPSTREAM_LB_RR_H
#define MESHD_UPSTREAM_LB_RR_H

#include <stddef.h>
#include <stdint.h>

/* Returns the next endpoint index after |*cursor| that is not among the
 * |n_tried| indices in |tried|, advancing |*cursor| past it; or -1 when every
 * one of the |n| endpoints was tried. O(n * n_tried); n_tried <= 16. */
long md_lb_rr_pick(uint32_t *cursor, size_t n, const uint32_t *tried, size_t n_tried);

#endif
