/* SPDX-License-Identifier: Apache-2.0 */
/* A bump allocator for a stream's header bytes: many small copies, freed
 * together when the stream ends. Blocks grow from 4 KiB; nothing is freed
 * individually. */
#ifndef MESHD_CORE_ARENA_H
#define MESHD_CORE_ARENA_H

#include <stddef.h>

struct md_arena_block;

struct md_arena {
    struct md_arena_block *head; /* newest block first */
    size_t used;                 /* bytes given out, all blocks (for limits) */
};

static inline void md_arena_init(struct md_arena *a)
{
    a->head = NULL;
    a->used = 0;
}
/* Frees every block. */
void md_arena_fini(struct md_arena *a);
/* Returns |len| bytes aligned for any type, or NULL when out of memory. */
void *md_arena_alloc(struct md_arena *a, size_t len);
/* Copies |len| bytes plus a NUL; returns NULL when out of memory. */
char *md_arena_strndup(struct md_arena *a, const char *s, size_t len);

#endif
