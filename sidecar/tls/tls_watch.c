/* SPDX-License-Identifier: Apache-2.0 */
#include "tls/tls_watch.h"

#include "core/list.h"
#include "core/log.h"
#include "tls/tls_creds.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Quiet time after the last change before reloading: long enough for a
 * tool to write a certificate and then its key. */
#define SETTLE_S 0.3
/* How often the files are looked at. */
#define POLL_S 1.0

struct md_tls_watch;

/* What a file is now, through any symlinks (a Kubernetes secret volume
 * swaps a "..data" symlink; the paths themselves never change), with
 * nanosecond times (a rewrite within the same second counts). */
struct fingerprint {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime, ctime;
    bool missing;
};

/* One credential and its files. */
struct watched {
    struct md_tls_watch *tw;
    struct md_tls_creds *creds;
    char owner[96]; /* "listener:NAME" / "cluster:NAME" */
    const char *path[3];
    struct fingerprint seen[3];
    int n_files;
    ev_timer settle;
};

struct md_tls_watch {
    struct ev_loop *loop;
    struct watched *w;
    size_t n;
    ev_timer poll;
    uint64_t reloads, failures;
};

static void reload(struct watched *x, const char *why)
{
    char err[1024];
    if (md_tls_creds_reload(x->creds, err, sizeof(err)) < 0) {
        x->tw->failures++;
        MD_LOG(MD_LOG_ERROR, "tls_reload_failed",
               "owner=%s trigger=%s reason=\"%s\" (the previous certificate stays in use)",
               x->owner, why, err);
        return;
    }
    x->tw->reloads++;
    const struct md_tls_files *f = md_tls_creds_files(x->creds);
    MD_LOG(MD_LOG_INFO, "tls_reloaded", "owner=%s trigger=%s cert=%s", x->owner, why,
           f->cert_chain ? f->cert_chain : "-");
}

static void on_settled(struct ev_loop *loop, ev_timer *t, int revents)
{
    ev_timer_stop(loop, t); /* once per quiet period (ev_timer_again made it repeat) */
    reload(MD_CONTAINER_OF(t, struct watched, settle), "file_change");
}

static struct fingerprint fingerprint(const char *path)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return (struct fingerprint){.missing = true};
    return (struct fingerprint){st.st_dev, st.st_ino, st.st_size, st.st_mtim, st.st_ctim, false};
}

static bool same(const struct fingerprint *a, const struct fingerprint *b)
{
    return a->missing == b->missing && a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec &&
           a->ctime.tv_sec == b->ctime.tv_sec && a->ctime.tv_nsec == b->ctime.tv_nsec;
}

/* Every file of every credential: a change (re)starts its quiet period. */
static void on_poll(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct md_tls_watch *tw = MD_CONTAINER_OF(t, struct md_tls_watch, poll);
    for (size_t i = 0; i < tw->n; i++) {
        struct watched *x = &tw->w[i];
        for (int k = 0; k < x->n_files; k++) {
            struct fingerprint now = fingerprint(x->path[k]);
            if (same(&now, &x->seen[k]))
                continue;
            x->seen[k] = now;
            ev_timer_again(loop, &x->settle);
        }
    }
}

static void watch_file(struct watched *x, const char *path)
{
    if (!path)
        return;
    x->path[x->n_files] = path;
    x->seen[x->n_files++] = fingerprint(path);
}

static void add(struct md_tls_watch *tw, struct md_tls_creds *creds, const char *kind,
                const char *name)
{
    struct watched *x = &tw->w[tw->n++];
    x->tw = tw;
    x->creds = creds;
    snprintf(x->owner, sizeof(x->owner), "%s:%s", kind, name);
    ev_init(&x->settle, on_settled);
    x->settle.repeat = SETTLE_S;
    const struct md_tls_files *f = md_tls_creds_files(creds);
    watch_file(x, f->cert_chain);
    watch_file(x, f->private_key);
    watch_file(x, f->trusted_ca);
}

struct md_tls_watch *md_tls_watch_new(struct ev_loop *loop, const struct md_snapshot *snap)
{
    struct md_tls_watch *tw = calloc(1, sizeof(*tw));
    size_t most = snap->n_listeners + snap->n_clusters;
    if (tw)
        tw->w = calloc(most ? most : 1, sizeof(*tw->w));
    if (!tw || !tw->w) {
        MD_LOG(MD_LOG_ERROR, "out_of_memory", "what=tls_watch");
        free(tw);
        return NULL;
    }
    tw->loop = loop;
    for (size_t i = 0; i < snap->n_listeners; i++)
        if (snap->listeners[i].tls)
            add(tw, snap->listeners[i].tls->files.creds, "listener", snap->listeners[i].name);
    for (size_t i = 0; i < snap->n_clusters; i++)
        if (snap->clusters[i].tls)
            add(tw, snap->clusters[i].tls->files.creds, "cluster", snap->clusters[i].name);
    if (tw->n) { /* nothing to look at: no timer */
        ev_timer_init(&tw->poll, on_poll, POLL_S, POLL_S);
        ev_timer_start(loop, &tw->poll);
    }
    return tw;
}

void md_tls_watch_free(struct md_tls_watch *tw)
{
    if (!tw)
        return;
    ev_timer_stop(tw->loop, &tw->poll);
    for (size_t i = 0; i < tw->n; i++)
        ev_timer_stop(tw->loop, &tw->w[i].settle);
    free(tw->w);
    free(tw);
}

void md_tls_watch_reload_all(struct md_tls_watch *tw, const char *why)
{
    for (size_t i = 0; i < tw->n; i++) {
        ev_timer_stop(tw->loop, &tw->w[i].settle);
        reload(&tw->w[i], why);
    }
}

void md_tls_watch_counts(const struct md_tls_watch *tw, uint64_t *reloads, uint64_t *failures)
{
    *reloads = tw ? tw->reloads : 0;
    *failures = tw ? tw->failures : 0;
}
