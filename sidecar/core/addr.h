/* SPDX-License-Identifier: Apache-2.0 */
/* IP literal + port <-> struct sockaddr. No name resolution here. */
#ifndef MESHD_CORE_ADDR_H
#define MESHD_CORE_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

struct md_addr {
    struct sockaddr_storage ss;
    socklen_t len;
};

/* The same address and port? */
static inline bool md_addr_equal(const struct md_addr *a, const struct md_addr *b)
{
    return a->len == b->len && memcmp(&a->ss, &b->ss, a->len) == 0;
}

/* Longest text md_addr_format writes, NUL included: "[v6]:65535". */
#define MD_ADDR_STRLEN 56

/* Parses an IPv4 or IPv6 literal (no brackets) and |port| into |out|.
 * Returns 0, or MD_EINVAL when |ip| is not a literal or |port| > 65535. */
int md_addr_parse(const char *ip, uint32_t port, struct md_addr *out);

/* Writes "1.2.3.4:80" or "[::1]:80" into |buf| (MD_ADDR_STRLEN bytes). */
const char *md_addr_format(const struct sockaddr *sa, char *buf);

/* Closes |fd| with a reset (SO_LINGER 0): the peer sees RST, not FIN. */
void md_sock_close_reset(int fd);

/* Writes the connected peer's IP (no port) of socket |fd| into |buf|
 * (INET6_ADDRSTRLEN bytes); "" when unknown. */
void md_addr_peer_ip(int fd, char *buf, size_t len);

#endif
