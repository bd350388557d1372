/* SPDX-License-Identifier: Apache-2.0 */
/* DNS answers as a lying or broken server could send them, through the TTL
 * walk of discovery/dns.c (c-ares parses the rest). */
#include "discovery/dns.h"

#include <arpa/nameser.h>
#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65535)
        return 0; /* a DNS message is at most 64 KiB */
    md_dns_answer_min_ttl(data, (int)size, T_SRV);
    md_dns_answer_min_ttl(data, (int)size, T_A);
    return 0;
}
