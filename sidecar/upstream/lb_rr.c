/* SPDX-License-Identifier: Apache-2.0 */
#include "upstream/lb_rr.h"

#include <stdbool.h>

static bool was_tried(uint32_t idx, const uint32_t *tried, size_t n_tried)
{
    for (size_t i = 0; i < n_tried; i++)
        if (tried[i] == idx)
            return true;
    return false;
}

long md_lb_rr_pick(uint32_t *cursor, size_t n, const uint32_t *tried, size_t n_tried)
{
    for (size_t step = 0; step < n; step++) {
        uint32_t idx = (uint32_t)((*cursor + step) % n);
        if (!was_tried(idx, tried, n_tried)) {
            *cursor = (uint32_t)((idx + 1) % n);
            return idx;
        }
    }
    return -1;
}
