/* SPDX-License-Identifier: Apache-2.0 */
/* Virtual host by :authority, first matching route, weighted cluster pick.
 * Linear scans: route tables are small and read-only, and the order is the
 * configuration's (first match wins). */
#include "router/route_match.h"

#include <string.h>

static unsigned char lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c;
}

/* |s| (any case) equals the lower-case |t| over |n| bytes. */
static bool eq_lower(const char *s, const char *t, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)s[i]) != (unsigned char)t[i])
            return false;
    return true;
}

/* The host part of an authority: "h:80" -> "h", "[::1]:80" -> "[::1]". */
static size_t host_len(const char *a, size_t n)
{
    if (n && a[0] == '[') {
        const char *close = memchr(a, ']', n);
        return close ? (size_t)(close - a) + 1 : n;
    }
    const char *colon = memchr(a, ':', n);
    return colon ? (size_t)(colon - a) : n;
}

const struct md_snap_vhost *md_route_match_vhost(const struct md_snap_route_config *rc,
                                                 const char *authority, size_t authority_len)
{
    size_t n = authority ? host_len(authority, authority_len) : 0;
    const struct md_snap_vhost *suffix = NULL, *prefix = NULL, *any = NULL;
    size_t suffix_len = 0, prefix_len = 0;
    for (size_t v = 0; v < rc->n_vhosts; v++) {
        const struct md_snap_vhost *vh = &rc->vhosts[v];
        for (size_t i = 0; i < vh->n_domains; i++) {
            const struct md_snap_domain *d = &vh->domains[i];
            switch (d->kind) {
            case MD_DOMAIN_EXACT:
                /* domains are unique in a route config: an exact hit is final */
                if (n == d->len && eq_lower(authority, d->text, n))
                    return vh;
                break;
            case MD_DOMAIN_SUFFIX:
                /* "*.a.com" needs a label before ".a.com": "a.com" is no match */
                if (n > d->len && d->len > suffix_len &&
                    eq_lower(authority + n - d->len, d->text, d->len)) {
                    suffix = vh;
                    suffix_len = d->len;
                }
                break;
            case MD_DOMAIN_PREFIX:
                if (n > d->len && d->len > prefix_len && eq_lower(authority, d->text, d->len)) {
                    prefix = vh;
                    prefix_len = d->len;
                }
                break;
            case MD_DOMAIN_ANY:
                if (!any)
                    any = vh;
                break;
            }
        }
    }
    return suffix ? suffix : prefix ? prefix : any;
}

bool md_route_match_path(enum md_path_match_kind kind, const char *path, size_t path_len,
                         bool grpc_any_method, const struct md_route_input *in)
{
    /* The query is never part of a match. */
    const char *q = in->path ? memchr(in->path, '?', in->path_len) : NULL;
    size_t n = q ? (size_t)(q - in->path) : in->path ? in->path_len : 0;
    switch (kind) {
    case MD_PATH_MATCH_PREFIX: return n >= path_len && memcmp(in->path, path, path_len) == 0;
    case MD_PATH_MATCH_EXACT: return n == path_len && memcmp(in->path, path, n) == 0;
    case MD_PATH_MATCH_GRPC:
        if (!in->grpc)
            return false;
        if (!grpc_any_method)
            return n == path_len && memcmp(in->path, path, n) == 0;
        /* "/svc/" + a non-empty method with no further '/' */
        return n > path_len && memcmp(in->path, path, path_len) == 0 &&
               !memchr(in->path + path_len, '/', n - path_len);
    }
    return false;
}

static bool header_matches(const struct md_snap_header_matcher *m, const struct md_route_input *in)
{
    for (size_t i = 0; i < in->n_hdrs; i++) {
        const struct md_hdr *h = &in->hdrs[i];
        if (h->name_len != m->name_len || !eq_lower(h->name, m->name, m->name_len))
            continue;
        if (m->kind != MD_HDR_MATCH_EXACT)
            return m->kind == MD_HDR_MATCH_PRESENT;
        /* a repeated header: any of its values may be the one */
        if (h->value_len == m->value_len && memcmp(h->value, m->value, m->value_len) == 0)
            return true;
    }
    return m->kind == MD_HDR_MATCH_ABSENT;
}

bool md_route_match_headers(const struct md_snap_header_matcher *m, size_t n,
                            const struct md_route_input *in)
{
    size_t k = 0;
    while (k < n && header_matches(&m[k], in))
        k++;
    return k == n;
}

static bool server_name_matches(const struct md_snap_route *r, const char *sni)
{
    if (r->n_server_names == 0)
        return true;
    for (size_t i = 0; sni && i < r->n_server_names; i++)
        if (strcmp(r->server_names[i], sni) == 0)
            return true;
    return false;
}

const struct md_snap_route *md_route_match_route(const struct md_snap_vhost *vh,
                                                 const struct md_route_input *in)
{
    for (size_t i = 0; i < vh->n_routes; i++) {
        const struct md_snap_route *r = &vh->routes[i];
        if (md_route_match_path(r->kind, r->path, r->path_len, r->grpc_any_method, in) &&
            md_route_match_headers(r->headers, r->n_headers, in) && server_name_matches(r, in->sni))
            return r;
    }
    return NULL;
}

size_t md_route_match_pick_cluster(const struct md_snap_route *r, uint32_t rnd)
{
    if (r->n_clusters == 1)
        return r->clusters[0].cluster;
    /* Scale rnd onto [0, total) by its high bits (multiply and shift, no
     * division): weak generators are weakest in their low bits. */
    uint32_t target = (uint32_t)(((uint64_t)rnd * r->total_weight) >> 32);
    uint32_t acc = 0;
    for (size_t i = 0; i < r->n_clusters; i++) {
        acc += r->clusters[i].weight; /* a zero weight never covers target */
        if (target < acc)
            return r->clusters[i].cluster;
    }
    return r->clusters[r->n_clusters - 1].cluster; /* not reached: target < total */
}
