/* SPDX-License-Identifier: Apache-2.0 */
/* A protocol-neutral HTTP exchange: the request and the response, each as
 * headers, body bytes and trailers, passed between a downstream codec stream
 * ("ds" side) and an upstream codec stream ("us" side), with the router in
 * between. Codecs never see each other or a cluster: each side talks to the
 * stream through md_stream_* calls and is called back through its ops.
 *
 * Lifetime: the downstream side creates the stream; each side holds it until
 * it detaches (md_stream_detach_*); the stream is freed when both have. */
#ifndef MESHD_HTTP_STREAM_H
#define MESHD_HTTP_STREAM_H

#include "core/arena.h"
#include "core/bq.h"
#include "core/outbuf.h"
#include "http/hdrs.h"
#include "snapshot.h"

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

struct md_worker;

/* One direction's message. */
struct md_half {
    struct md_hdr *hdrs; /* headers, pseudo-headers first; in the arena */
    size_t n_hdrs, cap_hdrs;
    struct md_hdr *trailers;
    size_t n_trailers, cap_trailers;
    struct md_bq body;   /* bytes produced by one side, not yet taken by the other */
    bool headers_done;   /* the header block is complete */
    bool end;            /* everything was produced (END_STREAM seen) */
    bool headers_end;    /* END_STREAM came with the headers (no body, no trailers) */
    uint64_t body_bytes; /* produced so far */
    uint64_t taken;      /* consumed by the other side so far */
};

/* What a side offers the other. Called by stream.c only. */
struct md_stream_side_ops {
    /* Headers to send are ready in the half this side sends (response for ds,
     * request for us). */
    void (*headers_ready)(void *side);
    /* Body bytes, trailers or the end were queued for this side to send. */
    void (*data_ready)(void *side);
    /* The other side took |n| body bytes this side produced: open the window. */
    void (*consumed)(void *side, size_t n);
    /* Abandon the stream (reset with |h2_error|); the side is detached on
     * return and must not call md_stream_* for it again. */
    void (*reset)(void *side, uint32_t h2_error);
};

struct md_stream {
    struct md_worker *w;
    uint64_t id;
    struct md_arena arena;
    struct md_half req, resp;
    void *ds;
    const struct md_stream_side_ops *ds_ops;
    void *us;
    const struct md_stream_side_ops *us_ops;
    /* routing (router.c) */
    const struct md_snap_listener *listener;
    const char *peer_ip; /* downstream peer, for x-forwarded-for; owned by the ds codec */
    /* The downstream's TLS identities, owned by the ds codec's connection:
     * the client's verified SPIFFE ID and the one meshd presented to it.
     * NULL: plaintext, or no verified client certificate. */
    const char *peer_id;
    const char *local_id;
    const char *sni; /* the TLS server name the client sent, lower case; NULL: none */
    const struct md_snap_route *route;
    size_t cluster;
    bool grpc; /* content-type application/grpc* */
    /* An upgrade the client asked for (HTTP/1.1 Upgrade, or an HTTP/2
     * extended CONNECT's :protocol), lower case; NULL: none. Until routed, a
     * list "a,b" of what the client offers; the router narrows it to the one
     * token that goes upstream. Once the
     * upstream answers 101 (|upgraded|), the request and response bodies are
     * the tunnel's bytes each way, and each end is that direction's FIN. */
    const char *upgrade;
    size_t upgrade_len;
    bool upgraded;
    bool resp_started;         /* response headers were handed to the ds side */
    bool local_reply;          /* the response is made by meshd */
    const char *rbac_denied;   /* "listener" or "route": the RBAC that refused it; NULL: none */
    uint32_t reset_after_body; /* h2 error: reset downstream once the queued body is sent */
    /* Circuit breakers and outlier detection (upool.c, router.c), per attempt:
     * the breaker that refused it ("requests"...: x-meshd-overflowed), and
     * whether its outcome was reported for its endpoint. */
    const char *overflowed;
    bool outlier_noted;
    /* Times the request was sent again after its upstream refused it unseen
     * (HTTP/2 REFUSED_STREAM, by a reset or a GOAWAY above its id; an
     * HTTP/1.1 keep-alive connection closed before answering): at most
     * MAX_REFUSED_RETRIES (router.c). Not counted in |attempts|. */
    int connect_attempts;
    ev_tstamp started;
    ev_tstamp last_active;  /* body bytes moved either way */
    ev_tstamp deadline;     /* 0: none */
    ev_timer timer;         /* deadline */
    struct md_hdr *us_hdrs; /* request headers as sent upstream */
    size_t n_us_hdrs;
    /* The upstream endpoint of the current attempt (the pool's copy): valid
     * while the upstream side is attached. NULL: none yet. */
    const struct md_addr *us_ep;
    /* Retries (router.c): every request body byte is kept while it fits in
     * |keep_limit|, so that another attempt can send it again. */
    uint32_t keep_limit; /* 0: nothing kept */
    bool keep_lost;      /* the body outgrew the limit: no more attempts */
    struct md_outbuf kept;
    uint64_t req_acked; /* request bytes reported consumed to the ds side */
    uint32_t attempts;  /* upstream attempts made (the first is 1) */
    uint64_t *tried;    /* md_ep_key of failed attempts' endpoints (arena), for the next pick */
    uint32_t n_tried;
    ev_timer retry_timer; /* per-try timeout, or (send_on_timer) a backoff or fault delay */
    bool send_on_timer;
    bool retry_slot;         /* holds a max_retries slot of its cluster (router.c) */
    ev_tstamp hard_deadline; /* max_stream_duration: holds after an upgrade too; 0: none */
};

/* Creates a stream for the downstream side |ds|. Returns NULL on ENOMEM. */
struct md_stream *md_stream_new(struct md_worker *w, const struct md_snap_listener *l, void *ds,
                                const struct md_stream_side_ops *ds_ops);

/* Adds a header (copied into the arena) to |h| (trailers when
 * h->headers_done). Returns 0, MD_ENOMEM or MD_ETOOBIG. */
int md_stream_add_header(struct md_stream *s, struct md_half *h, const char *name, size_t name_len,
                         const char *value, size_t value_len);

/* Producer calls. |h| is s->req (downstream producing) or s->resp (upstream). */
int md_stream_body(struct md_stream *s, struct md_half *h, const void *data, size_t len);
void md_stream_end(struct md_stream *s, struct md_half *h);

/* Consumer call: takes up to |len| body bytes of |h| into |dst|, and tells
 * the producer (of request bytes, only those it was not told of before: a
 * replayed request is not acknowledged twice). Returns how many. */
size_t md_stream_take(struct md_stream *s, struct md_half *h, void *dst, size_t len);

/* Discards the request body queued so far and tells the producer it was
 * taken (an answer made without it). */
void md_stream_drop_request_body(struct md_stream *s);

/* Starts the request over for another attempt: the kept body queued again
 * from its first byte, the response half emptied. The upstream side must be
 * detached. Returns false when the body was not kept whole. */
bool md_stream_restart(struct md_stream *s);

/* Side notifications. */
void md_stream_notify_headers(struct md_stream *s, bool to_ds);
void md_stream_notify_data(struct md_stream *s, bool to_ds);

/* Detaches a side (no more callbacks to it). Frees the stream when both are
 * gone. Returns true when the stream was freed. */
bool md_stream_detach_ds(struct md_stream *s);
bool md_stream_detach_us(struct md_stream *s);

/* Frees |s| when neither side holds it any more (after the router reset
 * both). Returns true when it did. */
bool md_stream_free_if_orphan(struct md_stream *s);

/* Resets the upstream (md_stream_reset_us) or the downstream side, if
 * attached, with |h2_error| and detaches it. The stream is not freed here
 * (the other side's detach or md_stream_free_if_orphan frees it). */
void md_stream_reset_us(struct md_stream *s, uint32_t h2_error);
void md_stream_reset_ds(struct md_stream *s, uint32_t h2_error);

#endif
