/* SPDX-License-Identifier: Apache-2.0 */
#include "codec/h2_guard.h"

#include <stdbool.h>
#include <string.h>

#define PREFACE_LEN 24 /* RFC 9113 §3.4 */
#define HDLEN 9

enum { DATA, HEADERS, PRIORITY, RST_STREAM, WINDOW_UPDATE = 8, FIRST_UNKNOWN = 10 };
enum { END_STREAM = 0x1, PADDED = 0x8 };

/* What the client did to a stream of the window (closed[]). */
enum { OPEN, ENDED, RESET, LOCAL_RESET };

void md_h2guard_init(struct md_h2guard *g)
{
    memset(g, 0, sizeof(*g));
    g->skip = PREFACE_LEN;
    g->want = HDLEN;
    g->budget = MD_H2GUARD_BUDGET;
}

static uint32_t be31(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]) & 0x7fffffffu;
}

static bool in_window(const struct md_h2guard *g, int32_t id)
{
    return (id & 1) && id <= g->highest && g->highest - id < 2 * MD_H2GUARD_WINDOW;
}

static unsigned state(const struct md_h2guard *g, int32_t id)
{
    unsigned i = ((uint32_t)id >> 1) % MD_H2GUARD_WINDOW;
    return (g->closed[i / 4] >> (i % 4 * 2)) & 3u;
}

static void set_state(struct md_h2guard *g, int32_t id, unsigned st)
{
    unsigned i = ((uint32_t)id >> 1) % MD_H2GUARD_WINDOW, shift = i % 4 * 2;
    g->closed[i / 4] = (uint8_t)((g->closed[i / 4] & ~(3u << shift)) | st << shift);
}

/* A new client stream: the slots of the ids up to it start over. */
static void open_stream(struct md_h2guard *g, int32_t id)
{
    int32_t from = g->highest + 2, low = id - 2 * (MD_H2GUARD_WINDOW - 1);
    for (uint32_t i = (uint32_t)(from > low ? from : low); i <= (uint32_t)id; i += 2)
        set_state(g, (int32_t)i, OPEN); /* (unsigned: id may be 2^31-1) */
    g->highest = id;
}

void md_h2guard_local_reset(struct md_h2guard *g, int32_t stream)
{
    if (in_window(g, stream) && state(g, stream) == OPEN)
        set_state(g, stream, LOCAL_RESET);
}

/* Payload bytes judged with the header: DATA's pad length, PRIORITY's
 * dependency. (A HEADERS frame depending on itself is nghttp2's: a
 * connection error PROTOCOL_ERROR, which §5.4.1 allows for a stream error.) */
static unsigned extra(uint8_t type, uint8_t flags)
{
    if (type == DATA)
        return flags & PADDED ? 1 : 0;
    return type == PRIORITY ? 4 : 0;
}

/* DATA or HEADERS on a stream of the window the client reset or ended
 * before (§5.1). */
static inline enum md_h2guard_verdict after_close(struct md_h2guard *g, int32_t id, uint8_t flags)
{
    if (!in_window(g, id))
        return MD_H2G_OK;
    unsigned st = state(g, id);
    if (st == RESET)
        return MD_H2G_AFTER_RESET;
    if (st == ENDED)
        return MD_H2G_AFTER_END;
    if (st == OPEN && (flags & END_STREAM))
        set_state(g, id, ENDED);
    return MD_H2G_OK;
}

static enum md_h2guard_verdict judge(struct md_h2guard *g, uint32_t len, uint8_t type,
                                     uint8_t flags, int32_t id, const uint8_t *x, unsigned nx)
{
    enum md_h2guard_verdict v = MD_H2G_OK;
    bool idle = false;
    switch (type) {
    case DATA: {
        uint32_t pad = nx ? x[0] + 1u : 0;
        if (len > pad)
            md_h2guard_progress(g);
        else if (!(flags & END_STREAM))
            idle = true;
        v = after_close(g, id, flags);
        break;
    }
    case HEADERS:
        md_h2guard_progress(g);
        if ((id & 1) && id > g->highest) {
            open_stream(g, id);
            if (flags & END_STREAM)
                set_state(g, id, ENDED);
        } else {
            v = after_close(g, id, flags);
        }
        break;
    case PRIORITY:
        if (id == 0)
            return MD_H2G_PRIORITY_ZERO;
        if (nx == 4 && be31(x) == (uint32_t)id)
            return MD_H2G_SELF_DEPENDENT;
        idle = true;
        break;
    case RST_STREAM:
        if (in_window(g, id) && state(g, id) == OPEN)
            set_state(g, id, RESET);
        break;
    case WINDOW_UPDATE: idle = true; break;
    default: idle = type >= FIRST_UNKNOWN; break; /* the rest: nghttp2's limits */
    }
    if (idle && --g->budget < 0)
        return MD_H2G_FLOOD;
    return v;
}

/* A frame's header |h| (and the |nx| payload bytes |extra| asks for) is
 * complete: its verdict in |f|, and the rest of the frame to skip. */
static enum md_h2guard_verdict judge_header(struct md_h2guard *g, const uint8_t *h, unsigned nx,
                                            struct md_h2guard_frame *f)
{
    uint32_t len = (uint32_t)h[0] << 16 | (uint32_t)h[1] << 8 | h[2];
    g->skip = len - nx;
    f->type = h[3];
    f->stream = (int32_t)be31(h + 5);
    return f->verdict = judge(g, len, h[3], h[4], f->stream, h + HDLEN, nx);
}

static unsigned extra_of(const uint8_t *h)
{
    uint32_t len = (uint32_t)h[0] << 16 | (uint32_t)h[1] << 8 | h[2];
    unsigned x = extra(h[3], h[4]);
    return x > len ? len : x; /* nghttp2 refuses the frame */
}

size_t md_h2guard_scan(struct md_h2guard *g, const uint8_t *p, size_t n,
                       struct md_h2guard_frame *f)
{
    size_t i = 0, start = 0;
    enum md_h2guard_verdict v = MD_H2G_OK;
    f->verdict = MD_H2G_OK;
    while (i < n) {
        if (g->skip) {
            size_t k = n - i < g->skip ? n - i : g->skip;
            g->skip -= (uint32_t)k;
            i += k;
            continue;
        }
        if (g->have == 0 && n - i >= sizeof(g->hd)) { /* whole in |p|: no copy */
            const uint8_t *h = p + i;
            start = i;
            unsigned nx = extra_of(h);
            i += HDLEN + nx;
            v = judge_header(g, h, nx, f);
            if (g->skip <= n - i) { /* the payload is here too */
                i += g->skip;
                g->skip = 0;
            }
        } else {
            if (g->have == 0)
                start = i;
            size_t k = n - i < (size_t)(g->want - g->have) ? n - i : (size_t)(g->want - g->have);
            memcpy(g->hd + g->have, p + i, k);
            g->have += (uint8_t)k;
            i += k;
            if (g->have < g->want)
                break;
            unsigned nx = g->want - HDLEN;
            if (g->want == HDLEN && (nx = extra_of(g->hd)) != 0) {
                g->want = (uint8_t)(HDLEN + nx);
                continue;
            }
            v = judge_header(g, g->hd, nx, f);
            g->have = 0;
            g->want = HDLEN;
        }
        if (v != MD_H2G_OK) {
            f->start = start;
            return i;
        }
    }
    return n;
}
