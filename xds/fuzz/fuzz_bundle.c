/* SPDX-License-Identifier: Apache-2.0 */
/* Fuzz target: any bytes as a bundle. Must never crash or leak; errors are fine. */
#include "bundle.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct md_errlist el;
    struct md_snapshot *snap = NULL;
    md_errlist_init(&el, "fuzz");
    if (md_bundle_load_mem(data, size, &el, &snap) == 0) {
        char *dump;
        size_t len;
        if (md_snapshot_dump(snap, &dump, &len) == 0)
            free(dump);
    }
    md_snapshot_unref(snap);
    md_errlist_fini(&el);
    return 0;
}
