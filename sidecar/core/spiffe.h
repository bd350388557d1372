/* SPDX-License-Identifier: Apache-2.0 */
/* SPIFFE ID syntax (SPIFFE-ID §2), as pure string checks: shared by TLS (the
 * ID a peer's certificate names) and configuration validation (the IDs and
 * trust domains RBAC rules name). */
#ifndef MESHD_CORE_SPIFFE_H
#define MESHD_CORE_SPIFFE_H

#include <stddef.h>

/* SPIFFE-ID §2: "spiffe://" trust domain and path, at most 2048 bytes. */
#define MD_SPIFFE_ID_MAX 2048

/* SPIFFE-ID §2.1-2.2: NULL when |id| (|n| bytes) is a valid SPIFFE ID,
 * else why not (a static string). */
const char *md_spiffe_id_invalid(const char *id, size_t n);

/* SPIFFE-ID §2.1: NULL when |td| (|n| bytes) is a valid trust domain name
 * (non-empty; a-z, 0-9, '.', '-', '_'), else why not. */
const char *md_spiffe_trust_domain_invalid(const char *td, size_t n);

#endif
