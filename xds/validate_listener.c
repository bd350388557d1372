/* SPDX-License-Identifier: Apache-2.0 */
/* Listener checks: name, bind address, handler (tcp_proxy or http) and what
 * it refers to. */
#include "snapshot.h"
#include "tls/tls_ctx.h"
#include "validate.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#define MAX_IDLE_TIMEOUT_MS (24u * 3600u * 1000u)
#define MAX_REQUEST_HEADERS_TIMEOUT_MS (300u * 1000u)
#define MAX_DETECT_TIMEOUT_MS 10000u
#define MIN_BUFFER (4u * 1024u)
#define MAX_BUFFER (16u * 1024u * 1024u)

/* |at| names the message: "tcp_proxy" or "http.tcp_fallback". */
static void check_tcp_proxy(const Mesh__V1__Bundle *b, struct md_errlist *el, const char *res,
                            const char *at, const Mesh__V1__TcpProxy *tp)
{
    char f[64];
    snprintf(f, sizeof(f), "%s.cluster", at);
    long ci = tp->cluster[0] ? md_validate_find_cluster(b, tp->cluster) : -1;
    if (!tp->cluster[0])
        md_errlist_add(el, res, f, "required");
    else if (ci < 0)
        md_errlist_add(el, res, f, "unknown cluster \"%.80s\"", tp->cluster);
    else if (b->clusters[ci]->tls)
        md_errlist_add(el, res, f,
                       "cluster \"%.80s\" originates TLS, which only HTTP routes do (a TCP "
                       "proxy passes the client's bytes, TLS or not, unchanged)",
                       tp->cluster);
    snprintf(f, sizeof(f), "%s.idle_timeout_ms", at);
    md_validate_range0(el, res, f, tp->idle_timeout_ms, 1, MAX_IDLE_TIMEOUT_MS, " ms");
    snprintf(f, sizeof(f), "%s.buffer_limit_bytes", at);
    md_validate_range0(el, res, f, tp->buffer_limit_bytes, MIN_BUFFER, MAX_BUFFER, " bytes");
}

static void check_http(const Mesh__V1__Bundle *b, struct md_errlist *el, const char *res,
                       const Mesh__V1__HttpConnectionManager *h,
                       const Mesh__V1__DownstreamTlsContext *tls)
{
    md_validate_enum(el, res, "http.codec", &mesh__v1__http_connection_manager__codec__descriptor,
                     (int)h->codec);
    if (!h->route_config[0])
        md_errlist_add(el, res, "http.route_config", "required");
    else if (md_validate_find_route_config(b, h->route_config) < 0)
        md_errlist_add(el, res, "http.route_config", "unknown route_config \"%.80s\"",
                       h->route_config);
    md_validate_h2_opts(el, res, "http.http2", h->http2);
    md_validate_range0(el, res, "http.stream_idle_timeout_ms", h->stream_idle_timeout_ms, 1,
                       MAX_IDLE_TIMEOUT_MS, " ms");
    md_validate_range0(el, res, "http.idle_timeout_ms", h->idle_timeout_ms, 1, MAX_IDLE_TIMEOUT_MS,
                       " ms");
    md_validate_range0(el, res, "http.request_headers_timeout_ms", h->request_headers_timeout_ms, 1,
                       MAX_REQUEST_HEADERS_TIMEOUT_MS, " ms");
    bool auto_codec = h->codec == MESH__V1__HTTP_CONNECTION_MANAGER__CODEC__AUTO;
    if (h->tcp_fallback && !auto_codec)
        md_errlist_add(el, res, "http.tcp_fallback", "only for codec AUTO");
    else if (h->tcp_fallback)
        check_tcp_proxy(b, el, res, "http.tcp_fallback", h->tcp_fallback);
    if (h->tcp_fallback && tls && !tls->allow_plaintext)
        md_errlist_add(el, res, "http.tcp_fallback",
                       "never used: a TLS listener refuses non-TLS connections unless "
                       "tls.allow_plaintext is set");
    if (tls && tls->allow_plaintext && !auto_codec)
        md_errlist_add(el, res, "tls.allow_plaintext",
                       "only for codec AUTO (which tells TLS from plaintext)");
    md_validate_enum(el, res, "http.forward_client_cert",
                     &mesh__v1__http_connection_manager__forward_client_cert__descriptor,
                     (int)h->forward_client_cert);
    if (h->client_cert_header[0])
        md_validate_header_name(el, res, "http.client_cert_header", h->client_cert_header, "set",
                                true);
    if (h->detect_timeout_ms && !(auto_codec && h->tcp_fallback))
        md_errlist_add(el, res, "http.detect_timeout_ms",
                       "only for codec AUTO with a tcp_fallback (where silence leads)");
    else
        md_validate_range0(el, res, "http.detect_timeout_ms", h->detect_timeout_ms, 1,
                           MAX_DETECT_TIMEOUT_MS, " ms");
    if (h->rbac)
        md_validate_rbac(el, res, "http.rbac", h->rbac);
}

void md_validate_listeners(const Mesh__V1__Bundle *b, struct md_errlist *el)
{
    struct md_addr admin;
    Mesh__V1__SocketAddress default_admin = MESH__V1__SOCKET_ADDRESS__INIT;
    default_admin.address = MD_DEFAULT_ADMIN_IP;
    default_admin.port = MD_DEFAULT_ADMIN_PORT;
    const Mesh__V1__SocketAddress *aa =
        b->admin && b->admin->address ? b->admin->address : &default_admin;
    bool admin_ok = md_addr_parse(aa->address, aa->port, &admin) == 0;

    for (size_t i = 0; i < b->n_listeners; i++) {
        const Mesh__V1__Listener *l = b->listeners[i];
        char res[160];
        md_validate_label(res, sizeof(res), "listener", "listeners", i, l->name);
        md_validate_name(el, res, "listeners", (void *const *)b->listeners, i,
                         offsetof(Mesh__V1__Listener, name));
        struct md_addr addr;
        if (md_validate_address(el, res, "address", l->address, &addr) == 0) {
            for (size_t j = 0; j < i; j++) {
                struct md_addr other;
                const Mesh__V1__SocketAddress *oa = b->listeners[j]->address;
                if (oa && md_addr_parse(oa->address, oa->port, &other) == 0 &&
                    md_addr_equal(&addr, &other)) {
                    md_errlist_add(el, res, "address", "%s:%u already bound by listeners[%zu]",
                                   l->address->address, l->address->port, j);
                    break;
                }
            }
            if (admin_ok && md_addr_equal(&addr, &admin))
                md_errlist_add(el, res, "address", "%s:%u is the admin address",
                               l->address->address, l->address->port);
        }
        switch (l->handler_case) {
        case MESH__V1__LISTENER__HANDLER_TCP_PROXY:
            check_tcp_proxy(b, el, res, "tcp_proxy", l->tcp_proxy);
            break;
        case MESH__V1__LISTENER__HANDLER_HTTP: check_http(b, el, res, l->http, l->tls); break;
        default:
            md_errlist_add(el, res, "handler", "none set: tcp_proxy or http is required");
            break;
        }
        if (l->connection_rate_limit)
            md_validate_rate_limit(el, res, "connection_rate_limit", l->connection_rate_limit,
                                   false);
        if (l->tls && l->handler_case != MESH__V1__LISTENER__HANDLER_HTTP) {
            md_errlist_add(el, res, "tls",
                           "only for http listeners (a tcp_proxy passes TLS through unchanged)");
        } else if (l->tls) {
            int codec = l->http->codec;
            md_validate_downstream_tls(el, res, l->tls,
                                       codec == MESH__V1__HTTP_CONNECTION_MANAGER__CODEC__H2C
                                           ? MD_TLS_ALPN_H2
                                       : codec == MESH__V1__HTTP_CONNECTION_MANAGER__CODEC__HTTP1
                                           ? MD_TLS_ALPN_HTTP1
                                           : MD_TLS_ALPN_H2 | MD_TLS_ALPN_HTTP1);
        }
    }
}
