# SPDX-License-Identifier: Apache-2.0
"""/stats/prometheus after gRPC traffic: still strictly well-formed, and the
HTTP counters (README "Metrics": meshd_listener_http_*,
meshd_cluster_upstream_rq_*, _http2_cx_active) count what happened, exactly:
calls, no-route answers, timeouts, unavailable upstreams, upstream resets,
client resets; connections: one channel is one downstream connection, and
pooled HTTP/2 upstream connections are established connections."""
import grpc
import pytest

from env.clients import H2Client, grpc_frame, grpc_request_headers, wait_until

pytestmark = pytest.mark.proxy_only

HANG_GUARD = 15.0
LISTENER = "grpc_in"


def _settle(m, want):
    """Poll until every {(name, label, value): n} holds (bounded); then
    compare once more and report every difference."""

    def actual():
        st = m.stats()
        return {k: st.get(k[0], **{k[1]: k[2]}) for k in want}

    try:
        wait_until(lambda: actual() == want, timeout=10, what="counters to settle")
    except AssertionError:
        pass
    got = actual()
    diff = {f"{k[0]}{{{k[1]}={k[2]!r}}}": (got[k], v) for k, v in want.items() if got[k] != v}
    assert not diff, f"(actual, expected) per series: {diff}"


def test_request_counters_exact(echo_service):
    svc = echo_service()
    ch = svc.channel()
    stub, unrouted = svc.pbg.EchoStub(ch), svc.pbg.UnroutedStub(ch)
    for i in range(7):
        stub.Unary(svc.pb.EchoRequest(id=f"ok{i}"), timeout=HANG_GUARD)
    for i in range(3):
        with pytest.raises(grpc.RpcError):
            unrouted.Ping(svc.pb.EchoRequest(), timeout=HANG_GUARD)
    list(stub.ServerStream(svc.pb.EchoRequest(id="ss", repeat=3), timeout=HANG_GUARD))
    ch.close()
    m = svc.meshd
    _settle(
        m,
        {
            ("meshd_listener_downstream_cx_total", "listener", LISTENER): 1,
            ("meshd_listener_http_rq_total", "listener", LISTENER): 11,
            ("meshd_listener_http_rq_active", "listener", LISTENER): 0,
            ("meshd_listener_http_rq_no_route_total", "listener", LISTENER): 3,
            ("meshd_listener_http_rq_timeout_total", "listener", LISTENER): 0,
            ("meshd_listener_http_rq_downstream_reset_total", "listener", LISTENER): 0,
            ("meshd_listener_http2_protocol_error_total", "listener", LISTENER): 0,
            ("meshd_cluster_upstream_rq_total", "cluster", "echo"): 8,
            ("meshd_cluster_upstream_rq_active", "cluster", "echo"): 0,
            ("meshd_cluster_upstream_rq_unavailable_total", "cluster", "echo"): 0,
        },
    )


def test_unavailable_counted(echo_service, backends):
    down = backends.refusing()
    svc = echo_service(upstream_port=down.port)
    stub = svc.stub()
    for i in range(4):
        with pytest.raises(grpc.RpcError) as ei:
            stub.Unary(svc.pb.EchoRequest(), timeout=HANG_GUARD)
        assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
    svc.close()
    _settle(
        svc.meshd,
        {
            ("meshd_listener_http_rq_total", "listener", LISTENER): 4,
            ("meshd_cluster_upstream_rq_unavailable_total", "cluster", "echo"): 4,
            ("meshd_cluster_upstream_http2_cx_active", "cluster", "echo"): 0,
        },
    )


def _h2_upstream(h2_backend, through, route_timeout_ms=0):
    b = h2_backend()
    return b, through("grpc_basic", b.port, upstream_port=b.port, route_timeout_ms=route_timeout_ms)


def test_timeouts_counted(h2_backend, through):
    """The upstream (which ignores grpc-timeout) never answers: each call is
    meshd's DEADLINE_EXCEEDED, counted once."""
    b, port = _h2_upstream(h2_backend, through, route_timeout_ms=500)
    with H2Client(port) as c:
        for _ in range(2):
            r = c.request(grpc_request_headers("/test.v1.Echo/Unary", extra=[("x-ctl-delay-ms", "60000")]),
                          body=grpc_frame(b""), timeout=HANG_GUARD)
            assert r.grpc_status == 4, r
    _settle(
        through.meshd,
        {
            ("meshd_listener_http_rq_total", "listener", LISTENER): 2,
            ("meshd_listener_http_rq_timeout_total", "listener", LISTENER): 2,
            ("meshd_listener_http_rq_active", "listener", LISTENER): 0,
            ("meshd_cluster_upstream_rq_total", "cluster", "echo"): 2,
            ("meshd_cluster_upstream_rq_active", "cluster", "echo"): 0,
        },
    )


def test_resets_counted(h2_backend, through):
    b, port = _h2_upstream(h2_backend, through)
    with H2Client(port) as c:
        for _ in range(2):  # the upstream resets
            r = c.request(grpc_request_headers("/test.v1.Echo/Unary", extra=[("x-ctl-reset", "before")]),
                          body=grpc_frame(b""), timeout=HANG_GUARD)
            assert r.reset is not None, r
        # The client resets a stream the upstream holds open.
        sid = c.conn.get_next_available_stream_id()
        c.conn.send_headers(sid, grpc_request_headers("/test.v1.Echo/Unary", extra=[("x-ctl-delay-ms", "60000")]))
        c.conn.send_data(sid, grpc_frame(b""), end_stream=True)
        c.sock.sendall(c.conn.data_to_send())
        held = wait_until(lambda: [q for q in b.requests if ("x-ctl-delay-ms", "60000") in q["headers"]],
                          what="the held request at the upstream")[0]
        c.conn.reset_stream(sid, error_code=8)  # CANCEL, as grpc clients do
        c.sock.sendall(c.conn.data_to_send())
        wait_until(lambda: held["reset_by_peer"] is not None, timeout=HANG_GUARD,
                   what="the client's reset to reach the upstream")
    _settle(
        through.meshd,
        {
            ("meshd_listener_http_rq_total", "listener", LISTENER): 3,
            ("meshd_cluster_upstream_rq_reset_total", "cluster", "echo"): 2,
            ("meshd_listener_http_rq_downstream_reset_total", "listener", LISTENER): 1,
            ("meshd_listener_http_rq_active", "listener", LISTENER): 0,
            ("meshd_cluster_upstream_rq_active", "cluster", "echo"): 0,
        },
    )


def test_pooled_upstream_connection_is_an_active_connection(echo_service):
    """An HTTP/2 connection in the upstream pool is an established upstream
    connection: meshd_cluster_upstream_cx_active ("Established upstream
    connections open now") counts it, like _http2_cx_active does."""
    svc = echo_service()
    stub = svc.stub()
    stub.Unary(svc.pb.EchoRequest(id="p"), timeout=HANG_GUARD)
    st = wait_until(
        lambda: (lambda s: s if s.get("meshd_cluster_upstream_http2_cx_active", cluster="echo") else None)(svc.meshd.stats()),
        what="a pooled upstream connection",
    )
    h2 = st.get("meshd_cluster_upstream_http2_cx_active", cluster="echo")
    cx = st.get("meshd_cluster_upstream_cx_active", cluster="echo")
    assert cx >= h2 >= 1, f"upstream_cx_active {cx}, upstream_http2_cx_active {h2}"
