/* SPDX-License-Identifier: Apache-2.0 */
#include "core/pages.h"

#include "core/err.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int md_pages_init(struct md_pages *p, size_t stretch)
{
    memset(p, 0, sizeof(*p));
    p->page = (size_t)sysconf(_SC_PAGESIZE);
    p->stretch = stretch / p->page * p->page;
    /* Address space only: MAP_NORESERVE commits nothing until a page is written. */
    void *m = mmap(NULL, MD_PAGES_MAX_PAGES * p->stretch, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED)
        return MD_ENOMEM;
    p->base = m;
    return 0;
}

void md_pages_fini(struct md_pages *p)
{
    if (p->base)
        munmap(p->base, MD_PAGES_MAX_PAGES * p->stretch);
    for (int i = 0; i < MD_PAGES_MAX_PAGES; i++)
        free(p->cls[i].free);
    memset(p, 0, sizeof(*p));
}

void *md_pages_alloc(struct md_pages *p, size_t n)
{
    if (!p->base || n == 0)
        return NULL;
    size_t pages = (n + p->page - 1) / p->page;
    if (pages > MD_PAGES_MAX_PAGES)
        return NULL;
    struct md_pages_class *c = &p->cls[pages - 1];
    size_t slot = pages * p->page;
    size_t idx;
    if (c->n_free) {
        idx = c->free[--c->n_free];
    } else if ((c->next + 1) * slot <= p->stretch && c->next < UINT32_MAX) {
        idx = c->next++;
    } else {
        return NULL;
    }
    return p->base + (pages - 1) * p->stretch + idx * slot;
}

void md_pages_discard(struct md_pages *p, void *ptr)
{
    madvise(ptr, md_pages_size(p, ptr), MADV_DONTNEED);
}

void md_pages_free(struct md_pages *p, void *ptr)
{
    size_t off = (size_t)((uint8_t *)ptr - p->base);
    size_t pages = off / p->stretch + 1;
    struct md_pages_class *c = &p->cls[pages - 1];
    size_t slot = pages * p->page;
    /* Zero and not resident again: the next alloc of this slot is a calloc. */
    madvise(ptr, slot, MADV_DONTNEED);
    if (c->n_free == c->cap_free) {
        size_t cap = c->cap_free ? c->cap_free * 2 : 64;
        uint32_t *v = realloc(c->free, cap * sizeof(*v));
        if (!v)
            return; /* the slot is lost to reuse, not to correctness */
        c->free = v;
        c->cap_free = cap;
    }
    c->free[c->n_free++] = (uint32_t)((off % p->stretch) / slot);
}
