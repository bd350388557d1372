/* SPDX-License-Identifier: Apache-2.0 */
#include "router/retry.h"

#include <string.h>

bool md_retry_on_response(const struct md_snap_retry *rp, const struct md_half *resp, bool grpc)
{
    long status = md_hdrs_decimal(resp->hdrs, resp->n_hdrs, ":status");
    if (status >= 500 && (rp->on & MD_RETRY_ON_5XX))
        return true;
    if ((status == 502 || status == 503 || status == 504) && (rp->on & MD_RETRY_ON_GATEWAY_ERROR))
        return true;
    for (size_t i = 0; (rp->on & MD_RETRY_ON_STATUS_CODES) && i < rp->n_codes; i++)
        if (status == (long)rp->codes[i])
            return true;
    /* Only a trailers-only answer: response headers without a status have
     * started the call, and its messages may be on their way. */
    long code =
        grpc && resp->headers_end ? md_hdrs_decimal(resp->hdrs, resp->n_hdrs, "grpc-status") : -1;
    return code > 0 && code < 32 && (rp->grpc_on & (1u << code));
}

bool md_retry_on_end(const struct md_snap_retry *rp, enum md_retry_end end)
{
    uint32_t any = MD_RETRY_ON_5XX | MD_RETRY_ON_GATEWAY_ERROR;
    switch (end) {
    case MD_RETRY_END_RESET: return rp->on & (any | MD_RETRY_ON_RESET);
    case MD_RETRY_END_CONNECT_FAILED: return rp->on & (any | MD_RETRY_ON_CONNECT_FAILURE);
    default: /* a per-try timeout is retried whenever the policy retries anything */
        return rp->on || rp->grpc_on;
    }
}

int64_t md_retry_pushback_ms(const struct md_half *resp)
{
    const struct md_hdr *x = md_hdrs_find(resp->hdrs, resp->n_hdrs, "grpc-retry-pushback-ms");
    if (!x)
        return -1;
    long v = md_hdr_decimal(x->value, x->value_len);
    return v < 0 ? -2 : v; /* gRPC A6: negative or unparsable means "do not retry" */
}

double md_retry_backoff(const struct md_snap_retry *rp, uint32_t attempt, uint64_t rnd)
{
    double cap = rp->base_interval_ms / 1000.0;
    for (uint32_t i = 1; i < attempt && cap < rp->max_interval_ms / 1000.0; i++)
        cap *= 2;
    if (cap > rp->max_interval_ms / 1000.0)
        cap = rp->max_interval_ms / 1000.0;
    return cap * (double)(rnd >> 11) / 9007199254740992.0; /* full jitter: [0, cap) */
}
