/* SPDX-License-Identifier: Apache-2.0 */
/* Bytes waiting for a socket: appended by a codec, written with as few
 * calls as possible (md_sock_flush, net/sock.h). Growth is bounded by its
 * callers, which stop producing while it is above their high-water mark. */
#ifndef MESHD_CORE_OUTBUF_H
#define MESHD_CORE_OUTBUF_H

#include <stddef.h>
#include <stdint.h>

struct md_outbuf {
    uint8_t *data; /* owned */
    size_t len, cap;
};

void md_outbuf_fini(struct md_outbuf *o);
/* Returns 0 or MD_ENOMEM (nothing appended then). */
int md_outbuf_append(struct md_outbuf *o, const void *p, size_t n);
/* Room for |n| more bytes at the end, for a producer to fill in place (then
 * o->len += what it wrote). Returns NULL on ENOMEM. */
uint8_t *md_outbuf_reserve(struct md_outbuf *o, size_t n);
int md_outbuf_printf(struct md_outbuf *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
