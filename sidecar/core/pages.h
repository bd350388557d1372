/* SPDX-License-Identifier: Apache-2.0 */
/* Page-granular memory for the few large, sparsely written buffers a
 * long-lived connection keeps (nghttp2's stream map and frame buffer): slots
 * of whole pages, zeroed, carved from one reserved anonymous mapping, so the
 * pages nobody writes are never resident, and freed slots go back to the
 * kernel (MADV_DONTNEED) at once. One per worker thread: no locks.
 *
 * Slots are 1 to MD_PAGES_MAX_PAGES pages; each size has its own stretch of
 * the mapping, so a pointer says its size. */
#ifndef MESHD_CORE_PAGES_H
#define MESHD_CORE_PAGES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MD_PAGES_MAX_PAGES 8

struct md_pages_class {
    size_t next;    /* slots handed out from the stretch so far */
    uint32_t *free; /* indexes of freed slots */
    size_t n_free, cap_free;
};

struct md_pages {
    uint8_t *base;  /* NULL: disabled, every call falls back (alloc returns NULL) */
    size_t stretch; /* bytes of address space per slot size */
    size_t page;
    struct md_pages_class cls[MD_PAGES_MAX_PAGES];
};

/* Reserves |stretch| bytes of address space per slot size (not memory).
 * Returns 0, or MD_ENOMEM with |p| disabled. */
int md_pages_init(struct md_pages *p, size_t stretch);
void md_pages_fini(struct md_pages *p);

/* A zeroed slot of at least |n| bytes, or NULL when |n| is over
 * MD_PAGES_MAX_PAGES pages, the stretch is used up or |p| is disabled. */
void *md_pages_alloc(struct md_pages *p, size_t n);

static inline bool md_pages_owns(const struct md_pages *p, const void *ptr)
{
    return p->base && (const uint8_t *)ptr >= p->base &&
           (const uint8_t *)ptr < p->base + MD_PAGES_MAX_PAGES * p->stretch;
}

/* Bytes usable in the slot at |ptr| (owned by |p|). */
static inline size_t md_pages_size(const struct md_pages *p, const void *ptr)
{
    return ((size_t)((const uint8_t *)ptr - p->base) / p->stretch + 1) * p->page;
}

/* Gives the pages of the slot at |ptr| back to the kernel; it stays
 * allocated, reading as zeros until written again. */
void md_pages_discard(struct md_pages *p, void *ptr);

/* Gives the slot's pages back to the kernel and the slot to later allocs. */
void md_pages_free(struct md_pages *p, void *ptr);

#endif
