/* SPDX-License-Identifier: Apache-2.0 */
/* What the HTTP/2 server and client connections share: a socket driven by an
 * nghttp2 session through mem_recv/mem_send, writes batched once per loop
 * pass (md_defer), at most one read batch per loop pass (so what a batch
 * decided, a GOAWAY, goes out before the next batch is read, on TLS too),
 * reading paused while too much output is pending, and a close that is
 * deferred until no nghttp2 callback is on the stack. */
#ifndef MESHD_CODEC_H2_CONN_H
#define MESHD_CODEC_H2_CONN_H

#include "core/arena.h"
#include "codec/h2_guard.h"
#include "core/outbuf.h"
#include "http/hdrs.h"
#include "loop/worker.h"
#include "net/sock.h"

#include <ev.h>
#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stdint.h>

/* Output held before reading stops (a peer that does not read its replies,
 * PING or SETTINGS floods). */
#define MD_H2_OUT_LIMIT (1024u * 1024u)

struct md_h2conn;
struct md_stream;
struct md_half;
typedef void md_h2conn_cb(struct md_h2conn *c);

struct md_h2conn {
    struct md_worker *w;   /* borrowed */
    struct md_sock sock;   /* sock.fd -1 once closed */
    nghttp2_session *sess; /* owned */
    ev_io rio, wio;
    ev_idle more;          /* TLS bytes left after a read batch: read them next loop pass */
    struct md_defer flush; /* queued whenever there may be output */
    struct md_outbuf out;  /* bytes the socket did not take yet (freed when empty) */
    bool closing;          /* close at the next flush */
    bool reset_on_close;   /* close with RST */
    bool linger;           /* a downstream: closed lingering (net/linger.h) */
    const char *close_reason;
    md_h2conn_cb *on_free;       /* the owner releases everything; called from the flush */
    uint64_t *rx_stat, *tx_stat; /* bytes counters (borrowed slots) */
    uint64_t *proto_err_stat;    /* protocol errors and floods (once per connection); may be NULL */
    bool proto_err_counted;
    struct md_h2guard *guard; /* a server's judge of what its client sends; NULL: none */
    int write_rc;    /* in a flush: -EAGAIN once the socket is full, or why writing failed */
    void *frame_buf; /* nghttp2's frame buffer, in c->w->pages; NULL if on the heap */
};

/* Converts |n| headers to an nghttp2 name/value array allocated in |a| (nghttp2
 * copies the bytes when the frame is submitted); fields whose values never
 * repeat (x-request-id, grpc-timeout) are not indexed by HPACK. Returns NULL
 * on ENOMEM. */
nghttp2_nv *md_h2_nv(struct md_arena *a, const struct md_hdr *h, size_t n);

/* Frames are handed over through nghttp2_session_send: the callback that
 * gathers them (both sides set it). */
void md_h2conn_set_send_callback(nghttp2_session_callbacks *cb);

/* The body of |h| (a half of |s|; NULL s: let go, the stream fails) as an
 * nghttp2 read callback gives it: what is queued, left where it is for
 * md_h2conn_send_data (NO_COPY); at its end EOF, or the trailers; a
 * non-zero |reset_after| is sent as RST_STREAM once the queue is empty. */
ssize_t md_h2conn_read_body(nghttp2_session *sess, int32_t id, struct md_stream *s,
                            struct md_half *h, size_t length, uint32_t *data_flags,
                            uint32_t reset_after);

/* A DATA frame whose payload the read callback left where it was
 * (NGHTTP2_DATA_FLAG_NO_COPY): its header and |length| bytes taken from |h|
 * of |s| go straight into the output (one copy less). For an
 * nghttp2_send_data_callback to return. */
int md_h2conn_send_data(struct md_h2conn *c, const nghttp2_frame *frame, const uint8_t *framehd,
                        size_t length, struct md_stream *s, struct md_half *h);

/* Session options both sides use: window updates are ours to send (they follow
 * the other side's progress) and the flood limits. Returns NULL on ENOMEM. */
nghttp2_option *md_h2_options(void);

/* The allocator for |c|'s session on worker |w| (nghttp2 copies it; sets
 * c->w, as the session allocates before md_h2conn_init). */
nghttp2_mem md_h2_mem(struct md_h2conn *c, struct md_worker *w);

/* An idle connection gives back the memory of nghttp2's frame buffer (it is
 * touched again by the next frame sent). */
void md_h2conn_quiesce(struct md_h2conn *c);

/* Sets up |c| around the connected non-blocking |sock| (taken) and starts
 * reading. The session must be set by the owner before the first flush. */
void md_h2conn_init(struct md_h2conn *c, struct md_worker *w, struct md_sock sock,
                    md_h2conn_cb *on_free);

/* Asks for a flush before the loop sleeps. */
static inline void md_h2conn_want_flush(struct md_h2conn *c)
{
    md_worker_defer(c->w, &c->flush);
}

/* Marks the connection for closing with |reason| (for logs); it is freed at
 * the next flush. */
void md_h2conn_close(struct md_h2conn *c, const char *reason, bool reset);

/* Counts a protocol error or flood on this connection (at most once). */
void md_h2conn_count_proto_error(struct md_h2conn *c);

/* Immediately stops watchers and closes the socket, without calling on_free
 * (the owner is tearing down). */
void md_h2conn_fini(struct md_h2conn *c);

#endif
