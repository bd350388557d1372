/* SPDX-License-Identifier: Apache-2.0 */
/* What an HTTP/2 client may send a server that nghttp2 lets through with
 * meshd's options (no closed streams kept, no RFC 7540 priorities), judged
 * on the frame headers before nghttp2 reads them:
 *  - floods of frames that make no progress (CVE-2019-9518: empty DATA,
 *    WINDOW_UPDATE, PRIORITY, unknown types) spend a budget that progress
 *    (a new stream, DATA with payload either way) refills;
 *  - PRIORITY on stream 0 (RFC 9113 §6.3), a PRIORITY frame making a
 *    stream depend on itself (§5.3.1);
 *  - DATA or HEADERS on a stream the client already reset or ended (§5.1),
 *    remembered in 2 bits for each of the last MD_H2GUARD_WINDOW client
 *    stream ids (older ones are not judged).
 * nghttp2's on_begin_frame_callback is no help: it is not called for the
 * frames nghttp2 drops unseen (unknown types, PRIORITY, DATA on a stream it
 * no longer knows). The walk costs a few instructions per frame. */
#ifndef MESHD_CODEC_H2_GUARD_H
#define MESHD_CODEC_H2_GUARD_H

#include <stddef.h>
#include <stdint.h>

#define MD_H2GUARD_WINDOW 256 /* client stream ids remembered once closed */
#define MD_H2GUARD_BUDGET 1024 /* frames without progress in a row, at most */
#define MD_H2GUARD_REFILL 8    /* given back by each step of progress */

enum md_h2guard_verdict {
    MD_H2G_OK,
    MD_H2G_FLOOD,          /* connection error ENHANCE_YOUR_CALM */
    MD_H2G_PRIORITY_ZERO,  /* connection error PROTOCOL_ERROR */
    MD_H2G_SELF_DEPENDENT, /* stream error PROTOCOL_ERROR */
    MD_H2G_AFTER_RESET,    /* stream error STREAM_CLOSED */
    MD_H2G_AFTER_END,      /* connection error STREAM_CLOSED */
};

struct md_h2guard {
    uint32_t skip;     /* bytes still to pass: the preface, then a payload */
    uint8_t hd[13];    /* a frame header and the first payload bytes judged */
    uint8_t have, want;
    int32_t budget;    /* frames without progress still allowed */
    int32_t highest;   /* highest client stream id opened */
    uint8_t closed[MD_H2GUARD_WINDOW / 4]; /* 2 bits per id: enum in h2_guard.c */
};

/* The verdict on one frame and where it stands. */
struct md_h2guard_frame {
    enum md_h2guard_verdict verdict;
    uint8_t type;
    int32_t stream;
    size_t start; /* its offset in the bytes given (0: it began in earlier ones) */
};

/* A server session's guard; the client's preface comes first. */
void md_h2guard_init(struct md_h2guard *g);

/* Walks the |n| bytes at |p| (the next input, in order). Stops after the
 * header of a frame with a verdict other than OK: returns the bytes walked
 * and fills |f|; returns |n| when all passed (f->verdict OK). The frames
 * before f->start must reach nghttp2 before the verdict is acted on. */
size_t md_h2guard_scan(struct md_h2guard *g, const uint8_t *p, size_t n,
                       struct md_h2guard_frame *f);

/* Progress that refills the budget (a DATA frame of an answer sent). */
static inline void md_h2guard_progress(struct md_h2guard *g)
{
    g->budget += MD_H2GUARD_REFILL;
    if (g->budget > MD_H2GUARD_BUDGET)
        g->budget = MD_H2GUARD_BUDGET;
}

/* We reset |stream| (RST_STREAM sent): what the client sends on it from now
 * on may have crossed ours and is ignored (§5.1). */
void md_h2guard_local_reset(struct md_h2guard *g, int32_t stream);

#endif
