# SPDX-License-Identifier: Apache-2.0
"""HTTP/1.1 pipelining through meshd: requests sent back to back in one
write are answered in order, one complete response each, whatever their
bodies contain (newlines, text that looks like a status line); a local reply
in the middle keeps its place; Connection: close on the last request closes
the connection after its response. Responses are read with a strict parser
that frames each one by its Content-Length / chunked coding, so a response
with a byte too many or too few breaks the next one."""
import socket

import pytest

from env.clients import wait_until
from env.h1 import HANG_GUARD, H1Conn, chunked, h1_service, request_bytes  # noqa: F401 - fixture
from env.h2_backend import KNOWN_BODY, det_body

pytestmark = pytest.mark.proxy_only

TRICKY = b"line1\nline2\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n0\r\n\r\n"


def _upstream_paths(up, n):
    recs = wait_until(lambda: len(up.requests) >= n and up.requests, timeout=HANG_GUARD,
                      what=f"{n} requests at the upstream")
    return [r["path"] for r in recs]


def test_three_pipelined_with_404_in_the_middle(h1_service):
    svc = h1_service()
    wire = (
        request_bytes("GET", "/plain/first")
        + request_bytes("GET", "/no-route/second")
        + request_bytes("POST", "/plain/third", headers=["Connection: close"], body=TRICKY)
    )
    with H1Conn(svc.port) as c:
        c.send(wire)  # one write
        r1, r2, r3 = c.read_response(), c.read_response(), c.read_response()
        assert (r1.status, r1.header("x-echo-path"), r1.body) == (200, "/plain/first", KNOWN_BODY), r1
        assert r2.status == 404 and r2.header("x-backend") is None and r2.body, r2
        assert (r3.status, r3.header("x-echo-path"), r3.body) == (200, "/plain/third", TRICKY), r3
        assert not r1.closes and not r2.closes, "closed before the last request"
        assert r3.closes, r3
        assert c.expect_closed() == "eof"
    assert _upstream_paths(svc.upstream, 2) == ["/plain/first", "/plain/third"]


def test_pipelined_bodies_in_every_framing(h1_service):
    """POST with Content-Length, POST chunked, HEAD, a chunked response and a
    GET, in one write: bodies never bleed into the next request or response."""
    svc = h1_service()
    a = det_body(70000)[::-1]
    b = TRICKY * 300
    wire = (
        request_bytes("POST", "/plain/p1", body=a)
        + request_bytes("POST", "/plain/p2", headers=["Transfer-Encoding: chunked"]) + chunked(b, sizes=(5, 4096))
        + request_bytes("HEAD", "/plain/p3")
        + request_bytes("GET", "/plain/p4?size=50000&chunked=1")
        + request_bytes("GET", "/plain/p5", headers=["Connection: close"])
    )
    with H1Conn(svc.port) as c:
        c.send(wire)
        r1 = c.read_response()
        r2 = c.read_response()
        r3 = c.read_response(head=True)
        r4 = c.read_response()
        r5 = c.read_response()
        assert c.expect_closed() == "eof"
    assert (r1.header("x-echo-path"), r1.body) == ("/plain/p1", a), r1
    assert (r2.header("x-echo-path"), r2.body) == ("/plain/p2", b), r2
    assert (r3.header("x-echo-method"), r3.body) == ("HEAD", b""), r3
    assert (r4.framing, r4.body) == ("chunked", det_body(50000)), r4
    assert (r5.header("x-echo-path"), r5.body) == ("/plain/p5", KNOWN_BODY), r5
    assert _upstream_paths(svc.upstream, 5) == ["/plain/p1", "/plain/p2", "/plain/p3",
                                                "/plain/p4?size=50000&chunked=1", "/plain/p5"]


def test_many_pipelined_requests(h1_service):
    """300 requests in one write (about 30 KB, more than meshd reads at once):
    300 responses, in order, on the one connection."""
    svc = h1_service()
    n = 300
    wire = b"".join(request_bytes("GET", f"/plain/m{i}?pad={'x' * 40}") for i in range(n))
    with H1Conn(svc.port) as c:
        c.send(wire)
        for i in range(n):
            r = c.read_response()
            assert r.status == 200 and r.header("x-echo-path").startswith(f"/plain/m{i}?"), (i, r)
        assert c.is_open(0.2), "keep-alive connection closed after the pipelined burst"
    assert svc.stat("meshd_listener_downstream_cx_total") == 1


def test_pipelined_large_responses_stay_in_order(h1_service):
    """Three 2 MiB responses pipelined while the client reads only after
    sending all: meshd holds the later ones back, in order."""
    svc = h1_service()
    sizes = [2 * 1024 * 1024 + 1, 2 * 1024 * 1024 + 2, 2 * 1024 * 1024 + 3]
    wire = b"".join(request_bytes("GET", f"/plain/l{i}?size={s}") for i, s in enumerate(sizes))
    with H1Conn(svc.port) as c:
        c.send(wire)
        for i, s in enumerate(sizes):
            r = c.read_response()
            assert r.header("x-echo-path") == f"/plain/l{i}?size={s}" and r.body == det_body(s), (i, r)


def test_request_after_a_bad_one_is_never_processed(h1_service):
    """A valid request, a malformed one, then a valid one in one write: the
    first is answered, the second gets 400 and the close, the third never
    reaches the upstream."""
    svc = h1_service()
    wire = (
        request_bytes("GET", "/plain/ok1")
        + b"POST /plain/bad HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"
        + request_bytes("GET", "/plain/smuggled")
    )
    with H1Conn(svc.port) as c:
        c.send(wire)
        r1 = c.read_response()
        r2 = c.read_response()
        assert r1.status == 200 and r2.status == 400, (r1, r2)
        assert r2.closes
        assert c.expect_closed() in ("eof", "rst")
    with H1Conn(svc.port) as c:
        c.send(request_bytes("GET", "/plain/ok2"))
        assert c.read_response().status == 200
    paths = _upstream_paths(svc.upstream, 2)
    assert "/plain/smuggled" not in paths and "/plain/bad" not in paths, paths


def test_pipelined_then_half_close(h1_service):
    """Three requests, then shutdown(SHUT_WR): the client sent everything and
    waits for three responses."""
    svc = h1_service()
    wire = b"".join(request_bytes("GET", f"/plain/h{i}") for i in range(3))
    with H1Conn(svc.port) as c:
        c.send(wire)
        c.sock.shutdown(socket.SHUT_WR)
        got = []
        for i in range(3):
            try:
                got.append(c.read_response().header("x-echo-path"))
            except AssertionError as e:
                raise AssertionError(f"answered {got}, then: {e}")
        assert got == ["/plain/h0", "/plain/h1", "/plain/h2"]
        assert c.expect_closed() == "eof"


def test_nothing_after_a_connection_close_request(h1_service):
    """RFC 9112 §9.6: after the response to a request with Connection: close
    the server closes; a request pipelined behind it is never processed."""
    svc = h1_service()
    wire = request_bytes("GET", "/plain/last", headers=["Connection: close"]) + request_bytes("GET", "/plain/never")
    with H1Conn(svc.port) as c:
        c.send(wire)
        r = c.read_response()
        assert r.status == 200 and r.closes and r.header("x-echo-path") == "/plain/last", r
        assert c.expect_closed() in ("eof", "rst")
    with H1Conn(svc.port) as c:
        c.send(request_bytes("GET", "/plain/next"))
        assert c.read_response().status == 200
    paths = _upstream_paths(svc.upstream, 2)
    assert "/plain/never" not in paths, paths
