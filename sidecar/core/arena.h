/* SPDX-License-Identifier: Apache-2.0 */
/* A bump allocator for a stream's header bytes: many small copies, freed
 * together when the stream ends. Blocks grow from 4 KiB; nothing is freed
 * individually. */
#ifndef MESHD_CORE_ARENA_H
#define MESHD_CORE_ARENA_H

#include <stddef.h>

#define MD_ARENA_ALIGN 16

struct md_arena_block;

struct md_arena {
    struct md_arena_block *head; /* newest block first */
    unsigned char *cur, *end;    /* what is left of the newest block */
    size_t used;                 /* bytes given out, all blocks (for limits) */
};

static inline void md_arena_init(struct md_arena *a)
{
    a->head = NULL;
    a->cur = a->end = NULL;
    a->used = 0;
}
/* Frees every block. */
void md_arena_fini(struct md_arena *a);

/* A new block for |need| bytes: md_arena_alloc's slow path. */
void *md_arena_grow(struct md_arena *a, size_t need, size_t len);

/* Returns |len| bytes aligned for any type, or NULL when out of memory.
 * Inline: a stream makes about twenty of these per request. */
static inline void *md_arena_alloc(struct md_arena *a, size_t len)
{
    size_t need = (len + MD_ARENA_ALIGN - 1) & ~(size_t)(MD_ARENA_ALIGN - 1);
    if ((size_t)(a->end - a->cur) < need)
        return md_arena_grow(a, need, len);
    void *p = a->cur;
    a->cur += need;
    a->used += len;
    return p;
}
/* Copies |len| bytes plus a NUL; returns NULL when out of memory. */
char *md_arena_strndup(struct md_arena *a, const char *s, size_t len);

#endif
