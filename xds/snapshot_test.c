/* SPDX-License-Identifier: Apache-2.0 */
/* Snapshot building (snapshot.c): what an HTTP bundle becomes, settings
 * carried, its config_dump, and every allocation failing in turn. */
#include "validate_testlib.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_http_valid_snapshot(void **state)
{
    struct hfix h;
    hfix_init(&h);
    struct md_snapshot *s = load_snapshot(&h.f.b);

    const struct md_snap_listener *l = &s->listeners[1];
    assert_int_equal(s->listeners[0].handler, MD_HANDLER_TCP_PROXY);
    assert_int_equal(l->handler, MD_HANDLER_HTTP);
    assert_int_equal(l->http.codec, MD_HTTP_CODEC_H2C);
    assert_int_equal(l->http.route_config, 0);
    assert_int_equal(l->http.h2.max_concurrent_streams, MD_DEFAULT_H2_MAX_CONCURRENT_STREAMS);
    assert_int_equal(l->http.h2.initial_stream_window, MD_DEFAULT_H2_STREAM_WINDOW);
    assert_int_equal(l->http.h2.initial_connection_window, MD_DEFAULT_H2_CONNECTION_WINDOW);
    assert_int_equal(l->http.h2.max_header_list_size, MD_DEFAULT_H2_MAX_HEADER_LIST);
    assert_int_equal(l->http.stream_idle_timeout_ms, MD_DEFAULT_STREAM_IDLE_TIMEOUT_MS);
    assert_int_equal(l->http.idle_timeout_ms, MD_DEFAULT_HTTP_IDLE_TIMEOUT_MS);
    assert_int_equal(l->http.request_headers_timeout_ms, MD_DEFAULT_REQUEST_HEADERS_TIMEOUT_MS);

    const struct md_snap_cluster *c = &s->clusters[0];
    assert_int_equal(c->protocol, MD_CLUSTER_HTTP2);
    assert_int_equal(c->h2.max_concurrent_streams, MD_DEFAULT_H2_MAX_CONCURRENT_STREAMS);
    assert_int_equal(c->h2.initial_connection_window, MD_DEFAULT_H2_CONNECTION_WINDOW);
    assert_int_equal(c->max_connections_per_endpoint, MD_DEFAULT_POOL_MAX_CONNECTIONS);
    assert_int_equal(c->pool_idle_timeout_ms, MD_DEFAULT_POOL_IDLE_TIMEOUT_MS);
    assert_int_equal(c->keepalive_interval_ms, MD_DEFAULT_KEEPALIVE_INTERVAL_MS);

    assert_int_equal(s->n_route_configs, 1);
    const struct md_snap_route_config *rc = &s->route_configs[0];
    assert_string_equal(rc->name, "rc");
    assert_int_equal(rc->n_vhosts, 2);
    const struct md_snap_vhost *vh = &rc->vhosts[0];
    assert_string_equal(vh->name, "api");
    assert_int_equal(vh->n_domains, 3);
    assert_int_equal(vh->domains[0].kind, MD_DOMAIN_EXACT);
    assert_string_equal(vh->domains[0].text, "api.example.com");
    assert_int_equal(vh->domains[0].len, 15);
    assert_int_equal(vh->domains[1].kind, MD_DOMAIN_SUFFIX);
    assert_string_equal(vh->domains[1].text, ".example.com");
    assert_int_equal(vh->domains[1].len, 12);
    assert_int_equal(vh->domains[2].kind, MD_DOMAIN_PREFIX);
    assert_string_equal(vh->domains[2].text, "api.");
    assert_int_equal(rc->vhosts[1].domains[0].kind, MD_DOMAIN_ANY);
    assert_int_equal(rc->vhosts[1].domains[0].len, 0);

    assert_int_equal(vh->n_routes, 4);
    const struct md_snap_route *r = &vh->routes[0];
    assert_string_equal(r->name, "api/routes[0]");
    assert_int_equal(r->kind, MD_PATH_MATCH_GRPC);
    assert_string_equal(r->path, "/test.v1.Echo/Unary");
    assert_int_equal(r->path_len, 19);
    assert_false(r->grpc_any_method);
    assert_int_equal(r->n_clusters, 1);
    assert_int_equal(r->clusters[0].cluster, 0);
    assert_int_equal(r->total_weight, 1);
    assert_int_equal(r->timeout_ms, 5000);
    assert_null(r->prefix_rewrite);
    assert_int_equal(r->n_req_add + r->n_req_remove + r->n_resp_add + r->n_resp_remove, 0);

    r = &vh->routes[1];
    assert_string_equal(r->name, "api/routes[1]");
    assert_int_equal(r->kind, MD_PATH_MATCH_PREFIX);
    assert_string_equal(r->path, "/v1/");
    assert_int_equal(r->n_headers, 2);
    assert_string_equal(r->headers[0].name, "x-env");
    assert_int_equal(r->headers[0].kind, MD_HDR_MATCH_EXACT);
    assert_string_equal(r->headers[0].value, "canary");
    assert_int_equal(r->headers[0].value_len, 6);
    assert_int_equal(r->headers[1].kind, MD_HDR_MATCH_ABSENT);
    assert_null(r->headers[1].value);
    assert_int_equal(r->n_clusters, 2);
    assert_int_equal(r->clusters[0].cluster, 0);
    assert_int_equal(r->clusters[0].weight, 80);
    assert_int_equal(r->clusters[1].cluster, 1);
    assert_int_equal(r->clusters[1].weight, 20);
    assert_int_equal(r->total_weight, 100);
    assert_int_equal(r->timeout_ms, 0);
    assert_string_equal(r->prefix_rewrite, "/");
    assert_int_equal(r->prefix_rewrite_len, 1);
    assert_int_equal(r->n_req_add, 1);
    assert_string_equal(r->req_add[0].name, "x-route");
    assert_int_equal(r->req_add[0].name_len, 7);
    assert_string_equal(r->req_add[0].value, "v1 \"canary\"");
    assert_int_equal(r->n_req_remove, 1);
    assert_string_equal(r->req_remove[0], "x-debug");
    assert_string_equal(r->resp_add[0].name, "x-served-by");
    assert_string_equal(r->resp_remove[0], "server");

    r = &vh->routes[2];
    assert_string_equal(r->name, "health");
    assert_int_equal(r->kind, MD_PATH_MATCH_EXACT);
    assert_string_equal(r->path, "/health");
    assert_int_equal(r->clusters[0].cluster, 1);

    r = &vh->routes[3];
    assert_int_equal(r->kind, MD_PATH_MATCH_GRPC);
    assert_string_equal(r->path, "/test.v1.Echo/");
    assert_true(r->grpc_any_method);

    static const char *const want[] = {
        "  http {\n    codec: H2C\n    route_config: \"rc\"\n",
        "    stream_idle_timeout_ms: 300000\n",
        "  protocol: HTTP2\n  pool {\n",
        "    max_connections_per_endpoint: 8\n",
        "route_config {\n  name: \"rc\"\n",
        "    domain: \"*.example.com\"\n",
        "    domain: \"api.*\"\n",
        "    domain: \"*\"\n",
        "        grpc: \"/test.v1.Echo/Unary\"\n",
        "        grpc: \"/test.v1.Echo/\"  # every method\n",
        "        header { name: \"x-env\" exact: \"canary\" }\n",
        "        header { name: \"x-internal\" present: false }\n",
        "        weighted_cluster { name: \"app\" weight: 80 }\n",
        "        request_header_to_add { key: \"x-route\" value: \"v1 \\\"canary\\\"\" }\n",
        "        response_header_to_remove: \"server\"\n",
        "        prefix_rewrite: \"/\"\n",
        "        timeout_ms: 5000\n",
        "      name: \"health\"\n",
    };
    assert_dump_has(s, want, sizeof(want) / sizeof(want[0]));
    md_snapshot_unref(s);
}

static void test_http_settings_carried(void **state)
{
    struct hfix h;
    hfix_init(&h);
    h.hcm.http2 = &h.lh2;
    h.lh2.max_concurrent_streams = 10;
    h.lh2.initial_stream_window = 65536;
    h.lh2.initial_connection_window = 65536;
    h.lh2.max_header_list_size = 1024;
    h.hcm.stream_idle_timeout_ms = 1000;
    h.hcm.idle_timeout_ms = 2000;
    h.hcm.request_headers_timeout_ms = 500;
    h.f.c.pool = &h.pool;
    h.ch2.max_concurrent_streams = 7;
    h.pool.max_connections_per_endpoint = 2;
    h.pool.idle_timeout_ms = 3000;
    h.pool.keepalive_interval_ms = 4000;
    struct md_snapshot *s = load_snapshot(&h.f.b);
    const struct md_snap_http *ht = &s->listeners[1].http;
    assert_int_equal(ht->h2.max_concurrent_streams, 10);
    assert_int_equal(ht->h2.initial_stream_window, 65536);
    assert_int_equal(ht->h2.initial_connection_window, 65536);
    assert_int_equal(ht->h2.max_header_list_size, 1024);
    assert_int_equal(ht->stream_idle_timeout_ms, 1000);
    assert_int_equal(ht->idle_timeout_ms, 2000);
    assert_int_equal(ht->request_headers_timeout_ms, 500);
    const struct md_snap_cluster *c = &s->clusters[0];
    assert_int_equal(c->h2.max_concurrent_streams, 7);
    assert_int_equal(c->h2.initial_stream_window, MD_DEFAULT_H2_STREAM_WINDOW);
    assert_int_equal(c->max_connections_per_endpoint, 2);
    assert_int_equal(c->pool_idle_timeout_ms, 3000);
    assert_int_equal(c->keepalive_interval_ms, 4000);
    assert_int_equal(s->clusters[1].max_connections_per_endpoint, MD_DEFAULT_POOL_MAX_CONNECTIONS);
    md_snapshot_unref(s);
}

/* Every allocation of the build fails once in turn: each failure must come
 * back as MD_ENOMEM with nothing leaked (the ASan build checks). */
static void test_http_snapshot_enomem(void **state)
{
    struct hfix h;
    hfix_init(&h);
    struct md_errlist el;
    md_errlist_init(&el, "t.pb");
    assert_int_equal(md_validate_bundle(&h.f.b, &el), 0);
    md_errlist_fini(&el);
    long points = 0;
    for (;; points++) {
        alloc_fail_at = points;
        alloc_count = 0;
        struct md_snapshot *s = NULL;
        int rc = md_snapshot_build(&h.f.b, &s);
        if (rc == 0) {
            md_snapshot_unref(s);
            break;
        }
        assert_int_equal(rc, MD_ENOMEM);
        assert_null(s);
    }
    alloc_fail_at = -1;
    assert_true(points > 40); /* every route part allocates */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http_valid_snapshot),
        cmocka_unit_test(test_http_settings_carried),
        cmocka_unit_test(test_http_snapshot_enomem),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
