# SPDX-License-Identifier: Apache-2.0
"""A listener with codec AUTO serves HTTP/1.1 and h2c (prior knowledge) on
one port, told apart by the first bytes: curl --http1.1, curl
--http2-prior-knowledge and grpcio (to the gRPC backend) all work on the
same port, at the same time; without a tcp_fallback, anything that is not
the HTTP/2 preface or TLS is HTTP/1.1 (so junk gets an HTTP/1.1 400; the
fallback cases are test_detect.py's); and a client whose first bytes
arrive in more than one TCP segment is still told apart right."""
import socket
import time

import pytest

from env.clients import H2_PREFACE, RawH2, grpc_channel, h2_get, nghttp
from env.curl import curl_h1, curl_h2
from env.h1 import HANG_GUARD, H1Conn, h1_service, request_bytes  # noqa: F401 - fixture
from env.h2_backend import KNOWN_BODY, det_body

pytestmark = pytest.mark.proxy_only

SEGMENT_PAUSE = 0.2  # between two writes, so that they arrive as two segments (not a readiness wait)
SPLIT_GUARD = 3.0  # hang guard: an answer normally takes milliseconds


def test_http1_curl_on_auto(h1_service, workdir):
    svc = h1_service()
    r = curl_h1(svc.auto_port, ["/plain/a1", "/plain/a2"], workdir)
    assert r.rc == 0 and [t["http_code"] for t in r.transfers] == [200, 200], r
    assert [t["http_version"] for t in r.transfers] == ["1.1", "1.1"], r
    assert [t["num_connects"] for t in r.transfers] == [1, 0], "no keep-alive on the AUTO listener"
    assert r.body(0) == KNOWN_BODY and r.body(1) == KNOWN_BODY
    f = workdir / "post.bin"
    f.write_bytes(det_body(1024 * 1024 + 5))
    r = curl_h1(svc.auto_port, "/plain/a-post", workdir, data_file=f)
    assert r.rc == 0 and r.transfers[0]["http_code"] == 200 and r.body(0) == f.read_bytes(), r
    assert svc.stat("meshd_listener_downstream_cx_total", listener="auto_in") == 2
    assert svc.stat("meshd_listener_downstream_cx_total", listener="h1_in") == 0


def test_h2c_curl_on_auto(h1_service, workdir):
    svc = h1_service()
    r = curl_h2(svc.auto_port, "/plain/h2c?size=300000", workdir)
    assert r.rc == 0 and r.http_version == "2" and r.status == 200, r
    assert r.body == det_body(300000)
    # Several streams on one h2c connection (nghttp -m 3: one connection).
    n = nghttp(svc.auto_port, "/plain/h2c-m", multiply=3, timeout=int(HANG_GUARD))
    assert n.rc == 0 and n.statuses == [200, 200, 200], n
    paths = [q["path"] for q in svc.upstream.requests]
    assert paths.count("/plain/h2c-m") == 3 and "/plain/h2c?size=300000" in paths, paths
    assert svc.stat("meshd_listener_downstream_cx_total", listener="auto_in") == 2
    assert svc.stat("meshd_listener_http2_protocol_error_total", listener="auto_in") == 0


def test_grpc_on_auto(h1_service, echo_stubs):
    pb, pbg, _ = echo_stubs
    svc = h1_service(grpc=True)
    ch = grpc_channel(svc.auto_port)
    try:
        stub = pbg.EchoStub(ch)
        payload = det_body(100_000)[::-1]
        r = stub.Unary(pb.EchoRequest(id="auto-unary", payload=payload), timeout=HANG_GUARD)
        assert r.id == "auto-unary" and r.payload == payload, "payload changed"
        got = list(stub.ServerStream(pb.EchoRequest(id="auto-ss", repeat=5, response_size=1000), timeout=HANG_GUARD))
        assert [m.seq for m in got] == list(range(5))
    finally:
        ch.close()
    calls = svc.grpc.calls()
    assert {c["id"] for c in calls} >= {"auto-unary", "auto-ss"}, calls


def test_all_three_at_once_on_one_port(h1_service, echo_stubs, workdir):
    """An HTTP/1.1 keep-alive connection, an h2c connection and a gRPC
    channel, all open on the AUTO port, used in turns."""
    pb, pbg, _ = echo_stubs
    svc = h1_service(grpc=True)
    ch = grpc_channel(svc.auto_port)
    h1 = H1Conn(svc.auto_port)
    h2 = RawH2(svc.auto_port)
    try:
        stub = pbg.EchoStub(ch)
        for i in range(3):
            h1.send(request_bytes("GET", f"/plain/mix-h1-{i}"))
            r = h1.read_response()
            assert r.status == 200 and r.header("x-echo-path") == f"/plain/mix-h1-{i}", r
            sid = 1 + 2 * i
            h2.send(h2.headers(sid, [(":method", "GET"), (":scheme", "http"), (":path", f"/plain/mix-h2-{i}"),
                                     (":authority", "a")]))
            f = h2.read_until(lambda f, sid=sid: f.stream == sid and f.flags & RawH2.END_STREAM, timeout=HANG_GUARD)
            assert f is not None, h2.frames[-5:]
            hdrs = [x for x in h2.frames if x.type == RawH2.HEADERS and x.stream == sid]
            assert hdrs and dict(hdrs[0].headers)[":status"] == "200", hdrs
            g = stub.Unary(pb.EchoRequest(id=f"mix-{i}", payload=b"x" * i), timeout=HANG_GUARD)
            assert g.id == f"mix-{i}"
    finally:
        h1.close()
        h2.close()
        ch.close()
    paths = [q["path"] for q in svc.upstream.requests]
    assert [p for p in paths if p.startswith("/plain/mix-h1")] == [f"/plain/mix-h1-{i}" for i in range(3)]
    assert [p for p in paths if p.startswith("/plain/mix-h2")] == [f"/plain/mix-h2-{i}" for i in range(3)]


@pytest.mark.parametrize("first", [b"GET /", b"\x16\x03\x01\x00\xa5", b"PRI * HTTP/1.1\r\n"],
                         ids=["http1", "tls-hello", "preface-lookalike"])
def test_not_the_preface_without_fallback(h1_service, first):
    """Bytes that are not the HTTP/2 preface go to the HTTP/1.1 codec when
    the listener has no tcp_fallback: a request is served, junk gets an
    HTTP/1.1 400 and a close; a TLS ClientHello is closed."""
    svc = h1_service()
    with H1Conn(svc.auto_port) as c:
        if first == b"GET /":
            c.send(request_bytes("GET", "/plain/notpri"))
            assert c.read_response().status == 200
        elif first.startswith(b"\x16"):
            # TLS on a listener without TLS or a tcp_fallback: nothing can
            # answer it in a way a TLS client understands, so it is closed.
            c.send(first + b"junk junk\r\n\r\n")
            assert c.expect_closed() in ("eof", "rst")
            assert svc.stat("meshd_listener_detect_none_total", listener="auto_in") == 1
        else:
            c.send(first + b"junk junk\r\n\r\n")
            r = c.read_response()
            assert r.status == 400 and r.closes, r
            assert c.expect_closed() in ("eof", "rst")
    # The listener still serves h2c.
    assert h2_get(svc.auto_port, "/plain/after", timeout=HANG_GUARD).status == 200




def _nodelay(sock):
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@pytest.mark.parametrize("split", [5, 1, 23])
def test_preface_in_two_writes_is_h2(h1_service, split):
    svc = h1_service()
    c = RawH2(svc.auto_port, timeout=SPLIT_GUARD, preface=False)
    try:
        _nodelay(c.sock)
        c.send(H2_PREFACE[:split])
        time.sleep(SEGMENT_PAUSE)
        c.send(H2_PREFACE[split:] + c.settings()
               + c.headers(1, [(":method", "GET"), (":scheme", "http"), (":path", "/plain/split"), (":authority", "a")]))
        f = c.read_until(lambda f: f.stream == 1 and f.flags & RawH2.END_STREAM, timeout=SPLIT_GUARD)
        assert f is not None, f"connection ended: {c.frames}"
        assert c.goaways() == [], c.frames
    finally:
        c.close()


def test_http1_request_starting_like_the_preface_in_two_writes(h1_service):
    """'P' alone could still be the preface; 'PO' cannot: HTTP/1.1."""
    svc = h1_service()
    wire = request_bytes("POST", "/plain/p-split", body=b"hello")
    with H1Conn(svc.auto_port, timeout=SPLIT_GUARD) as c:
        _nodelay(c.sock)
        c.send(wire[:1])
        time.sleep(SEGMENT_PAUSE)
        c.send(wire[1:])
        r = c.read_response()
        assert r.status == 200 and r.body == b"hello", r


def test_detection_outcomes_counted_per_listener(h1_service):
    """Each AUTO connection is counted by what its first bytes said: two
    HTTP/1.1, one h2c, and one that closed before saying anything."""
    svc = h1_service()
    for _ in range(2):
        c = svc.conn(auto=True)
        c.send(request_bytes("GET", "/plain/count"))
        assert c.read_response().status == 200
        c.close()
    r = h2_get(svc.auto_port, "/plain/count")
    assert r.status == 200, r
    s = socket.create_connection(("127.0.0.1", svc.auto_port), timeout=HANG_GUARD)
    s.close()

    def counted():
        st = svc.meshd.stats()
        got = tuple(st.get(f"meshd_listener_detect_{k}_total", listener="auto_in") for k in ("http1", "http2", "none"))
        return got if got == (2, 1, 1) else None

    deadline = time.monotonic() + HANG_GUARD
    got = counted()
    while got is None and time.monotonic() < deadline:
        time.sleep(0.05)  # polling a counter, not waiting for readiness
        got = counted()
    st = svc.meshd.stats()
    assert got == (2, 1, 1), {k: st.get(f"meshd_listener_detect_{k}_total", listener="auto_in")
                              for k in ("http1", "http2", "none")}
