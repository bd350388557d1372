/* SPDX-License-Identifier: Apache-2.0 */
/* Authorization decisions: a request (its headers, whether it is gRPC, the
 * peer's verified SPIFFE ID) against one snapshot Rbac. Pure function of its
 * arguments: no allocation, no I/O; the router answers and counts. */
#ifndef MESHD_ROUTER_RBAC_H
#define MESHD_ROUTER_RBAC_H

#include "http/hdrs.h"
#include "snapshot.h"

#include <stdbool.h>
#include <stddef.h>

struct md_rbac_decision {
    bool allowed;
    const struct md_snap_rbac_policy *policy; /* the policy that matched; NULL: none did */
    size_t stat;                              /* md_snapshot.rbac_stats slot to count in */
};

/* Decides |rbac| for a request whose header block is |hdrs| (|n_hdrs| fields,
 * pseudo-headers included: :path is read from it), |grpc| when its
 * content-type is application/grpc*, from a peer whose verified SPIFFE ID
 * is |peer_id| (NULL: none). The first policy (in order) whose principals
 * and permissions both match decides: ALLOW allows, DENY refuses; when none
 * matches, ALLOW refuses and DENY allows. Fills |out| (all borrowed from
 * |rbac|) and returns out->allowed. */
bool md_rbac_check(const struct md_snap_rbac *rbac, const struct md_hdr *hdrs, size_t n_hdrs,
                   bool grpc, const char *peer_id, struct md_rbac_decision *out);

#endif
