/* SPDX-License-Identifier: Apache-2.0 */
/* One worker = one thread = one libev loop. It owns its listening sockets
 * (one SO_REUSEPORT socket per listener), every connection it accepted, its
 * upstream pools, its stats block and its load balancers. Shared with other
 * threads: the snapshot and the endpoint sets its balancers read (immutable,
 * reference counted), the circuit breakers and rate limit buckets (atomic,
 * borrowed from the control thread), and the fields marked atomic; the admin
 * thread reads the stats block. */
#ifndef MESHD_LOOP_WORKER_H
#define MESHD_LOOP_WORKER_H

#include "core/list.h"
#include "core/log.h"
#include "core/outbuf.h"
#include "core/pages.h"
#include "core/stats.h"
#include "filter/reset_flood.h"
#include "net/errwatch.h"
#include "net/linger.h"
#include "snapshot.h"
#include "upstream/lb.h"

#include <ev.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct md_breakers;
struct md_listener;
struct md_ratelimit;
struct md_upool;

/* Work to run once before the loop next sleeps (batched writes, deferred
 * frees). Embed it; queue it with md_worker_defer. */
struct md_defer {
    struct md_list link; /* in worker->deferred while queued */
    void (*run)(struct md_defer *d);
};

/* Commands the control thread posts (bits, so several can be pending). */
enum {
    MD_WORKER_CMD_STOP_ACCEPT = 1 << 0, /* close listening sockets */
    MD_WORKER_CMD_CLOSE_ALL = 1 << 1,   /* close every open connection now */
    MD_WORKER_CMD_EXIT = 1 << 2,        /* leave the loop; implies both above */
    MD_WORKER_CMD_HURRY = 1 << 3,       /* with EXIT: lingering sockets are closed now */
};

#define MD_WORKER_PIPE_CACHE 32

struct md_worker {
    int id;
    struct ev_loop *loop; /* owned */
    pthread_t thread;
    bool thread_started;
    struct md_snapshot *snap;       /* one reference */
    struct md_stats *stats;         /* owned; read by the admin thread */
    struct md_listener **listeners; /* [snap->n_listeners], owned */
    struct md_lb *lbs;              /* [snap->n_clusters] balancers over the current sets */
    struct md_epset **epset_next;   /* [snap->n_clusters] atomic: sets posted, not yet taken */
    struct md_list sessions;        /* open TCP proxy sessions */
    uint64_t next_session_id;
    uint64_t active;                    /* atomic: open downstream connections */
    int pipes[MD_WORKER_PIPE_CACHE][2]; /* empty pipes kept for splice */
    int n_pipes;
    int reserve_fd; /* released on EMFILE to shed one connection */
    unsigned cmd;   /* atomic: MD_WORKER_CMD_* bits */
    ev_async wake;
    struct md_list deferred; /* md_defer entries to run before sleeping */
    ev_prepare prepare;
    struct md_list h2_conns;         /* downstream HTTP/2 connections */
    struct md_list h1_conns;         /* downstream HTTP/1.1 connections */
    struct md_list detecting;        /* connections whose protocol is being sniffed */
    struct md_list tls_accepting;    /* downstream TLS handshakes in progress */
    struct md_upool **upools;        /* [snap->n_clusters] upstream pools, made on first use */
    struct md_breakers *breakers;    /* [snap->n_clusters] shared, borrowed; NULL: none */
    uint64_t rng;                    /* xorshift state: route splits, request ids */
    struct md_errwatch_set errwatch; /* resets on sockets not being read */
    struct md_linger_set linger;     /* downstream sockets closing (net/linger.h) */
    /* HTTP/2 frames of one flush, gathered for one write: shared, so an idle
     * connection holds no output buffer. Empty between flushes. */
    struct md_outbuf h2_batch;
    struct md_pages pages; /* nghttp2's large buffers (codec/h2_conn.c) */
    /* [snap->n_rate_limits] borrowed from the control thread, set before the
     * thread starts: the buckets every worker shares (filter/ratelimit.h) */
    struct md_ratelimit **ratelimits;
    struct md_reset_flood reset_flood;     /* streams clients abandoned, across connections */
    struct md_log_budget log_budget;   /* lines a client causes at will (failed exchanges) */
};

/* Creates the worker's loop and binds one socket per listener of |snap|.
 * Returns 0, or -errno of a failed bind (logged with the address). */
int md_worker_init(struct md_worker *w, int id, struct md_snapshot *snap);
/* Starts the thread. Returns 0 or -errno. */
int md_worker_start(struct md_worker *w);
/* From any thread: asks the worker to act on |cmd| bits. */
void md_worker_post(struct md_worker *w, unsigned cmd);
/* From the control thread: cluster |idx|'s balancer is to use |set| (a
 * reference is taken) from its next event on; before the thread runs, at
 * once. */
void md_worker_post_epset(struct md_worker *w, size_t idx, struct md_epset *set);
/* Joins the thread and frees everything. On MD_WORKER_CMD_EXIT the thread
 * closes its connections and waits for its lingering sockets, at most
 * MD_LINGER_EXIT_S (none with MD_WORKER_CMD_HURRY). */
void md_worker_fini(struct md_worker *w);

/* Queues |d| to run before the loop sleeps; a no-op if already queued. */
void md_worker_defer(struct md_worker *w, struct md_defer *d);
/* Removes |d| from the queue if it is there. */
void md_worker_defer_cancel(struct md_defer *d);
static inline void md_defer_init(struct md_defer *d, void (*run)(struct md_defer *))
{
    md_list_init(&d->link);
    d->run = run;
}

/* A fast pseudo-random number (xorshift64*), per worker. */
uint64_t md_worker_rand(struct md_worker *w);

/* Number of open downstream connections; safe from any thread. */
uint64_t md_worker_active(const struct md_worker *w);
/* Number of downstream sockets in their lingering close; safe from any
 * thread. */
uint64_t md_worker_lingering(const struct md_worker *w);

/* A non-blocking pipe for splice, from the cache or new, grown towards
 * |want| bytes. Returns its capacity in bytes, or -errno. */
int md_worker_pipe_get(struct md_worker *w, int p[2], size_t want);
/* Gives back an EMPTY pipe (closed if the cache is full). */
void md_worker_pipe_put(struct md_worker *w, int p[2]);

#endif
