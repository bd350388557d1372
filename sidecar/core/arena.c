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
#define ALIGN 16

struct md_arena_block {
    struct md_arena_block *next;
    size_t cap, off;
    _Alignas(ALIGN) unsigned char data[];
};

void md_arena_fini(struct md_arena *a)
{
    while (a->head) {
        struct md_arena_block *b = a->head;
        a->head = b->next;
        free(b);
    }
    a->used = 0;
}

void *md_arena_alloc(struct md_arena *a, size_t len)
{
    size_t need = (len + ALIGN - 1) & ~(size_t)(ALIGN - 1);
    struct md_arena_block *b = a->head;
    if (!b || b->cap - b->off < need) {
        /* Each block doubles the last, so a stream makes O(log n) mallocs. */
        size_t cap = b ? b->cap * 2 : FIRST_BLOCK;
        while (cap < need)
            cap *= 2;
        b = malloc(sizeof(*b) + cap);
        if (!b)
            return NULL;
        b->cap = cap;
        b->off = 0;
        b->next = a->head;
        a->head = b;
    }
    void *p = b->data + b->off;
    b->off += need;
    a->used += len;
    return p;
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
