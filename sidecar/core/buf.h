/* SPDX-License-Identifier: Apache-2.0 */
/* A bounded byte buffer: a fixed capacity, bytes appended at the tail and
 * consumed from the head. It never grows: when it is full the reader side
 * must stop reading (that is the backpressure). */
#ifndef MESHD_CORE_BUF_H
#define MESHD_CORE_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct md_buf {
    uint8_t *data; /* owned; |cap| bytes */
    size_t cap;    /* fixed at init */
    size_t head;   /* first unconsumed byte */
    size_t tail;   /* one past the last byte */
};

/* Allocates |cap| bytes. Returns 0 or MD_ENOMEM. */
int md_buf_init(struct md_buf *b, size_t cap);
void md_buf_fini(struct md_buf *b);

static inline size_t md_buf_len(const struct md_buf *b)
{
    return b->tail - b->head;
}
static inline bool md_buf_full(const struct md_buf *b)
{
    return md_buf_len(b) == b->cap;
}
static inline const uint8_t *md_buf_head(const struct md_buf *b)
{
    return b->data + b->head;
}

/* Returns where up to |*room| bytes may be written; compacts first if that
 * makes the free space contiguous. |*room| is 0 when the buffer is full. */
uint8_t *md_buf_reserve(struct md_buf *b, size_t *room);
/* Marks |n| bytes written at the pointer md_buf_reserve returned. */
void md_buf_commit(struct md_buf *b, size_t n);
/* Drops |n| bytes from the head (n <= md_buf_len). */
void md_buf_consume(struct md_buf *b, size_t n);
/* Copies up to |len| bytes in; returns how many fitted. */
size_t md_buf_append(struct md_buf *b, const void *src, size_t len);

#endif
