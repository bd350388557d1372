/* SPDX-License-Identifier: Apache-2.0 */
/* Intrusive doubly linked list, and MD_CONTAINER_OF to get from an embedded
 * member (a list link, an ev watcher) back to its owner. */
#ifndef MESHD_CORE_LIST_H
#define MESHD_CORE_LIST_H

#include <stdbool.h>
#include <stddef.h>

#define MD_CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

struct md_list {
    struct md_list *prev, *next;
};

static inline void md_list_init(struct md_list *head)
{
    head->prev = head->next = head;
}
static inline bool md_list_empty(const struct md_list *head)
{
    return head->next == head;
}

static inline void md_list_insert_tail(struct md_list *head, struct md_list *n)
{
    n->prev = head->prev;
    n->next = head;
    head->prev->next = n;
    head->prev = n;
}

static inline void md_list_remove(struct md_list *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}

#endif
