/* SPDX-License-Identifier: Apache-2.0 */
/* DNS and DNS_SRV discovery: one c-ares channel driven by the control loop. */
#include "discovery/dns.h"

#include "core/err.h"
#include "core/hash.h"
#include "core/list.h"
#include "core/log.h"

#include <ares.h>
#include <arpa/nameser.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A failure streak logs its first failure, then at most this often. */
#define FAIL_LOG_EVERY_S 30.0

/* One c-ares socket on the loop. */
struct dns_sock {
    ev_io io;
    struct dns_sock *next;
};

/* One name resolved to addresses: a DNS cluster's name, or an SRV target. */
struct target {
    struct resolution *res;
    char *host; /* owned */
    uint16_t port;
    uint32_t weight, priority;
};

/* One DNS or DNS_SRV cluster; the fields under "in flight" live from a
 * query until its whole answer is applied (or refused). */
struct resolution {
    struct md_dns *dns;
    const struct md_snap_cluster *cl; /* borrowed from the snapshot */
    ev_timer refresh;
    /* in flight */
    size_t pending; /* callbacks still to come */
    struct target *targets;
    size_t n_targets;
    struct md_snap_endpoint *eps;
    size_t n_eps, cap_eps;
    size_t cut;          /* addresses beyond MD_SNAP_MAX_ENDPOINTS */
    size_t skipped;      /* SRV targets without any address */
    uint32_t ttl;        /* shortest TTL seen, seconds */
    int hard;            /* first error that fails the whole answer, or ARES_SUCCESS */
    int soft;            /* first "no such name / no address", or ARES_SUCCESS */
    char fail_name[128]; /* escaped name the error is about */
    const char *fail_query;
    /* across resolutions */
    uint64_t streak; /* failures in a row */
    ev_tstamp last_fail_log;
    size_t last_skipped;
};

struct md_dns {
    struct ev_loop *loop;          /* borrowed */
    struct md_clusters *cs;        /* borrowed */
    const struct md_snap_dns *cfg; /* borrowed */
    ares_channel channel;
    bool have_channel, lib_init;
    bool closing; /* ares_destroy runs: callbacks must not touch anything */
    ev_timer timeout;
    struct dns_sock *socks;
    size_t n_res;
    struct resolution *res;
    uint64_t rng; /* refresh jitter */
};

static void arm_timeout(struct md_dns *dns)
{
    struct timeval tv;
    ev_timer_stop(dns->loop, &dns->timeout);
    if (!ares_timeout(dns->channel, NULL, &tv))
        return; /* nothing in flight */
    ev_timer_set(&dns->timeout, (double)tv.tv_sec + (double)tv.tv_usec / 1e6, 0.);
    ev_timer_start(dns->loop, &dns->timeout);
}

static void on_ares_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct md_dns *dns = MD_CONTAINER_OF(t, struct md_dns, timeout);
    ares_process_fd(dns->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    arm_timeout(dns);
}

static void on_sock_io(struct ev_loop *loop, ev_io *w, int revents)
{
    struct md_dns *dns = w->data;
    ares_process_fd(dns->channel, revents & EV_READ ? w->fd : ARES_SOCKET_BAD,
                    revents & EV_WRITE ? w->fd : ARES_SOCKET_BAD);
    arm_timeout(dns);
}

/* ARES_OPT_SOCK_STATE_CB: c-ares says which of its sockets to watch. */
static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    struct md_dns *dns = data;
    struct dns_sock **pp = &dns->socks;
    while (*pp && (*pp)->io.fd != fd)
        pp = &(*pp)->next;
    struct dns_sock *s = *pp;
    if (!readable && !writable) {
        if (s) {
            ev_io_stop(dns->loop, &s->io);
            *pp = s->next;
            free(s);
        }
        return;
    }
    if (!s) {
        if (!(s = calloc(1, sizeof(*s)))) {
            /* The query then ends by its timeout, which the timer still drives. */
            MD_LOG(MD_LOG_ERROR, "dns_socket_unwatched", "fd=%d err=%s", (int)fd,
                   md_err_str(MD_ENOMEM));
            return;
        }
        ev_init(&s->io, on_sock_io);
        s->io.data = dns;
        s->next = dns->socks;
        dns->socks = s;
    }
    ev_io_stop(dns->loop, &s->io);
    ev_io_set(&s->io, fd, (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0));
    ev_io_start(dns->loop, &s->io);
}

static void clear_attempt(struct resolution *res)
{
    for (size_t i = 0; i < res->n_targets; i++)
        free(res->targets[i].host);
    free(res->targets);
    free(res->eps);
    res->targets = NULL;
    res->eps = NULL;
    res->n_targets = res->n_eps = res->cap_eps = 0;
}

static void note_error(struct resolution *res, int status, const char *query, const char *name)
{
    bool soft = status == ARES_ENOTFOUND || status == ARES_ENODATA;
    int *slot = soft ? &res->soft : &res->hard;
    if (*slot != ARES_SUCCESS)
        return; /* the first one tells the story */
    *slot = status;
    if (soft && res->hard != ARES_SUCCESS)
        return;
    res->fail_query = query;
    md_log_escape(res->fail_name, sizeof(res->fail_name), name, strlen(name));
}

static uint32_t clamp_ms(uint64_t ms, const struct md_snap_dns *cfg)
{
    if (ms < cfg->min_refresh_ms)
        return cfg->min_refresh_ms;
    return ms > cfg->max_refresh_ms ? cfg->max_refresh_ms : (uint32_t)ms;
}

uint32_t md_dns_refresh_ms(const struct md_snap_dns *cfg, bool failed, uint32_t ttl_s, uint64_t r)
{
    if (failed) /* retry soon, but not all at once */
        return cfg->min_refresh_ms + (uint32_t)(r % (cfg->min_refresh_ms / 8 + 1));
    uint32_t ms = clamp_ms((uint64_t)ttl_s * 1000u, cfg);
    ms -= (uint32_t)(r % (ms / 8 + 1)); /* before the TTL runs out, never after */
    return ms < cfg->min_refresh_ms ? cfg->min_refresh_ms : ms;
}

/* Applies (or refuses) the whole answer and plans the next resolution. */
static void finish(struct resolution *res)
{
    struct md_dns *dns = res->dns;
    const struct md_snap_cluster *cl = res->cl;
    struct md_cluster_ctl_stats *st = &dns->cs->stats[cl->idx];
    uint64_t r = md_xorshift64(&dns->rng);
    uint32_t next_ms = md_dns_refresh_ms(dns->cfg, true, 0, r); /* unless it worked */
    /* Zero addresses is a failure too: an empty set would turn every request
     * into a 503, while the last good set may well still serve. */
    int err = res->hard != ARES_SUCCESS ? res->hard
              : res->n_eps == 0         ? (res->soft != ARES_SUCCESS ? res->soft : ARES_ENODATA)
                                        : ARES_SUCCESS;
    if (err != ARES_SUCCESS) {
        st->dns_failure++;
        res->streak++;
        ev_tstamp now = ev_now(dns->loop);
        if (res->streak == 1 || now - res->last_fail_log >= FAIL_LOG_EVERY_S) {
            const struct md_epset *cur = dns->cs->cur[cl->idx];
            MD_LOG(MD_LOG_WARN, "dns_failure",
                   "cluster=%s query=%s name=\"%s\" err=\"%s\" failures=%llu kept_endpoints=%zu "
                   "retry_ms=%u",
                   cl->name, res->fail_query ? res->fail_query : "-",
                   res->fail_query ? res->fail_name : cl->dns_name,
                   res->n_eps == 0 && res->hard == ARES_SUCCESS && res->soft == ARES_SUCCESS
                       ? "no addresses"
                       : ares_strerror(err),
                   (unsigned long long)res->streak, cur ? cur->n : 0, next_ms);
            res->last_fail_log = now;
        }
    } else {
        st->dns_resolve++;
        if (res->streak)
            MD_LOG(MD_LOG_INFO, "dns_recovered", "cluster=%s name=%s failures=%llu", cl->name,
                   cl->dns_name, (unsigned long long)res->streak);
        res->streak = 0;
        if (res->cut)
            MD_LOG(MD_LOG_WARN, "dns_endpoints_cut", "cluster=%s name=%s kept=%zu cut=%zu",
                   cl->name, cl->dns_name, res->n_eps, res->cut);
        if (res->skipped != res->last_skipped)
            MD_LOG(MD_LOG_WARN, "dns_srv_targets_skipped",
                   "cluster=%s name=%s skipped=%zu reason=\"no address\"", cl->name, cl->dns_name,
                   res->skipped);
        res->last_skipped = res->skipped;
        int rc = md_clusters_update(dns->cs, cl->idx, res->eps, res->n_eps);
        if (rc < 0)
            MD_LOG(MD_LOG_ERROR, "dns_update_failed", "cluster=%s err=%s", cl->name,
                   md_err_str(rc));
        else
            next_ms = md_dns_refresh_ms(dns->cfg, false, res->ttl, r);
    }
    clear_attempt(res);
    ev_timer_set(&res->refresh, next_ms / 1000.0, 0.);
    ev_timer_start(dns->loop, &res->refresh);
}

static void done_one(struct resolution *res)
{
    if (--res->pending == 0)
        finish(res);
}

static int add_endpoint(struct resolution *res, const struct target *t,
                        const struct ares_addrinfo_node *node)
{
    struct md_snap_endpoint ep;
    memset(&ep, 0, sizeof(ep)); /* epsets compare whole sockaddrs: no stray bytes */
    if (node->ai_family == AF_INET && node->ai_addrlen >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ep.addr.ss;
        sin->sin_family = AF_INET;
        sin->sin_addr = ((const struct sockaddr_in *)node->ai_addr)->sin_addr;
        sin->sin_port = htons(t->port);
        ep.addr.len = sizeof(*sin);
    } else if (node->ai_family == AF_INET6 && node->ai_addrlen >= sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *src = (const struct sockaddr_in6 *)node->ai_addr;
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ep.addr.ss;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_addr = src->sin6_addr;
        sin6->sin6_scope_id = src->sin6_scope_id;
        sin6->sin6_port = htons(t->port);
        ep.addr.len = sizeof(*sin6);
    } else {
        return 0;
    }
    /* O(n) per address, n <= MD_SNAP_MAX_ENDPOINTS. Two targets may share an
     * address and port: one endpoint, at the better priority. */
    for (size_t i = 0; i < res->n_eps; i++) {
        struct md_snap_endpoint *e = &res->eps[i];
        if (md_addr_equal(&e->addr, &ep.addr)) {
            if (t->priority < e->priority) {
                e->priority = t->priority;
                e->weight = t->weight;
            }
            return 0;
        }
    }
    if (res->n_eps == MD_SNAP_MAX_ENDPOINTS) {
        res->cut++;
        return 0;
    }
    if (res->n_eps == res->cap_eps) {
        size_t cap = res->cap_eps ? res->cap_eps * 2 : 8;
        if (cap > MD_SNAP_MAX_ENDPOINTS)
            cap = MD_SNAP_MAX_ENDPOINTS;
        struct md_snap_endpoint *eps = realloc(res->eps, cap * sizeof(*eps));
        if (!eps)
            return MD_ENOMEM;
        res->eps = eps;
        res->cap_eps = cap;
    }
    ep.weight = t->weight;
    ep.priority = t->priority;
    md_addr_format((const struct sockaddr *)&ep.addr.ss, ep.label);
    res->eps[res->n_eps++] = ep;
    return 0;
}

static uint32_t min_ttl(uint32_t a, int ttl)
{
    uint32_t b = ttl < 0 ? 0 : (uint32_t)ttl;
    return b < a ? b : a;
}

static void on_addrinfo(void *arg, int status, int timeouts, struct ares_addrinfo *ai)
{
    struct target *t = arg;
    struct resolution *res = t->res;
    if (res->dns->closing) {
        if (ai)
            ares_freeaddrinfo(ai);
        return;
    }
    if (status == ARES_SUCCESS && ai) {
        for (const struct ares_addrinfo_node *n = ai->nodes; n; n = n->ai_next) {
            res->ttl = min_ttl(res->ttl, n->ai_ttl);
            if (add_endpoint(res, t, n) < 0) {
                note_error(res, ARES_ENOMEM, "A/AAAA", t->host);
                break;
            }
        }
        for (const struct ares_addrinfo_cname *c = ai->cnames; c; c = c->next)
            res->ttl = min_ttl(res->ttl, c->ttl);
        if (!ai->nodes)
            res->skipped++;
    } else {
        note_error(res, status, "A/AAAA", t->host);
        if (status == ARES_ENOTFOUND || status == ARES_ENODATA)
            res->skipped++;
    }
    if (ai)
        ares_freeaddrinfo(ai);
    done_one(res);
}

static void lookup(struct target *t)
{
    /* NOSORT: RFC 6724 sorting connects a UDP socket per address, and the
     * balancer does not care about order (epsets sort anyway). */
    struct ares_addrinfo_hints hints = {
        .ai_flags = ARES_AI_NOSORT, .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    ares_getaddrinfo(t->res->dns->channel, t->host, NULL, &hints, on_addrinfo, t);
}

/* c-ares' SRV parser drops TTLs, so walk the sections ourselves (RFC 1035
 * §4.1), every length checked against |alen|. */
uint32_t md_dns_answer_min_ttl(const unsigned char *abuf, int alen, int type)
{
    uint32_t min = UINT32_MAX;
    if (alen < HFIXEDSZ)
        return min;
    unsigned qd = (unsigned)abuf[4] << 8 | abuf[5], an = (unsigned)abuf[6] << 8 | abuf[7];
    const unsigned char *p = abuf + HFIXEDSZ, *end = abuf + alen;
    for (unsigned i = 0; i < qd + an; i++) {
        char *name;
        long len;
        if (ares_expand_name(p, abuf, alen, &name, &len) != ARES_SUCCESS)
            return min;
        ares_free_string(name);
        p += len;
        if (i < qd) {
            if (end - p < QFIXEDSZ)
                return min;
            p += QFIXEDSZ;
            continue;
        }
        if (end - p < RRFIXEDSZ)
            return min;
        unsigned rtype = (unsigned)p[0] << 8 | p[1];
        uint32_t ttl = (uint32_t)p[4] << 24 | (uint32_t)p[5] << 16 | (uint32_t)p[6] << 8 | p[7];
        long rdlen = (long)p[8] << 8 | p[9];
        if (ttl > INT32_MAX)
            ttl = 0; /* RFC 2181 §8: a TTL with the top bit set is zero */
        if ((int)rtype == type && ttl < min)
            min = ttl;
        if (end - p - RRFIXEDSZ < rdlen)
            return min;
        p += RRFIXEDSZ + rdlen;
    }
    return min;
}

static void on_srv(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct resolution *res = arg;
    if (res->dns->closing)
        return;
    struct ares_srv_reply *srv = NULL;
    if (status == ARES_SUCCESS)
        status = ares_parse_srv_reply(abuf, alen, &srv);
    if (status != ARES_SUCCESS) {
        note_error(res, status, "SRV", res->cl->dns_name);
        done_one(res);
        return;
    }
    size_t n = 0;
    for (const struct ares_srv_reply *r = srv; r; r = r->next)
        n++;
    /* Each target gives an endpoint at least, so more would be cut anyway. */
    if (n > MD_SNAP_MAX_ENDPOINTS)
        n = MD_SNAP_MAX_ENDPOINTS;
    res->targets = calloc(n ? n : 1, sizeof(*res->targets));
    if (!res->targets) {
        ares_free_data(srv);
        note_error(res, ARES_ENOMEM, "SRV", res->cl->dns_name);
        done_one(res);
        return;
    }
    for (const struct ares_srv_reply *r = srv; r && res->n_targets < n; r = r->next) {
        /* RFC 2782: a target of "." means the service is not offered there. */
        if (!r->host || !r->host[0] || strcmp(r->host, ".") == 0)
            continue;
        struct target *t = &res->targets[res->n_targets];
        /* RFC 2782: a target is an absolute name; the trailing dot keeps
         * search domains (Kubernetes' ndots:5) from being tried on it. */
        size_t hl = strlen(r->host);
        if (asprintf(&t->host, "%s%s", r->host, r->host[hl - 1] == '.' ? "" : ".") < 0)
            t->host = NULL;
        if (!t->host) {
            note_error(res, ARES_ENOMEM, "SRV", res->cl->dns_name);
            break;
        }
        t->res = res;
        t->port = r->port;
        t->weight = r->weight ? r->weight : 1;
        t->priority = r->priority; /* lower first, as endpoint priority levels */
        res->n_targets++;
    }
    ares_free_data(srv);
    uint32_t ttl = md_dns_answer_min_ttl(abuf, alen, T_SRV);
    if (ttl < res->ttl)
        res->ttl = ttl;
    if (res->n_targets == 0)
        note_error(res, ARES_ENODATA, "SRV", res->cl->dns_name);
    /* This callback's own count stays in |pending| until every lookup has
     * started, so an answer that comes back at once cannot finish early. */
    if (res->hard == ARES_SUCCESS) {
        res->pending += res->n_targets;
        for (size_t i = 0; i < res->n_targets; i++)
            lookup(&res->targets[i]);
    }
    done_one(res);
}

static void resolve(struct resolution *res)
{
    struct md_dns *dns = res->dns;
    const struct md_snap_cluster *cl = res->cl;
    res->ttl = UINT32_MAX;
    res->hard = res->soft = ARES_SUCCESS;
    res->fail_query = NULL;
    res->cut = res->skipped = 0;
    res->pending = 1;
    if (cl->discovery == MD_DISCOVERY_DNS_SRV) {
        ares_search(dns->channel, cl->dns_name, C_IN, T_SRV, on_srv, res);
        return;
    }
    res->targets = calloc(1, sizeof(*res->targets));
    char *host = strdup(cl->dns_name);
    if (!res->targets || !host) {
        free(host);
        note_error(res, ARES_ENOMEM, "A/AAAA", cl->dns_name);
        done_one(res);
        return;
    }
    res->targets[0] =
        (struct target){.res = res, .host = host, .port = cl->dns_port, .weight = 1, .priority = 0};
    res->n_targets = 1;
    lookup(&res->targets[0]);
}

static void on_refresh(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct resolution *res = MD_CONTAINER_OF(t, struct resolution, refresh);
    resolve(res);
    arm_timeout(res->dns);
}

static int set_servers(struct md_dns *dns)
{
    size_t n = dns->cfg->n_resolvers;
    struct ares_addr_port_node *nodes = calloc(n, sizeof(*nodes));
    if (!nodes)
        return MD_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const struct sockaddr *sa = (const struct sockaddr *)&dns->cfg->resolvers[i].ss;
        struct ares_addr_port_node *node = &nodes[i];
        node->next = i + 1 < n ? &nodes[i + 1] : NULL;
        node->family = sa->sa_family;
        int port;
        if (sa->sa_family == AF_INET6) {
            const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
            memcpy(&node->addr.addr6, &sin6->sin6_addr, sizeof(node->addr.addr6));
            port = ntohs(sin6->sin6_port);
        } else {
            const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
            node->addr.addr4 = sin->sin_addr;
            port = ntohs(sin->sin_port);
        }
        node->udp_port = node->tcp_port = port ? port : NAMESERVER_PORT;
    }
    int rc = ares_set_servers_ports(dns->channel, nodes);
    free(nodes);
    if (rc != ARES_SUCCESS) {
        MD_LOG(MD_LOG_ERROR, "dns_init_failed", "what=servers err=\"%s\"", ares_strerror(rc));
        return rc == ARES_ENOMEM ? MD_ENOMEM : MD_EINVAL;
    }
    return 0;
}

static int init_channel(struct md_dns *dns)
{
    int rc = ares_library_init(ARES_LIB_INIT_ALL);
    if (rc == ARES_SUCCESS) {
        dns->lib_init = true;
        struct ares_options o = {
            .sock_state_cb = on_sock_state,
            .sock_state_cb_data = dns,
            .timeout = (int)dns->cfg->query_timeout_ms,
            .tries = 2,
        };
        rc = ares_init_options(&dns->channel, &o,
                               ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES);
    }
    if (rc != ARES_SUCCESS) {
        MD_LOG(MD_LOG_ERROR, "dns_init_failed", "what=channel err=\"%s\"", ares_strerror(rc));
        return rc == ARES_ENOMEM ? MD_ENOMEM : MD_EINVAL;
    }
    dns->have_channel = true;
    return dns->cfg->n_resolvers ? set_servers(dns) : 0;
}

struct md_dns *md_dns_new(struct ev_loop *loop, const struct md_snapshot *snap,
                          struct md_clusters *cs, int *err)
{
    struct md_dns *dns = calloc(1, sizeof(*dns));
    if (!dns) {
        *err = MD_ENOMEM;
        return NULL;
    }
    dns->loop = loop;
    dns->cs = cs;
    dns->cfg = &snap->dns;
    dns->rng = md_hash_mix((uint64_t)getpid() ^ (uint64_t)(uintptr_t)dns) | 1;
    ev_init(&dns->timeout, on_ares_timeout);
    size_t n = 0;
    for (size_t i = 0; i < snap->n_clusters; i++)
        n += snap->clusters[i].discovery != MD_DISCOVERY_STATIC;
    if (n == 0)
        return dns;
    if (!(dns->res = calloc(n, sizeof(*dns->res)))) {
        *err = MD_ENOMEM;
        goto fail;
    }
    if ((*err = init_channel(dns)) < 0)
        goto fail;
    for (size_t i = 0; i < snap->n_clusters; i++) {
        if (snap->clusters[i].discovery == MD_DISCOVERY_STATIC)
            continue;
        struct resolution *res = &dns->res[dns->n_res++];
        res->dns = dns;
        res->cl = &snap->clusters[i];
        ev_init(&res->refresh, on_refresh);
    }
    /* Every cluster's first query leaves now; until its answer the cluster
     * has no endpoints (requests get 503 "no endpoint"). */
    for (size_t i = 0; i < dns->n_res; i++)
        resolve(&dns->res[i]);
    arm_timeout(dns);
    return dns;
fail:
    md_dns_free(dns);
    return NULL;
}

void md_dns_free(struct md_dns *dns)
{
    if (!dns)
        return;
    dns->closing = true;
    for (size_t i = 0; i < dns->n_res; i++)
        ev_timer_stop(dns->loop, &dns->res[i].refresh);
    /* Calls back every query in flight with ARES_EDESTRUCTION (ignored, as
     * |closing| says) and closes its sockets through on_sock_state. */
    if (dns->have_channel)
        ares_destroy(dns->channel);
    while (dns->socks) {
        struct dns_sock *s = dns->socks;
        dns->socks = s->next;
        ev_io_stop(dns->loop, &s->io);
        free(s);
    }
    ev_timer_stop(dns->loop, &dns->timeout);
    for (size_t i = 0; i < dns->n_res; i++)
        clear_attempt(&dns->res[i]);
    free(dns->res);
    if (dns->lib_init)
        ares_library_cleanup();
    free(dns);
}
