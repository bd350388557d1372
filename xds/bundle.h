/* SPDX-License-Identifier: Apache-2.0 */
/* Bundle file -> immutable snapshot: read, check the wire format, unpack,
 * validate, build. The one path that meshd and `meshctl validate` share. */
#ifndef MESHD_XDS_BUNDLE_H
#define MESHD_XDS_BUNDLE_H

#include "errlist.h"
#include "snapshot.h"

#include <stddef.h>
#include <stdint.h>

/* Bundles larger than this are refused before decoding. */
#define MD_BUNDLE_MAX_BYTES (64u * 1024u * 1024u)

/* Decodes and validates |len| bytes into a new snapshot (*out, one reference).
 * Every problem found is added to |el|. Returns 0, MD_EPROTO (wire format),
 * MD_EINVAL (validation) or MD_ENOMEM. */
int md_bundle_load_mem(const uint8_t *data, size_t len, struct md_errlist *el,
                       struct md_snapshot **out);

/* Same, reading |path| first (its errors are added to |el| too). */
int md_bundle_load_file(const char *path, struct md_errlist *el, struct md_snapshot **out);

/* The bundle meshd runs without --bundle (generated from
 * xds/default_bundle.textproto at build time). */
extern const uint8_t md_default_bundle[];
extern const size_t md_default_bundle_len;

#endif
