/* SPDX-License-Identifier: Apache-2.0 */
#include "core/err.h"

#include <string.h>

const char *md_err_str(int err)
{
    switch (err) {
    case 0: return "ok";
    case MD_EPROTO: return "malformed input";
    case MD_EINVAL: return "invalid value";
    case MD_ENOUPSTREAM: return "no upstream available";
    case MD_ETOOBIG: return "size limit exceeded";
    case MD_EOVERFLOW: return "circuit breaker overflow";
    default: break;
    }
    if (err < 0 && err > MD_E__BASE)
        return strerrorname_np(-err) ? strerrorname_np(-err) : "unknown errno";
    return "unknown error";
}
