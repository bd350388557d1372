/* SPDX-License-Identifier: Apache-2.0 */
#include "core/arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A small request's headers both ways, their upstream copy and the
 * name/value arrays handed to nghttp2 take about 3 KiB: one block of 4 KiB
 * in all (with its header) holds them, where doubling from 1 KiB took three
 * mallocs per request. */
#define FIRST_BLOCK (4096 - sizeof(struct md_arena_block))

struct md_arena_block {
    struct md_arena_block *next;
    size_t cap;
    _Alignas(MD_ARENA_ALIGN) unsigned char data[];
};

void md_arena_fini(struct md_arena *a)
{
    while (a->head) {
        struct md_arena_block *b = a->head;
        a->head = b->next;
        free(b);
    }
    a->cur = a->end = NULL;
    a->used = 0;
}

void *md_arena_grow(struct md_arena *a, size_t need, size_t len)
{
    /* Each block doubles the last, so a stream makes O(log n) mallocs. */
    size_t cap = a->head ? a->head->cap * 2 : FIRST_BLOCK;
    while (cap < need)
        cap *= 2;
    struct md_arena_block *b = malloc(sizeof(*b) + cap);
    if (!b)
        return NULL;
    b->cap = cap;
    b->next = a->head;
    a->head = b;
    a->cur = b->data + need;
    a->end = b->data + cap;
    a->used += len;
    return b->data;
}

char *md_arena_strndup(struct md_arena *a, const char *s, size_t len)
{
    char *p = md_arena_alloc(a, len + 1);
    if (p) {
        memcpy(p, s, len);
        p[len] = '\0';
    }
    return p;
}
