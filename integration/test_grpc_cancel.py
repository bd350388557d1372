# SPDX-License-Identifier: Apache-2.0
"""Cancellation through meshd, both ways: a client that cancels a call
mid-stream (or while waiting for a unary answer) is seen by the server as a
cancellation, and the server stops; a server that cancels or resets its
stream ends the client's call with an error after the messages already sent,
never with OK and never with a hang."""
import queue

import grpc
import pytest

from env.clients import H2Client, grpc_frame, grpc_request_headers, wait_until

HANG_GUARD = 15.0
CALL_TIMEOUT = 60


def _assert_server_cancelled(svc, id):
    rec = svc.backend.wait_call(id, lambda c: c["ended"], timeout=HANG_GUARD, what=f"call {id} to end at the server")
    assert rec["cancelled"], f"the server did not see a cancellation: {rec}"
    return rec


def test_client_cancels_server_stream(echo_service):
    svc = echo_service()
    req = svc.pb.EchoRequest(id="cs", repeat=10000, interval_ms=20, payload=b"z" * 100)
    call = svc.stub().ServerStream(req, timeout=CALL_TIMEOUT)
    got = [next(call).seq for _ in range(3)]
    assert got == [0, 1, 2]
    call.cancel()
    with pytest.raises(grpc.RpcError) as ei:
        for _ in range(10000):
            next(call)
    assert ei.value.code() == grpc.StatusCode.CANCELLED
    rec = _assert_server_cancelled(svc, "cs")
    assert rec["responses_out"] < 10000


def test_client_cancels_bidi_stream(echo_service):
    svc = echo_service()
    outbox = queue.Queue()

    def reqs():
        for _ in range(1000):
            m = outbox.get(timeout=CALL_TIMEOUT)
            if m is None:
                return
            yield m

    call = svc.stub().BidiStream(reqs(), timeout=CALL_TIMEOUT)
    for i in range(3):
        outbox.put(svc.pb.EchoRequest(id="cb", payload=b"%d" % i))
        assert next(call).payload == b"%d" % i
    call.cancel()
    _assert_server_cancelled(svc, "cb")
    outbox.put(None)


def test_client_cancels_client_stream(echo_service):
    svc = echo_service()
    outbox = queue.Queue()

    def reqs():
        for _ in range(1000):
            m = outbox.get(timeout=CALL_TIMEOUT)
            if m is None:
                return
            yield m

    fut = svc.stub().ClientStream.future(reqs(), timeout=CALL_TIMEOUT)
    outbox.put(svc.pb.EchoRequest(id="cc", payload=b"x" * 1000))
    svc.backend.wait_call("cc", lambda c: c["messages_in"] >= 1, timeout=HANG_GUARD)
    fut.cancel()
    _assert_server_cancelled(svc, "cc")
    outbox.put(None)


def test_client_cancels_unary_while_server_works(echo_service):
    svc = echo_service()
    fut = svc.stub().Unary.future(svc.pb.EchoRequest(id="cu", sleep_ms=60000), timeout=CALL_TIMEOUT)
    svc.backend.wait_call("cu", timeout=HANG_GUARD)  # it reached the server
    assert fut.cancel()
    _assert_server_cancelled(svc, "cu")


def test_server_cancel_mid_stream_reaches_client(echo_service):
    """The grpcio server cancels the call after 3 messages (grpc-status 1 and
    a reset): the client gets the 3 messages, then CANCELLED."""
    svc = echo_service()
    req = svc.pb.EchoRequest(id="sr", repeat=10, reset_after=3, payload=b"m")
    call = svc.stub().ServerStream(req, timeout=CALL_TIMEOUT)
    got = []
    with pytest.raises(grpc.RpcError) as ei:
        for r in call:
            got.append(r.seq)
    assert got == [0, 1, 2]
    assert ei.value.code() == grpc.StatusCode.CANCELLED, (ei.value.code(), ei.value.details())


def test_server_cancel_before_response_reaches_client(echo_service):
    svc = echo_service()
    call = svc.stub().ServerStream(svc.pb.EchoRequest(id="sb", reset_after=-1), timeout=CALL_TIMEOUT)
    with pytest.raises(grpc.RpcError) as ei:
        list(call)
    assert ei.value.code() == grpc.StatusCode.CANCELLED, (ei.value.code(), ei.value.details())


# -- a real RST_STREAM from the upstream (raw HTTP/2 backend) --------------------------


def _h2_upstream(h2_backend, through):
    b = h2_backend()
    return b, through("grpc_basic", b.port, upstream_port=b.port, route_timeout_ms=0)


@pytest.mark.proxy_only
@pytest.mark.parametrize("reset_code", [2, 8], ids=["INTERNAL_ERROR", "CANCEL"])
def test_upstream_rst_stream_mid_response_reaches_client(h2_backend, through, reset_code, echo_stubs):
    """The upstream sends headers and one message, and 300 ms later
    RST_STREAM: the client gets that message, then a failed call (a reset,
    or trailers with a non-zero grpc-status), never a clean end."""
    b, port = _h2_upstream(h2_backend, through)
    extra = [("x-ctl-reset", "after-headers"), ("x-ctl-reset-code", str(reset_code)), ("x-ctl-reset-delay-ms", "300")]
    with H2Client(port) as c:
        r = c.request(grpc_request_headers("/test.v1.Echo/ServerStream", extra=extra), body=grpc_frame(b""), timeout=HANG_GUARD)
    assert r.headers is not None and bytes(r.data) == b"\0\0\0\0\0", r
    assert r.reset is not None or (r.grpc_status not in (None, 0)), f"the reset was hidden from the client: {r!r}"
    # And with grpcio: the message, then an error.
    pb, pbg, _ = echo_stubs
    from env.clients import grpc_channel

    ch = grpc_channel(port)
    try:
        call = pbg.EchoStub(ch).ServerStream(pb.EchoRequest(id="rst"), metadata=extra, timeout=HANG_GUARD)
        got = []
        with pytest.raises(grpc.RpcError) as ei:
            for m in call:
                got.append(m)
        assert len(got) == 1
        assert ei.value.code() not in (grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED), ei.value.code()
    finally:
        ch.close()


@pytest.mark.proxy_only
def test_upstream_rst_stream_right_after_response_start(h2_backend, through):
    """Headers, a message and RST_STREAM reach meshd in one burst: however
    much of it meshd forwards, the client's stream must not end cleanly."""
    b, port = _h2_upstream(h2_backend, through)
    extra = [("x-ctl-reset", "after-headers")]
    with H2Client(port) as c:
        r = c.request(grpc_request_headers("/test.v1.Echo/ServerStream", extra=extra), body=grpc_frame(b""), timeout=HANG_GUARD)
    assert r.reset is not None or (r.grpc_status not in (None, 0)), f"the reset was hidden from the client: {r!r}"


@pytest.mark.proxy_only
@pytest.mark.parametrize("reset_code", [2, 8], ids=["INTERNAL_ERROR", "CANCEL"])
def test_upstream_rst_stream_before_response_reaches_client(h2_backend, through, reset_code, echo_stubs):
    """The upstream resets the stream before any response: the client's stream
    is reset with the same error code (README: RST_STREAM travels with its
    error code both ways), as a direct call would see; grpcio reports it."""
    b, port = _h2_upstream(h2_backend, through)
    extra = [("x-ctl-reset", "before"), ("x-ctl-reset-code", str(reset_code))]
    with H2Client(port) as c:
        r = c.request(grpc_request_headers("/test.v1.Echo/Unary", extra=extra), body=grpc_frame(b""), timeout=HANG_GUARD)
    assert r.events == ["reset"] and r.reset == reset_code, f"expected RST_STREAM({reset_code}) alone: {r!r}"
    wait_until(lambda: b.requests_for("/test.v1.Echo/Unary"), what="the request at the upstream")
    pb, pbg, _ = echo_stubs
    from env.clients import grpc_channel

    ch = grpc_channel(port)
    try:
        with pytest.raises(grpc.RpcError) as ei:
            pbg.EchoStub(ch).Unary(pb.EchoRequest(id="rstb"), metadata=extra, timeout=HANG_GUARD)
        want = grpc.StatusCode.INTERNAL if reset_code == 2 else grpc.StatusCode.CANCELLED
        assert ei.value.code() == want, (ei.value.code(), ei.value.details())
    finally:
        ch.close()
