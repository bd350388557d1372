/* SPDX-License-Identifier: Apache-2.0 */
#include "http/hdrs.h"

bool md_hdr_name_is_connection_specific(const char *name, size_t len)
{
    static const char *const names[] = {"connection", "keep-alive", "proxy-connection",
                                        "transfer-encoding", "upgrade"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (len == strlen(names[i]) && memcmp(name, names[i], len) == 0)
            return true;
    return false;
}
