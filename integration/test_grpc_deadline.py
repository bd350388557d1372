# SPDX-License-Identifier: Apache-2.0
"""gRPC deadlines through meshd. The route's timeout_ms and the client's
grpc-timeout: the smaller one wins; the upstream is told the remaining budget
(an adjusted grpc-timeout); on expiry the client gets DEADLINE_EXCEEDED
(trailers-only if nothing was answered yet) and the upstream stream is reset,
which the server sees as a cancellation.

Times here are hang guards or budget checks, never speed requirements: a
call that must expire after 1 s only has to end well before 15 s."""
import re
import time

import grpc
import pytest

from conftest import DIRECT
from env.clients import H2Client, grpc_frame, grpc_request_headers, wait_until

HANG_GUARD = 15.0  # a call expected to expire after ~1 s must end before this
SLACK = 0.05  # grpc-timeout is rounded up to its unit; time_remaining may exceed it a little
TIMEOUT_RE = re.compile(r"\A([0-9]{1,8})([HMSmun])\Z")  # gRPC spec: TimeoutValue TimeoutUnit
UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def parse_grpc_timeout(v):
    m = TIMEOUT_RE.match(v)
    assert m, f"malformed grpc-timeout {v!r} (at most 8 digits and one of H M S m u n)"
    return int(m.group(1)) * UNITS[m.group(2)]


def _expect_deadline(fn):
    t0 = time.monotonic()
    try:
        fn()
        raise AssertionError("the call succeeded")
    except grpc.RpcError as e:
        elapsed = time.monotonic() - t0
        assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, (e.code(), e.details())
    assert elapsed < HANG_GUARD, f"the call took {elapsed:.1f}s to expire"
    return elapsed


def _sleepy(svc, id, sleep_ms=60000):
    return svc.pb.EchoRequest(id=id, sleep_ms=sleep_ms)


def test_client_deadline_exceeded_and_server_sees_cancel(echo_service):
    svc = echo_service()
    stub = svc.stub()
    _expect_deadline(lambda: stub.Unary(_sleepy(svc, "d1"), timeout=1.0))
    rec = svc.backend.wait_call("d1", lambda c: c["ended"], timeout=HANG_GUARD)
    assert rec["cancelled"], rec
    assert rec["time_remaining"] is not None and rec["time_remaining"] <= 1.0 + SLACK, rec


def test_client_deadline_exceeded_on_a_stream(echo_service):
    svc = echo_service()
    req = svc.pb.EchoRequest(id="d2", repeat=100, interval_ms=500)
    got = []

    def run():
        for r in svc.stub().ServerStream(req, timeout=1.5):
            got.append(r.seq)

    _expect_deadline(run)
    assert got[:1] == [0] and len(got) < 10, got
    rec = svc.backend.wait_call("d2", lambda c: c["ended"], timeout=HANG_GUARD)
    assert rec["cancelled"], rec


def test_client_deadline_reaches_server_as_budget(echo_service):
    svc = echo_service(route_timeout_ms=30000)
    svc.stub().Unary(svc.pb.EchoRequest(id="b5"), timeout=5.0)
    rec = svc.backend.wait_call("b5", lambda c: c["ended"])
    tr = rec["time_remaining"]
    assert tr is not None, "the server saw no deadline (grpc-timeout not forwarded)"
    assert 2.5 <= tr <= 5.0 + SLACK, f"server's remaining budget {tr}s for a 5 s deadline"


def test_client_deadline_shorter_than_route_timeout_wins(echo_service):
    svc = echo_service(route_timeout_ms=30000)
    _expect_deadline(lambda: svc.stub().Unary(_sleepy(svc, "c1"), timeout=1.0))
    rec = svc.backend.wait_call("c1", lambda c: c["ended"], timeout=HANG_GUARD)
    assert rec["cancelled"], rec
    assert rec["time_remaining"] is not None and rec["time_remaining"] <= 1.0 + SLACK, rec


@pytest.mark.proxy_only
def test_route_timeout_shorter_than_client_deadline_wins(echo_service):
    svc = echo_service(route_timeout_ms=1000)
    _expect_deadline(lambda: svc.stub().Unary(_sleepy(svc, "r1"), timeout=30.0))
    rec = svc.backend.wait_call("r1", lambda c: c["ended"], timeout=HANG_GUARD)
    assert rec["cancelled"], rec
    tr = rec["time_remaining"]
    assert tr is not None and 0 < tr <= 1.0 + SLACK, f"upstream budget {tr}s, expected at most the route's 1 s"


@pytest.mark.proxy_only
def test_route_timeout_without_client_deadline(echo_service):
    svc = echo_service(route_timeout_ms=1000)
    _expect_deadline(lambda: svc.stub().Unary(_sleepy(svc, "r2")))
    rec = svc.backend.wait_call("r2", lambda c: c["ended"], timeout=HANG_GUARD)
    assert rec["cancelled"], "the upstream call was not cancelled after the route timeout"
    tr = rec["time_remaining"]
    assert tr is None or tr <= 1.0 + SLACK, f"upstream was told {tr}s, more than the route's 1 s"


@pytest.mark.parametrize(
    "value,seconds",
    [("20000000u", 20.0), ("2000000u", 2.0), ("2000m", 2.0), ("2S", 2.0), ("1M", 60.0), ("1H", 3600.0)],
)
def test_grpc_timeout_units(echo_service, value, seconds):
    """A raw client's grpc-timeout in each unit (at most 8 digits, so "n" is
    covered by test_upstream_sees_adjusted_grpc_timeout); with a 10 s route
    timeout the server's budget is min(value, 10 s)."""
    route_s = 10.0
    svc = echo_service(route_timeout_ms=int(route_s * 1000))
    expected = seconds if DIRECT else min(seconds, route_s)
    req = svc.pb.EchoRequest(id=f"t-{value}")
    with H2Client(svc.port) as c:
        r = c.request(grpc_request_headers("/test.v1.Echo/Unary", timeout=value), body=grpc_frame(req.SerializeToString()))
    assert r.grpc_status == 0, r
    rec = svc.backend.wait_call(f"t-{value}", lambda c: c["ended"])
    tr = rec["time_remaining"]
    assert tr is not None and expected * 0.5 <= tr <= expected + SLACK, f"grpc-timeout {value}: server budget {tr}s, expected about {expected}s"


# -- exact behaviour, seen with the raw HTTP/2 backend as the upstream -----------------


def _h2_upstream(h2_backend, through, route_timeout_ms):
    b = h2_backend()
    port = through("grpc_basic", b.port, upstream_port=b.port, route_timeout_ms=route_timeout_ms)
    return b, port


@pytest.mark.proxy_only
@pytest.mark.parametrize(
    "client_timeout,route_ms,limit",
    [("30S", 1000, 1.0), ("2S", 30000, 2.0), ("1500m", 1000, 1.0), ("900000u", 5000, 0.9), ("99999999n", 30000, 0.1)],
)
def test_upstream_sees_adjusted_grpc_timeout(h2_backend, through, client_timeout, route_ms, limit):
    b, port = _h2_upstream(h2_backend, through, route_ms)
    with H2Client(port) as c:
        c.request(grpc_request_headers("/test.v1.Echo/Unary", timeout=client_timeout), body=grpc_frame(b""), timeout=HANG_GUARD)
    rec = wait_until(lambda: b.requests_for("/test.v1.Echo/Unary"), what="the request at the upstream")[0]
    vals = [v for k, v in rec["headers"] if k == "grpc-timeout"]
    assert len(vals) == 1, f"upstream grpc-timeout headers: {vals}"
    budget = parse_grpc_timeout(vals[0])
    assert 0 < budget <= limit, f"client {client_timeout}, route {route_ms} ms: upstream told {vals[0]!r}"
    assert budget >= limit * 0.5, f"upstream told {vals[0]!r}: far less than the remaining {limit}s"


@pytest.mark.proxy_only
def test_route_timeout_no_client_deadline_upstream_budget(h2_backend, through):
    """Without a client deadline, any grpc-timeout meshd sends is at most the route's."""
    b, port = _h2_upstream(h2_backend, through, 1000)
    with H2Client(port) as c:
        c.request(grpc_request_headers("/test.v1.Echo/Unary"), body=grpc_frame(b""), timeout=HANG_GUARD)
    rec = wait_until(lambda: b.requests_for("/test.v1.Echo/Unary"), what="the request at the upstream")[0]
    vals = [v for k, v in rec["headers"] if k == "grpc-timeout"]
    assert len(vals) <= 1 and all(0 < parse_grpc_timeout(v) <= 1.0 for v in vals), vals


@pytest.mark.proxy_only
def test_route_timeout_is_trailers_only_deadline_exceeded(h2_backend, through):
    """The upstream never answers: meshd answers DEADLINE_EXCEEDED in one
    HEADERS frame with END_STREAM, and resets the upstream stream."""
    b, port = _h2_upstream(h2_backend, through, 1000)
    t0 = time.monotonic()
    with H2Client(port) as c:
        r = c.request(
            grpc_request_headers("/test.v1.Echo/Unary", extra=[("x-ctl-delay-ms", "60000")]),
            body=grpc_frame(b""),
            timeout=HANG_GUARD,
        )
    assert time.monotonic() - t0 < HANG_GUARD
    assert r.trailers_only, f"not a trailers-only response: {r!r}"
    assert r.header(":status") == "200" and (r.header("content-type") or "").startswith("application/grpc"), r
    assert r.grpc_status == 4, r
    rec = wait_until(lambda: b.requests_for("/test.v1.Echo/Unary"), what="the request at the upstream")[0]
    wait_until(lambda: rec["reset_by_peer"] is not None, timeout=HANG_GUARD, what="RST_STREAM on the upstream stream")


@pytest.mark.proxy_only
def test_route_timeout_after_response_started(h2_backend, through):
    """The upstream sent headers and a message, then stalls: the client gets
    DEADLINE_EXCEEDED in trailers after what was already sent; the upstream
    stream is reset."""
    b, port = _h2_upstream(h2_backend, through, 1000)
    with H2Client(port) as c:
        r = c.request(
            grpc_request_headers("/test.v1.Echo/ServerStream", extra=[("x-ctl-hold", "after-headers")]),
            body=grpc_frame(b""),
            timeout=HANG_GUARD,
        )
    assert r.headers is not None and bytes(r.data) == b"\0\0\0\0\0", r
    assert r.grpc_status == 4, f"expected trailers with grpc-status 4 after the message: {r!r}"
    rec = wait_until(lambda: b.requests_for("/test.v1.Echo/ServerStream"), what="the request at the upstream")[0]
    wait_until(lambda: rec["reset_by_peer"] is not None, timeout=HANG_GUARD, what="RST_STREAM on the upstream stream")
