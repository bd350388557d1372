/* SPDX-License-Identifier: Apache-2.0 */
/* One error convention: 0 on success, a negative MD_E* on failure.
 * System failures are -errno; proxy-specific codes sit below MD_E__BASE. */
#ifndef MESHD_CORE_ERR_H
#define MESHD_CORE_ERR_H

#include <errno.h>

#define MD_E__BASE (-10000)
enum md_err {
    MD_ENOMEM = -ENOMEM,
    MD_EPROTO = MD_E__BASE - 1,      /* malformed input (bytes, bundle) */
    MD_EINVAL = MD_E__BASE - 2,      /* a value out of range or inconsistent */
    MD_ENOUPSTREAM = MD_E__BASE - 3, /* every upstream attempt failed */
    MD_ETOOBIG = MD_E__BASE - 4,     /* a size limit was hit */
    MD_EOVERFLOW = MD_E__BASE - 5,   /* a circuit breaker refused: over a cluster's limit */
};

/* Returns a static, printable name for |err| (an MD_E* or -errno). */
const char *md_err_str(int err);

#endif
