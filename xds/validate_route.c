/* SPDX-License-Identifier: Apache-2.0 */
/* Route configuration checks: virtual hosts and their domains, routes, match
 * rules, actions and header edits. Fields are paths inside the route config
 * ("virtual_hosts[0].routes[2].match.prefix"). */
#include "validate.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_ROUTE_TIMEOUT_MS (24u * 3600u * 1000u)
#define MAX_TOTAL_WEIGHT 1000000u
#define FIELD_LEN 256

/* Connection-specific headers: RFC 9113 §8.2.2 makes a message carrying them
 * malformed, so a route must neither add nor expect to remove them. */
static const char *const hop_by_hop[] = {
    "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te",
};

static bool is_alpha(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* RFC 9110 §5.6.2 tchar. */
static bool is_tchar(unsigned char c)
{
    return is_alpha(c) || is_digit(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static unsigned char lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c;
}

/* "'x'" for a printable byte, "\xNN" otherwise: error lines stay one line. */
static const char *show_char(char buf[8], unsigned char c)
{
    if (c > 0x20 && c < 0x7f)
        snprintf(buf, 8, "'%c'", c);
    else
        snprintf(buf, 8, "\\x%02x", c);
    return buf;
}

static void fieldf(char *f, const char *prefix, const char *suffix)
{
    snprintf(f, FIELD_LEN, "%s.%s", prefix, suffix);
}

void md_validate_header_name(struct md_errlist *el, const char *res, const char *field,
                             const char *name, const char *verb, bool forbid_hop_by_hop)
{
    char cb[8];
    if (!name[0]) {
        md_errlist_add(el, res, field, "required");
        return;
    }
    if (name[0] == ':') {
        md_errlist_add(el, res, field, "\"%.80s\": pseudo-headers cannot be %s here", name, verb);
        return;
    }
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        if (*p >= 'A' && *p <= 'Z') {
            md_errlist_add(el, res, field, "\"%.80s\" must be lower case (HTTP/2 header names are)",
                           name);
            return;
        }
        if (!is_tchar(*p)) {
            md_errlist_add(el, res, field,
                           "\"%.80s\": character %s is not allowed in a header name", name,
                           show_char(cb, *p));
            return;
        }
    }
    for (size_t i = 0; forbid_hop_by_hop && i < sizeof(hop_by_hop) / sizeof(hop_by_hop[0]); i++) {
        if (strcmp(name, hop_by_hop[i]) == 0) {
            /* "te: trailers" is the one legal use, and the codecs own it */
            md_errlist_add(el, res, field, "\"%s\" is a hop-by-hop header (RFC 9113 §8.2.2)%s",
                           name, strcmp(name, "te") == 0 ? ": the proxy manages it" : "");
            return;
        }
    }
}

/* A path to match or rewrite to: starts with '/', no query, no fragment, no
 * whitespace or control bytes (matching stops at '?', so a '?' never matches). */
void md_validate_path(struct md_errlist *el, const char *res, const char *field, const char *p)
{
    char cb[8];
    if (p[0] != '/') {
        md_errlist_add(el, res, field, "\"%.80s\" must start with '/'", p);
        return;
    }
    for (const unsigned char *c = (const unsigned char *)p; *c; c++) {
        if (*c <= 0x20 || *c == 0x7f || *c == '?' || *c == '#') {
            md_errlist_add(el, res, field, "\"%.80s\": character %s is not allowed in a path", p,
                           show_char(cb, *c));
            return;
        }
    }
}

/* [A-Za-z_][A-Za-z0-9_]* over |n| bytes. */
static bool is_ident(const char *s, size_t n)
{
    if (n == 0 || !(is_alpha((unsigned char)s[0]) || s[0] == '_'))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!(is_alpha((unsigned char)s[i]) || is_digit((unsigned char)s[i]) || s[i] == '_'))
            return false;
    return true;
}

static bool is_dotted_ident(const char *s)
{
    for (;;) {
        const char *dot = strchr(s, '.');
        size_t n = dot ? (size_t)(dot - s) : strlen(s);
        if (!is_ident(s, n))
            return false;
        if (!dot)
            return true;
        s = dot + 1;
    }
}

void md_validate_grpc_match(struct md_errlist *el, const char *res, const char *at,
                            const Mesh__V1__GrpcMatch *g)
{
    char f[FIELD_LEN];
    fieldf(f, at, "service");
    const char *svc = g ? g->service : "";
    if (!svc[0])
        md_errlist_add(el, res, f, "required");
    else if (!is_dotted_ident(svc))
        md_errlist_add(el, res, f, "\"%.80s\" is not a dotted identifier (e.g. \"test.v1.Echo\")",
                       svc);
    if (g && g->method[0] && !is_ident(g->method, strlen(g->method))) {
        fieldf(f, at, "method");
        md_errlist_add(el, res, f, "\"%.80s\" is not an identifier (e.g. \"Unary\")", g->method);
    }
}

void md_validate_header_matchers(struct md_errlist *el, const char *res, const char *at,
                                 Mesh__V1__HeaderMatcher *const *hm, size_t n)
{
    char f[FIELD_LEN];
    for (size_t k = 0; k < n; k++) {
        const Mesh__V1__HeaderMatcher *h = hm[k];
        snprintf(f, sizeof(f), "%s.headers[%zu].name", at, k);
        md_validate_header_name(el, res, f, h->name, "matched", false);
        snprintf(f, sizeof(f), "%s.headers[%zu]", at, k);
        if (h->match_case == MESH__V1__HEADER_MATCHER__MATCH__NOT_SET) {
            md_errlist_add(el, res, f, "exact or present is required");
        } else if (h->match_case == MESH__V1__HEADER_MATCHER__MATCH_EXACT &&
                   strpbrk(h->exact, "\r\n")) {
            snprintf(f, sizeof(f), "%s.headers[%zu].exact", at, k);
            md_errlist_add(el, res, f, "contains CR or LF: it could never match");
        }
    }
}

static void check_match(struct md_errlist *el, const char *res, const char *rp,
                        const Mesh__V1__RouteMatch *m)
{
    char f[FIELD_LEN];
    if (!m) {
        fieldf(f, rp, "match");
        md_errlist_add(el, res, f, "required");
        return;
    }
    switch (m->path_specifier_case) {
    case MESH__V1__ROUTE_MATCH__PATH_SPECIFIER_PREFIX:
        fieldf(f, rp, "match.prefix");
        md_validate_path(el, res, f, m->prefix);
        break;
    case MESH__V1__ROUTE_MATCH__PATH_SPECIFIER_PATH:
        fieldf(f, rp, "match.path");
        md_validate_path(el, res, f, m->path);
        break;
    case MESH__V1__ROUTE_MATCH__PATH_SPECIFIER_GRPC:
        fieldf(f, rp, "match.grpc");
        md_validate_grpc_match(el, res, f, m->grpc);
        break;
    default:
        fieldf(f, rp, "match");
        md_errlist_add(el, res, f, "a path specifier is required: prefix, path or grpc");
        break;
    }
    fieldf(f, rp, "match");
    md_validate_header_matchers(el, res, f, m->headers, m->n_headers);
    for (size_t k = 0; k < m->n_server_names; k++) {
        snprintf(f, FIELD_LEN, "%s.match.server_names[%zu]", rp, k);
        md_validate_host_name(el, res, f, m->server_names[k]);
    }
}

static void check_cluster_ref(const Mesh__V1__Bundle *b, struct md_errlist *el, const char *res,
                              const char *field, const char *name)
{
    /* Every cluster protocol (HTTP2, HTTP1) speaks HTTP: existing is enough. */
    if (!name[0])
        md_errlist_add(el, res, field, "required");
    else if (md_validate_find_cluster(b, name) < 0)
        md_errlist_add(el, res, field, "unknown cluster \"%.80s\"", name);
}

static void check_weighted(const Mesh__V1__Bundle *b, struct md_errlist *el, const char *res,
                           const char *rp, const Mesh__V1__WeightedClusters *wc)
{
    char f[FIELD_LEN];
    if (!wc || wc->n_clusters == 0) {
        fieldf(f, rp, "route.weighted_clusters.clusters");
        md_errlist_add(el, res, f, "at least one is required");
        return;
    }
    uint64_t sum = 0;
    for (size_t k = 0; k < wc->n_clusters; k++) {
        snprintf(f, sizeof(f), "%s.route.weighted_clusters.clusters[%zu].name", rp, k);
        check_cluster_ref(b, el, res, f, wc->clusters[k]->name);
        sum += wc->clusters[k]->weight;
    }
    fieldf(f, rp, "route.weighted_clusters");
    if (sum == 0)
        md_errlist_add(el, res, f, "weights add up to 0: at least one must be above 0");
    else if (sum > MAX_TOTAL_WEIGHT)
        md_errlist_add(el, res, f, "weights add up to %llu, at most %u", (unsigned long long)sum,
                       MAX_TOTAL_WEIGHT);
}

static void check_header_adds(struct md_errlist *el, const char *res, const char *rp,
                              const char *list, Mesh__V1__HeaderValue *const *hv, size_t n)
{
    char f[FIELD_LEN];
    for (size_t k = 0; k < n; k++) {
        snprintf(f, sizeof(f), "%s.route.%s[%zu].key", rp, list, k);
        md_validate_header_name(el, res, f, hv[k]->key, "set", true);
        /* CR/LF would let a value start a new header line on an HTTP/1 hop;
         * NUL cannot reach here (protobuf-c strings end at it). */
        if (strpbrk(hv[k]->value, "\r\n")) {
            snprintf(f, sizeof(f), "%s.route.%s[%zu].value", rp, list, k);
            md_errlist_add(el, res, f, "contains CR or LF");
        }
    }
}

static void check_header_removes(struct md_errlist *el, const char *res, const char *rp,
                                 const char *list, char *const *names, size_t n)
{
    char f[FIELD_LEN];
    for (size_t k = 0; k < n; k++) {
        snprintf(f, sizeof(f), "%s.route.%s[%zu]", rp, list, k);
        md_validate_header_name(el, res, f, names[k], "removed", true);
    }
}

/* Upgrade tokens (RFC 9110 §7.8): tchar only, each once, never h2c. */
static void check_upgrades(struct md_errlist *el, const char *res, const char *rp,
                           const Mesh__V1__RouteAction *a)
{
    char f[FIELD_LEN], cb[8];
    if (a->refuse_upgrades && a->n_upgrade_types) {
        fieldf(f, rp, "route.upgrade_types");
        md_errlist_add(el, res, f, "must be empty when refuse_upgrades is set");
        return;
    }
    for (size_t i = 0; i < a->n_upgrade_types; i++) {
        const char *t = a->upgrade_types[i];
        char sfx[48];
        snprintf(sfx, sizeof(sfx), "route.upgrade_types[%zu]", i);
        fieldf(f, rp, sfx);
        const unsigned char *p = (const unsigned char *)t;
        while (*p && is_tchar(*p))
            p++;
        if (!t[0])
            md_errlist_add(el, res, f, "empty");
        else if (*p)
            md_errlist_add(el, res, f, "\"%.80s\": character %s is not allowed in a protocol token",
                           t, show_char(cb, *p));
        else if (strcasecmp(t, "h2c") == 0)
            md_errlist_add(el, res, f,
                           "\"h2c\" cannot be tunnelled: meshd speaks HTTP/2 to the client itself");
        for (size_t j = 0; j < i; j++)
            if (strcasecmp(t, a->upgrade_types[j]) == 0) {
                md_errlist_add(el, res, f, "\"%.80s\" repeats upgrade_types[%zu]", t, j);
                break;
            }
    }
}

static void check_action(const Mesh__V1__Bundle *b, struct md_errlist *el, const char *res,
                         const char *rp, const Mesh__V1__RouteAction *a,
                         const Mesh__V1__RouteMatch *m)
{
    char f[FIELD_LEN];
    if (!a) {
        fieldf(f, rp, "route");
        md_errlist_add(el, res, f, "required");
        return;
    }
    switch (a->cluster_specifier_case) {
    case MESH__V1__ROUTE_ACTION__CLUSTER_SPECIFIER_CLUSTER:
        fieldf(f, rp, "route.cluster");
        check_cluster_ref(b, el, res, f, a->cluster);
        break;
    case MESH__V1__ROUTE_ACTION__CLUSTER_SPECIFIER_WEIGHTED_CLUSTERS:
        check_weighted(b, el, res, rp, a->weighted_clusters);
        break;
    default:
        fieldf(f, rp, "route");
        md_errlist_add(el, res, f, "cluster or weighted_clusters is required");
        break;
    }
    fieldf(f, rp, "route.timeout_ms");
    md_validate_range0(el, res, f, a->timeout_ms, 1, MAX_ROUTE_TIMEOUT_MS, " ms");
    if (a->prefix_rewrite[0]) {
        fieldf(f, rp, "route.prefix_rewrite");
        if (m && m->path_specifier_case != MESH__V1__ROUTE_MATCH__PATH_SPECIFIER_PREFIX)
            md_errlist_add(el, res, f, "only allowed with a prefix match");
        else
            md_validate_path(el, res, f, a->prefix_rewrite);
    }
    check_header_adds(el, res, rp, "request_headers_to_add", a->request_headers_to_add,
                      a->n_request_headers_to_add);
    check_header_removes(el, res, rp, "request_headers_to_remove", a->request_headers_to_remove,
                         a->n_request_headers_to_remove);
    check_header_adds(el, res, rp, "response_headers_to_add", a->response_headers_to_add,
                      a->n_response_headers_to_add);
    check_header_removes(el, res, rp, "response_headers_to_remove", a->response_headers_to_remove,
                         a->n_response_headers_to_remove);
    check_upgrades(el, res, rp, a);
    if (a->retry_policy) {
        fieldf(f, rp, "route.retry_policy");
        md_validate_retry_policy(el, res, f, a->retry_policy);
    }
    fieldf(f, rp, "route.max_stream_duration_ms");
    md_validate_range0(el, res, f, a->max_stream_duration_ms, 1, MAX_ROUTE_TIMEOUT_MS, " ms");
    if (a->rate_limit) {
        fieldf(f, rp, "route.rate_limit");
        md_validate_rate_limit(el, res, f, a->rate_limit, true);
    }
    if (a->fault) {
        fieldf(f, rp, "route.fault");
        md_validate_fault(el, res, f, a->fault);
    }
    if (a->fallback_cluster[0]) {
        fieldf(f, rp, "route.fallback_cluster");
        check_cluster_ref(b, el, res, f, a->fallback_cluster);
        long fb = md_validate_find_cluster(b, a->fallback_cluster);
        long main = a->cluster_specifier_case == MESH__V1__ROUTE_ACTION__CLUSTER_SPECIFIER_CLUSTER
                        ? md_validate_find_cluster(b, a->cluster)
                        : -1;
        if (fb >= 0 && main >= 0 && b->clusters[fb]->protocol != b->clusters[main]->protocol)
            md_errlist_add(el, res, f, "speaks another protocol than cluster \"%.80s\"",
                           a->cluster);
        if (a->cluster_specifier_case != MESH__V1__ROUTE_ACTION__CLUSTER_SPECIFIER_CLUSTER)
            md_errlist_add(el, res, f, "only with a single cluster (not weighted_clusters)");
    }
}

/* "*", "*.suffix", "prefix.*" or a host name / bracketed IPv6 literal. */
static void check_domain(struct md_errlist *el, const char *res, const char *field, const char *d)
{
    char cb[8];
    if (!d[0]) {
        md_errlist_add(el, res, field, "empty");
        return;
    }
    if (strcmp(d, "*") == 0)
        return;
    const char *host = d;
    size_t n = strlen(d);
    bool wild = false;
    if (n >= 2 && d[0] == '*' && d[1] == '.') {
        host += 2;
        n -= 2;
        wild = true;
    } else if (n >= 2 && d[n - 1] == '*' && d[n - 2] == '.') {
        n -= 2;
        wild = true;
    }
    if (n == 0) {
        md_errlist_add(el, res, field, "\"%.80s\": nothing beside the wildcard", d);
        return;
    }
    size_t i = 0;
    if (host[0] == '[') { /* "[::1]": the authority form of an IPv6 literal */
        const char *close = memchr(host, ']', n);
        if (wild || !close) {
            md_errlist_add(el, res, field, "\"%.80s\": an IPv6 literal is \"[addr]\", no wildcard",
                           d);
            return;
        }
        for (const char *p = host + 1; p < close; p++) {
            if (!(is_digit((unsigned char)*p) || strchr("abcdefABCDEF:.", *p))) {
                md_errlist_add(el, res, field, "\"%.80s\": character %s is not allowed in a domain",
                               d, show_char(cb, (unsigned char)*p));
                return;
            }
        }
        i = (size_t)(close - host) + 1;
    }
    for (; i < n; i++) {
        unsigned char c = (unsigned char)host[i];
        if (c == '*') {
            md_errlist_add(el, res, field,
                           "\"%.80s\": '*' only as \"*\", a leading \"*.\" or a trailing \".*\"",
                           d);
            return;
        }
        if (c == ':') {
            md_errlist_add(el, res, field,
                           "\"%.80s\": a port never matches (it is removed from :authority)", d);
            return;
        }
        if (!(is_alpha(c) || is_digit(c) || c == '-' || c == '.' || c == '_')) {
            md_errlist_add(el, res, field, "\"%.80s\": character %s is not allowed in a domain", d,
                           show_char(cb, c));
            return;
        }
    }
}

struct domain_ref {
    const char *text;
    size_t vh, d;
};

/* ASCII case-insensitive (strcasecmp would follow the locale). */
static int text_cmp(const char *a, const char *b)
{
    const unsigned char *x = (const unsigned char *)a, *y = (const unsigned char *)b;
    for (; *x && lower(*x) == lower(*y); x++, y++)
        ;
    return lower(*x) == lower(*y) ? 0 : lower(*x) < lower(*y) ? -1 : 1;
}

/* By text, then by position: the first of equal domains is the earliest one,
 * which the others are reported against. */
static int cmp_domain(const void *pa, const void *pb)
{
    const struct domain_ref *a = pa, *b = pb;
    int c = text_cmp(a->text, b->text);
    if (c)
        return c;
    if (a->vh != b->vh)
        return a->vh < b->vh ? -1 : 1;
    return a->d < b->d ? -1 : a->d > b->d;
}

/* Sorted, not pairwise: a route config may hold many domains. */
static void check_duplicate_domains(struct md_errlist *el, const char *res,
                                    const Mesh__V1__RouteConfiguration *rc)
{
    size_t n = 0;
    for (size_t v = 0; v < rc->n_virtual_hosts; v++)
        n += rc->virtual_hosts[v]->n_domains;
    if (n < 2)
        return;
    struct domain_ref *refs = malloc(n * sizeof(*refs));
    if (!refs) {
        md_errlist_add(el, res, "virtual_hosts", "out of memory checking for duplicate domains");
        return;
    }
    size_t k = 0;
    for (size_t v = 0; v < rc->n_virtual_hosts; v++)
        for (size_t d = 0; d < rc->virtual_hosts[v]->n_domains; d++)
            refs[k++] = (struct domain_ref){rc->virtual_hosts[v]->domains[d], v, d};
    qsort(refs, n, sizeof(*refs), cmp_domain);
    size_t first = 0;
    for (k = 1; k < n; k++) {
        if (text_cmp(refs[k].text, refs[first].text) != 0) {
            first = k;
            continue;
        }
        if (!refs[k].text[0])
            continue; /* reported as empty */
        char f[FIELD_LEN];
        snprintf(f, sizeof(f), "virtual_hosts[%zu].domains[%zu]", refs[k].vh, refs[k].d);
        if (refs[k].vh == refs[first].vh)
            md_errlist_add(el, res, f, "\"%.80s\" duplicate of domains[%zu]", refs[k].text,
                           refs[first].d);
        else
            md_errlist_add(el, res, f,
                           "\"%.80s\" already in virtual_hosts[%zu].domains[%zu] (a domain may "
                           "appear in one virtual host only)",
                           refs[k].text, refs[first].vh, refs[first].d);
    }
    free(refs);
}

static void check_vhost(const Mesh__V1__Bundle *b, struct md_errlist *el, const char *res,
                        const Mesh__V1__RouteConfiguration *rc, size_t v)
{
    const Mesh__V1__VirtualHost *vh = rc->virtual_hosts[v];
    char f[FIELD_LEN], rp[96];
    snprintf(f, sizeof(f), "virtual_hosts[%zu].name", v);
    md_validate_name_at(el, res, f, "virtual_hosts", (void *const *)rc->virtual_hosts, v,
                        offsetof(Mesh__V1__VirtualHost, name));
    if (vh->n_domains == 0) {
        snprintf(f, sizeof(f), "virtual_hosts[%zu].domains", v);
        md_errlist_add(el, res, f, "at least one domain is required");
    }
    for (size_t d = 0; d < vh->n_domains; d++) {
        snprintf(f, sizeof(f), "virtual_hosts[%zu].domains[%zu]", v, d);
        check_domain(el, res, f, vh->domains[d]);
    }
    if (vh->n_routes == 0) {
        snprintf(f, sizeof(f), "virtual_hosts[%zu].routes", v);
        md_errlist_add(el, res, f, "at least one route is required");
    }
    for (size_t r = 0; r < vh->n_routes; r++) {
        const Mesh__V1__Route *rt = vh->routes[r];
        snprintf(rp, sizeof(rp), "virtual_hosts[%zu].routes[%zu]", v, r);
        if (!md_validate_name_syntax(rt->name)) {
            fieldf(f, rp, "name");
            md_errlist_add(el, res, f, "\"%.80s\" must match [a-zA-Z0-9_.-]{0,64}", rt->name);
        }
        check_match(el, res, rp, rt->match);
        check_action(b, el, res, rp, rt->route, rt->match);
        if (rt->rbac) {
            fieldf(f, rp, "rbac");
            md_validate_rbac(el, res, f, rt->rbac);
        }
    }
}

void md_validate_route_configs(const Mesh__V1__Bundle *b, struct md_errlist *el)
{
    for (size_t i = 0; i < b->n_route_configs; i++) {
        const Mesh__V1__RouteConfiguration *rc = b->route_configs[i];
        char res[160];
        md_validate_label(res, sizeof(res), "route_config", "route_configs", i, rc->name);
        md_validate_name(el, res, "route_configs", (void *const *)b->route_configs, i,
                         offsetof(Mesh__V1__RouteConfiguration, name));
        if (rc->n_virtual_hosts == 0) {
            md_errlist_add(el, res, "virtual_hosts", "at least one virtual host is required");
            continue;
        }
        if (rc->n_virtual_hosts > MD_VALIDATE_MAX_RESOURCES) {
            /* virtual host names are checked pairwise */
            md_errlist_add(el, res, "virtual_hosts", "%zu defined, at most %u", rc->n_virtual_hosts,
                           MD_VALIDATE_MAX_RESOURCES);
            continue;
        }
        for (size_t v = 0; v < rc->n_virtual_hosts; v++)
            check_vhost(b, el, res, rc, v);
        check_duplicate_domains(el, res, rc);
    }
}
