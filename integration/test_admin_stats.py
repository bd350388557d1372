# SPDX-License-Identifier: Apache-2.0
"""Admin: /stats/prometheus is well-formed and its listener and cluster
counters match the traffic exactly; /config_dump names the resources;
unknown paths 404; keep-alive works."""
import socket

from env.backends import det_chunks
from env.clients import connect, recv_to_eof, send_chunks, wait_until

# Documented metric families and their types (docs/INTERFACES-issue2.md).
LISTENER_METRICS = {
    "meshd_listener_downstream_cx_total": "counter",
    "meshd_listener_downstream_cx_active": "gauge",
    "meshd_listener_downstream_rx_bytes_total": "counter",
    "meshd_listener_downstream_tx_bytes_total": "counter",
    "meshd_listener_accept_fd_exhausted_total": "counter",
}
CLUSTER_METRICS = {
    "meshd_cluster_upstream_cx_total": "counter",
    "meshd_cluster_upstream_cx_active": "gauge",
    "meshd_cluster_upstream_cx_connect_fail_total": "counter",
    "meshd_cluster_upstream_cx_connect_timeout_total": "counter",
    "meshd_cluster_upstream_unavailable_total": "counter",
    "meshd_cluster_upstream_rx_bytes_total": "counter",
    "meshd_cluster_upstream_tx_bytes_total": "counter",
}
SERVER_METRICS = {
    "meshd_server_draining": "gauge",
    "meshd_server_workers": "gauge",
    "meshd_build_info": "gauge",
    "meshd_server_uptime_seconds": "gauge",
}
SIZES = [1, 1000, 65536 + 3, 300 * 1024 + 11]  # bytes sent on each connection


def test_prometheus_parses_and_has_documented_metrics(meshd, backends):
    echo = backends.echo()
    m = meshd("tcp_basic", upstream_port=echo.port, concurrency=2)
    st = m.stats()  # strict parse; raises on malformed output
    for name, typ in {**LISTENER_METRICS, **CLUSTER_METRICS, **SERVER_METRICS}.items():
        assert st.types.get(name) == typ, f"{name}: TYPE {st.types.get(name)!r}, expected {typ!r}"
    for name in LISTENER_METRICS:
        assert st.get(name, listener="in") is not None, f"{name}{{listener=\"in\"}} missing"
    for name in CLUSTER_METRICS:
        assert st.get(name, cluster="app") is not None, f"{name}{{cluster=\"app\"}} missing"
    assert st.get("meshd_server_workers") == 2
    assert st.get("meshd_server_draining") == 0
    build = st.series("meshd_build_info")
    assert len(build) == 1 and list(build.values()) == [1.0], build
    assert "version" in dict(next(iter(build))), build


def test_byte_and_connection_counters_are_exact(meshd, backends):
    # The sink replies "<sha256> <len>\n" after EOF: a reply size different
    # from the request size, so rx/tx mix-ups show.
    sink = backends.sink(reply="digest")
    m = meshd("tcp_basic", upstream_port=sink.port)
    sent_total = 0
    recv_total = 0
    for i, size in enumerate(SIZES):
        s = connect(m.listen_port)
        with s:
            n, digest = send_chunks(s, det_chunks(size, seed=40 + i, chunk=64 * 1024))
            s.shutdown(socket.SHUT_WR)
            r, _, reply = recv_to_eof(s, keep=True, limit=4096)
            assert reply == f"{digest} {n}\n".encode()
        sent_total += n
        recv_total += r

    want = {
        ("meshd_listener_downstream_cx_total", "listener", "in"): len(SIZES),
        ("meshd_listener_downstream_cx_active", "listener", "in"): 0,
        ("meshd_listener_downstream_rx_bytes_total", "listener", "in"): sent_total,
        ("meshd_listener_downstream_tx_bytes_total", "listener", "in"): recv_total,
        ("meshd_cluster_upstream_tx_bytes_total", "cluster", "app"): sent_total,
        ("meshd_cluster_upstream_rx_bytes_total", "cluster", "app"): recv_total,
    }

    def actual():
        st = m.stats()
        return {k: st.get(k[0], **{k[1]: k[2]}) for k in want}

    # Counters move with the bytes; once every connection is closed and
    # counted they must be exact. Poll until then (bounded), then compare.
    try:
        wait_until(lambda: actual() == want, timeout=15, what="counters to settle")
    except AssertionError:
        pass
    got = actual()
    diff = {f"{k[0]}{{{k[1]}={k[2]!r}}}": (got[k], v) for k, v in want.items() if got[k] != v}
    assert not diff, f"(actual, expected) per counter: {diff}"


CONFIG_DUMP_BUNDLE = """
listeners {
  name: "ingress-main.7"
  address { address: "127.0.0.1" port: {listen_port} }
  tcp_proxy { cluster: "backend_pool-3" }
}
clusters {
  name: "backend_pool-3"
  endpoints { address { address: "127.0.0.1" port: {upstream_port} } }
}
"""


def test_config_dump_names_resources(meshd, backends):
    echo = backends.echo()
    m = meshd(CONFIG_DUMP_BUNDLE, upstream_port=echo.port)
    status, body = m.admin_get("/config_dump")
    assert status == 200, (status, body[:200])
    assert "ingress-main.7" in body, body[:2000]
    assert "backend_pool-3" in body, body[:2000]


def test_unknown_path_404(meshd, backends):
    echo = backends.echo()
    m = meshd("tcp_basic", upstream_port=echo.port)
    status, _ = m.admin_get("/no/such/path")
    assert status == 404


def test_keep_alive_two_requests_one_connection(meshd, backends):
    echo = backends.echo()
    m = meshd("tcp_basic", upstream_port=echo.port)
    c = m.admin_conn()
    try:
        c.request("GET", "/ready")
        r1 = c.getresponse()
        b1 = r1.read()
        assert r1.status == 200 and b1.strip() == b"ready", (r1.status, b1)
        assert not r1.will_close, "server asked to close after the first request"
        sock1 = c.sock
        c.request("GET", "/stats/prometheus")
        r2 = c.getresponse()
        b2 = r2.read()
        assert r2.status == 200
        assert c.sock is sock1, "the client had to reconnect for the second request"
        assert b"meshd_server_workers" in b2
    finally:
        c.close()
