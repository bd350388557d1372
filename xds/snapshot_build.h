/* SPDX-License-Identifier: Apache-2.0 */
/* Validated protobuf -> snapshot. Internal to xds/. */
#ifndef MESHD_XDS_SNAPSHOT_BUILD_H
#define MESHD_XDS_SNAPSHOT_BUILD_H

#include "mesh/v1/bundle.pb-c.h"
#include "snapshot.h"

/* Builds a snapshot with one reference from |b|, which md_validate_bundle
 * accepted. Returns 0 or MD_ENOMEM. */
int md_snapshot_build(const Mesh__V1__Bundle *b, struct md_snapshot **out);

#endif
