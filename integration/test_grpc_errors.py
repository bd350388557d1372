# SPDX-License-Identifier: Apache-2.0
"""Failures meshd makes itself are gRPC trailers-only responses (one HEADERS
frame with END_STREAM: :status 200, content-type application/grpc,
grpc-status) with the precise code: no route -> UNIMPLEMENTED; upstream
refusing, unreachable or gone -> UNAVAILABLE; headers too large ->
RESOURCE_EXHAUSTED. A method the route sends on
but the server lacks is the server's own UNIMPLEMENTED."""
import time

import grpc
import pytest

from env.clients import H2Client, established_to, grpc_channel, grpc_frame, grpc_request_headers

HANG_GUARD = 20.0


def _raw(port, path, extra=(), body=None, timeout=HANG_GUARD):
    with H2Client(port) as c:
        return c.request(grpc_request_headers(path, extra=extra), body=grpc_frame(b"") if body is None else body, timeout=timeout)


def _assert_trailers_only(r, code):
    assert r.trailers_only, f"not trailers-only: {r!r}"
    assert r.header(":status") == "200", r
    assert (r.header("content-type") or "").startswith("application/grpc"), r
    assert r.grpc_status == code, f"grpc-status {r.grpc_status}, expected {code}: {r!r}"


def _call_code(fn):
    t0 = time.monotonic()
    try:
        fn()
        code = grpc.StatusCode.OK
    except grpc.RpcError as e:
        code = e.code()
    assert time.monotonic() - t0 < HANG_GUARD
    return code


@pytest.mark.proxy_only
def test_no_route_is_unimplemented(echo_service):
    svc = echo_service()
    stub = svc.stub(service="Unrouted")
    assert _call_code(lambda: stub.Ping(svc.pb.EchoRequest(id="nr"), timeout=HANG_GUARD)) == grpc.StatusCode.UNIMPLEMENTED
    _assert_trailers_only(_raw(svc.port, "/test.v1.Unrouted/Ping"), 12)
    _assert_trailers_only(_raw(svc.port, "/some.other.Service/Method"), 12)
    # Streaming shapes too: the answer comes without waiting for the request's end.
    call = svc.channel().stream_stream("/test.v1.Unrouted/Bidi")(iter([b"", b""]), timeout=HANG_GUARD)
    assert _call_code(lambda: list(call)) == grpc.StatusCode.UNIMPLEMENTED
    assert svc.backend.calls() == [], "a call without a route reached the server"


@pytest.mark.proxy_only
def test_no_route_answered_before_request_ends(echo_service):
    """The request stream is still open (no END_STREAM): meshd answers at once."""
    svc = echo_service()
    with H2Client(svc.port) as c:
        r = c.request(grpc_request_headers("/test.v1.Unrouted/Ping"), end_stream=False, timeout=HANG_GUARD)
    _assert_trailers_only(r, 12)


def test_unknown_method_of_routed_service_is_servers_unimplemented(echo_service):
    svc = echo_service()
    call = svc.channel().unary_unary("/test.v1.Echo/NoSuchMethod")
    assert _call_code(lambda: call(b"", timeout=HANG_GUARD)) == grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.proxy_only
def test_non_grpc_request_on_grpc_route_gets_404(echo_service):
    """A grpc route needs content-type application/grpc*: a plain request to
    the same path has no route (HTTP 404, not a gRPC answer)."""
    svc = echo_service()
    with H2Client(svc.port) as c:
        r = c.request(
            [(":method", "POST"), (":scheme", "http"), (":path", "/test.v1.Echo/Unary"), (":authority", "localhost"),
             ("content-type", "application/json")],
            body=b"{}",
            timeout=HANG_GUARD,
        )
    assert r.status == 404, r
    assert r.header("grpc-status") is None, r


@pytest.mark.proxy_only
def test_upstream_refusing_is_unavailable(echo_service, backends):
    down = backends.refusing()
    svc = echo_service(upstream_port=down.port)
    stub = svc.stub()
    for i in range(3):
        assert _call_code(lambda: stub.Unary(svc.pb.EchoRequest(id=f"d{i}"), timeout=HANG_GUARD)) == grpc.StatusCode.UNAVAILABLE
    _assert_trailers_only(_raw(svc.port, "/test.v1.Echo/Unary"), 14)
    call = stub.ServerStream(svc.pb.EchoRequest(id="ds", repeat=3), timeout=HANG_GUARD)
    assert _call_code(lambda: list(call)) == grpc.StatusCode.UNAVAILABLE


@pytest.mark.proxy_only
def test_upstream_connect_timeout_is_unavailable(echo_service, backends):
    """Connects to the endpoint neither complete nor fail: after the
    cluster's connect_timeout_ms (2 s in grpc_basic) the call is UNAVAILABLE."""
    hole = backends.black_hole()
    svc = echo_service(upstream_port=hole.port)
    _assert_trailers_only(_raw(svc.port, "/test.v1.Echo/Unary"), 14)


@pytest.mark.proxy_only
def test_upstream_killed_mid_call_is_unavailable(echo_service):
    """The server process dies while a call waits on it (its connections
    close, later connects are refused): that call and the next ones are
    UNAVAILABLE, and meshd keeps serving."""
    svc = echo_service()
    stub = svc.stub()
    assert stub.Unary(svc.pb.EchoRequest(id="ok"), timeout=HANG_GUARD).id == "ok"
    fut = stub.Unary.future(svc.pb.EchoRequest(id="k", sleep_ms=60000), timeout=HANG_GUARD + 10)
    svc.backend.wait_call("k", timeout=HANG_GUARD)
    svc.backend.proc.kill()  # by PID: SIGKILL, the kernel closes its sockets
    svc.backend.proc.wait(10)
    try:
        fut.result(timeout=HANG_GUARD)
        code = grpc.StatusCode.OK
    except grpc.RpcError as e:
        code = e.code()
    assert code == grpc.StatusCode.UNAVAILABLE, code
    assert _call_code(lambda: stub.Unary(svc.pb.EchoRequest(id="after"), timeout=HANG_GUARD)) == grpc.StatusCode.UNAVAILABLE
    _assert_trailers_only(_raw(svc.port, "/test.v1.Echo/Unary"), 14)
    assert svc.meshd.alive()


@pytest.mark.proxy_only
def test_unimplemented_and_unavailable_on_one_connection(echo_service, backends):
    """Local replies end only their stream: the same connection carries a
    no-route call, an upstream-down call and again a no-route call."""
    down = backends.refusing()
    svc = echo_service(upstream_port=down.port)
    ch = grpc_channel(svc.port)
    try:
        unrouted = svc.pbg.UnroutedStub(ch)
        echo = svc.pbg.EchoStub(ch)
        codes = [
            _call_code(lambda: unrouted.Ping(svc.pb.EchoRequest(), timeout=HANG_GUARD)),
            _call_code(lambda: echo.Unary(svc.pb.EchoRequest(), timeout=HANG_GUARD)),
            _call_code(lambda: unrouted.Ping(svc.pb.EchoRequest(), timeout=HANG_GUARD)),
        ]
        assert established_to(svc.port) == 1
    finally:
        ch.close()
    assert codes == [grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNIMPLEMENTED]


@pytest.mark.proxy_only
def test_header_list_too_large_is_resource_exhausted(echo_service):
    """README: headers over max_header_list_size (default 64 KiB) ->
    trailers-only RESOURCE_EXHAUSTED; the connection carries on."""
    svc = echo_service()
    with H2Client(svc.port) as c:
        r = c.request(grpc_request_headers("/test.v1.Echo/Unary", extra=[("x-big", "b" * (70 * 1024))]),
                      body=grpc_frame(b""), timeout=HANG_GUARD)
        _assert_trailers_only(r, 8)
        r = c.request(grpc_request_headers("/test.v1.Echo/Unary"), body=grpc_frame(b""), timeout=HANG_GUARD)
        assert r.grpc_status == 0, r
    assert len(svc.backend.calls()) == 1
