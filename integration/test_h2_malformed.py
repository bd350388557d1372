# SPDX-License-Identifier: Apache-2.0
"""Malformed HTTP/2 messages (RFC 9113 §8.1-8.3) on both sides of meshd.
meshd checks them itself as it takes each field (sidecar/codec/h2_rules.c;
nghttp2's own checks are off on proxied sessions). These tests were written
against nghttp2's checks first and pin the same answers.

Downstream (raw frames from env.clients.RawH2 to the h2c listener of
bundles/h2_limits, one worker): a malformed request is refused with
RST_STREAM(PROTOCOL_ERROR) on its stream and nothing else; the connection
goes on (no GOAWAY, a valid request on it afterwards gets 200, and a request
held open at the backend meanwhile gets its 200 too).
  - Refused before routing, never seen by the backend: uppercase names,
    connection-specific fields, te other than trailers, missing or repeated
    pseudo-headers, unknown pseudo-headers, a pseudo-header after a regular
    field, bad content-length (not a number, twice, END_STREAM on HEADERS
    with content-length 5), bad :path (no "/", "*" with GET, empty, space or
    control byte), space or control byte in :method, CONNECT with :path or
    :scheme or without :authority, :protocol without CONNECT.
  - Also refused, not dropped: a regular field whose value has a control
    byte or leading/trailing whitespace, or whose name has a non-token
    character (RFC 9113 §8.2.1: malformed).
  - Detected only after the headers went upstream (a body shorter or longer
    than its content-length, a pseudo-header in trailers, trailers without
    END_STREAM): the backend saw the request's HEADERS, then meshd reset its
    upstream stream with PROTOCOL_ERROR; the request never completed there.
  - Accepted: te: trailers; Host without :authority (forwarded as it came);
    content-length matching the body. OPTIONS * passes the HTTP/2 checks
    and gets 404 (no route can match "*": route paths start with "/"); a
    plain CONNECT gets meshd's 400, an extended CONNECT (:protocol) its 501
    (no upgrade to an HTTP/2 cluster).

Upstream (env.h2_raw_backend.RawH2Backend, answering raw frames by path):
a response malformed in its header block (no :status, :status "20" /
"abc" / twice / after a regular field, 101, a connection-specific field, an
uppercase name, a control byte in a value, END_STREAM with content-length
10 on a GET) never reaches the client: meshd resets the upstream stream
(PROTOCOL_ERROR) and the client gets RST_STREAM(PROTOCOL_ERROR), not a 502.
A body shorter than its content-length reaches the client (headers and the
bytes) and then RST_STREAM(PROTOCOL_ERROR); so does a 204 with a DATA
frame (its headers, then the reset). 103 Early Hints is skipped; HEAD with
content-length and no body is fine. gRPC calls end INTERNAL at once. The
upstream connection survives every case (stream errors), and each reset
counts in meshd_cluster_upstream_rq_reset_total.

Counters: every refused request counts in meshd_listener_http_rq_total and
in meshd_listener_http_rq_bad_request_total, none in
meshd_listener_http2_protocol_error_total (stream errors, no GOAWAY) or in
meshd_listener_http_rq_downstream_reset_total (the client reset nothing)."""
import contextlib
import time

import grpc
import pytest

from conftest import H2_LIMITS_DEFAULTS
from env.clients import H2_ERRORS, RawH2, grpc_channel, wait_until
from env.h2_raw_backend import RawH2Backend

pytestmark = pytest.mark.proxy_only

HANG_GUARD = 10.0
LISTENER = "h2_lim"
CLUSTER = "up"
PROTOCOL_ERROR = 1
HELD = "/a/held?wait=held"
AFTER = "/a/after"


def _req(path, method="GET", authority="localhost"):
    return [(":method", method), (":scheme", "http"), (":path", path), (":authority", authority)]


def _stat(m, name, **labels):
    return m.stat(name, **labels) or 0


class _Answer:
    """What came back on one stream of a RawH2 connection."""

    def __init__(self, frames):
        self.frames = frames
        self.blocks = [f.headers for f in frames if f.type == RawH2.HEADERS]
        self.data = b"".join(f.payload for f in frames if f.type == RawH2.DATA)
        self.ended = any(f.flags & RawH2.END_STREAM for f in frames if f.type in (RawH2.HEADERS, RawH2.DATA))
        resets = [f.error_code for f in frames if f.type == RawH2.RST_STREAM]
        self.reset = resets[0] if resets else None

    @property
    def headers(self):
        return self.blocks[0] if self.blocks else None

    @property
    def status(self):
        return int(dict(self.headers)[":status"]) if self.headers else None

    def header(self, name):
        vals = [v for k, v in self.headers or [] if k == name]
        return vals[0] if vals else None

    @property
    def refused(self):
        """RST_STREAM(PROTOCOL_ERROR) and nothing before it."""
        return self.reset == PROTOCOL_ERROR and not self.blocks and not self.data

    def __repr__(self):
        code = None if self.reset is None else H2_ERRORS.get(self.reset, self.reset)
        return f"<answer blocks={self.blocks} data={self.data!r} ended={self.ended} reset={code}>"


def _answer(c, sid):
    """Read until stream `sid` ends or is reset (bounded); the connection
    must stay open."""
    f = c.read_until(lambda f: f.stream == sid and (
        f.type == RawH2.RST_STREAM or (f.type in (RawH2.HEADERS, RawH2.DATA) and f.flags & RawH2.END_STREAM)),
        timeout=HANG_GUARD)
    assert f is not None, f"connection ended ({c.eof}) before stream {sid} did; frames: {c.frames[-10:]}"
    return _Answer([x for x in c.frames if x.stream == sid])


def _send_steps(c, b, sid, steps):
    """Send one request's steps on stream `sid`: ("headers", fields,
    end_stream), ("data", bytes, end_stream), or ("upstream", path, n): wait
    until the backend has the stream for `path` and n of its body bytes."""
    for step in steps:
        if step[0] == "headers":
            c.send(c.headers(sid, step[1], end_stream=step[2]))
        elif step[0] == "data":
            c.send(c.data(sid, step[1], end_stream=step[2]))
        else:
            _, path, n = step
            wait_until(lambda: [s for s in b.streams_for(path) if s["rx_bytes"] >= n], timeout=HANG_GUARD,
                       what=f"{path} (and {n} body bytes) at the backend")


@contextlib.contextmanager
def _conn(b, m):
    """A RawH2 connection to meshd with stream 1 (HELD) open at the backend.
    On leaving: a valid request on the same connection gets 200, then HELD
    is released and gets its 200, and meshd never sent GOAWAY."""
    with RawH2(m.listen_port, timeout=HANG_GUARD) as c:
        c.send(c.headers(1, _req(HELD)))
        wait_until(lambda: b.streams_for(HELD), timeout=HANG_GUARD, what="the held request at the backend")
        c.next_sid = 3
        yield c
        sid = c.next_sid
        c.send(c.headers(sid, _req(AFTER)))
        a = _answer(c, sid)
        assert a.status == 200 and a.ended and a.data == b"hello from the h2 backend\n", a
        b.release("held")
        a = _answer(c, 1)
        assert a.status == 200 and a.ended and a.reset is None, f"the held stream was disturbed: {a!r}"
        assert not c.goaways(), f"meshd ended the connection: {c.goaways()}"


def _send(c, b, steps):
    sid = c.next_sid
    c.next_sid += 2
    _send_steps(c, b, sid, steps)
    return _answer(c, sid)


def _only_good_streams(b):
    paths = sorted(s["path"] for s in b.streams)
    assert paths == [AFTER, HELD], f"the backend saw more than the valid requests: {paths}"


# -- A. downstream: refused before routing -------------------------------------------

CONNECTION_SPECIFIC = [
    ("connection", "keep-alive"),
    ("keep-alive", "timeout=5"),
    ("proxy-connection", "keep-alive"),
    ("transfer-encoding", "chunked"),
    ("upgrade", "websocket"),
]
_GET = _req("/bad/x")
REFUSED = {
    "uppercase-name": _GET + [("X-Upper", "1")],
    **{name: _GET + [(name, value)] for name, value in CONNECTION_SPECIFIC},
    "te-gzip": _GET + [("te", "gzip")],
    "no-method": [h for h in _GET if h[0] != ":method"],
    "no-path": [h for h in _GET if h[0] != ":path"],
    "no-scheme": [h for h in _GET if h[0] != ":scheme"],
    "no-authority-no-host": [h for h in _GET if h[0] != ":authority"],
    "two-paths": _GET + [(":path", "/bad/y")],
    "two-methods": _GET[:1] + _GET,
    "two-schemes": _GET + [(":scheme", "http")],
    "two-authorities": _GET + [(":authority", "localhost")],
    "unknown-pseudo": _GET + [(":foo", "bar")],
    "pseudo-after-regular": _GET[:2] + [("x-a", "1")] + _GET[2:],
    "content-length-not-a-number": _req("/bad/x", "POST") + [("content-length", "abc")],
    "content-length-twice": _req("/bad/x", "POST") + [("content-length", "0"), ("content-length", "0")],
    "end-stream-with-content-length-5": _req("/bad/x", "POST") + [("content-length", "5")],
    "path-without-slash": _req("bad/x"),
    "get-path-asterisk": _req("*"),
    "connect-with-path": [(":method", "CONNECT"), (":authority", "localhost:443"), (":path", "/bad/x")],
    "connect-with-scheme": [(":method", "CONNECT"), (":authority", "localhost:443"), (":scheme", "http")],
    "connect-without-authority": [(":method", "CONNECT")],
    "protocol-without-connect": _GET + [(":protocol", "websocket")],
    "empty-path": _req(""),
    "space-in-path": _req("/bad/a b"),
    "control-byte-in-path": _req("/bad/a\x01b"),
    "space-in-method": _req("/bad/x", "GE T"),
    "control-byte-in-method": _req("/bad/x", "GE\x01T"),
}

# Malformed too (RFC 9113 §8.2.1): the whole request is refused.
INVALID_REGULAR = {
    "control-byte-in-value": ("x-bad", "a\x01b"),
    "leading-space-in-value": ("x-bad", " v"),
    "trailing-space-in-value": ("x-bad", "v "),
    "leading-tab-in-value": ("x-bad", "\tv"),
    "trailing-tab-in-value": ("x-bad", "v\t"),
    "paren-in-name": ("x(y", "1"),
    "space-in-name": ("x y", "1"),
}


@pytest.mark.parametrize("fields", list(REFUSED.values()), ids=list(REFUSED))
def test_malformed_request_refused(h2_limits, fields):
    b, m = h2_limits()
    with _conn(b, m) as c:
        a = _send(c, b, [("headers", fields, True)])
        assert a.refused, f"expected RST_STREAM(PROTOCOL_ERROR) only: {a!r}"
    _only_good_streams(b)


@pytest.mark.parametrize("field", list(INVALID_REGULAR.values()), ids=list(INVALID_REGULAR))
def test_invalid_regular_field_refuses_request(h2_limits, field):
    """Not dropped: the whole request is refused."""
    b, m = h2_limits()
    with _conn(b, m) as c:
        a = _send(c, b, [("headers", _req("/bad/x") + [("x-before", "1"), field, ("x-after", "2")], True)])
        assert a.refused, f"expected RST_STREAM(PROTOCOL_ERROR) only: {a!r}"
    _only_good_streams(b)


# -- A. downstream: refused after the headers went upstream ---------------------------

FORWARDED_THEN_REFUSED = {
    "body-shorter-than-content-length": [
        ("headers", _req("/bad/short", "POST") + [("content-length", "5")], False),
        ("upstream", "/bad/short", 0),
        ("data", b"abc", True),
    ],
    "body-longer-than-content-length": [
        ("headers", _req("/bad/long", "POST") + [("content-length", "2")], False),
        ("upstream", "/bad/long", 0),
        ("data", b"abcde", False),
    ],
    "pseudo-header-in-trailers": [
        ("headers", _req("/bad/trailer-pseudo", "POST"), False),
        ("data", b"abc", False),
        ("upstream", "/bad/trailer-pseudo", 3),
        ("headers", [("x-trailer", "1"), (":path", "/bad/x")], True),
    ],
    "trailers-without-end-stream": [
        ("headers", _req("/bad/trailer-open", "POST"), False),
        ("data", b"abc", False),
        ("upstream", "/bad/trailer-open", 3),
        ("headers", [("x-trailer", "1")], False),
    ],
}


@pytest.mark.parametrize("steps", list(FORWARDED_THEN_REFUSED.values()), ids=list(FORWARDED_THEN_REFUSED))
def test_malformed_body_or_trailers_refused_and_upstream_reset(h2_limits, steps):
    """The request went upstream when its headers were complete (the steps
    wait for the backend to have it); the violation resets both sides with
    PROTOCOL_ERROR and the backend never sees the request complete."""
    b, m = h2_limits()
    path = dict(steps[0][1])[":path"]
    with _conn(b, m) as c:
        a = _send(c, b, steps)
        assert a.refused, f"expected RST_STREAM(PROTOCOL_ERROR) only: {a!r}"
    s = wait_until(lambda: [s for s in b.streams_for(path) if s["reset_by_peer"] is not None], timeout=HANG_GUARD,
                   what=f"RST_STREAM on {path} at the backend")
    assert [x["reset_by_peer"] for x in s] == [PROTOCOL_ERROR], s
    assert not s[0]["request_ended"] and b.requests_for("/bad/") == [], "the request completed at the backend"
    if path == "/bad/long":
        assert s[0]["rx_bytes"] == 0, f"the excess DATA frame went upstream: {s}"


# -- A. downstream: accepted ----------------------------------------------------------


def test_te_trailers_accepted(h2_limits):
    b, m = h2_limits()
    with _conn(b, m) as c:
        a = _send(c, b, [("headers", _req("/ok/te") + [("te", "trailers")], True)])
        assert a.status == 200 and a.ended, a
    assert [v for k, v in b.requests_for("/ok/te")[0]["headers"] if k == "te"] == ["trailers"]


def test_host_without_authority_accepted(h2_limits):
    """Forwarded as it came: host, and no :authority."""
    b, m = h2_limits()
    with _conn(b, m) as c:
        a = _send(c, b, [("headers", _req("/ok/host")[:3] + [("host", "localhost")], True)])
        assert a.status == 200 and a.ended, a
    rec = b.requests_for("/ok/host")[0]
    assert rec["authority"] is None and [v for k, v in rec["headers"] if k == "host"] == ["localhost"], rec


def test_content_length_matching_body_accepted(h2_limits):
    b, m = h2_limits()
    with _conn(b, m) as c:
        a = _send(c, b, [("headers", _req("/ok/cl", "POST") + [("content-length", "3")], False),
                         ("data", b"abc", True)])
        assert a.status == 200 and a.ended and a.data == b"abc", a
        a = _send(c, b, [("headers", _req("/ok/cl0", "POST") + [("content-length", "0")], True)])
        assert a.status == 200 and a.ended and a.data == b"", a


ROUTER_ANSWERS = {
    # (fields, status): they pass the HTTP/2 rules; the router answers them.
    "options-asterisk-no-route": ([(":method", "OPTIONS"), (":scheme", "http"), (":path", "*"),
                                   (":authority", "localhost")], 404),
    "plain-connect": ([(":method", "CONNECT"), (":authority", "localhost:443")], 400),
    "extended-connect": ([(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"),
                          (":path", "/ws"), (":authority", "localhost")], 501),
}


@pytest.mark.parametrize("fields,status", list(ROUTER_ANSWERS.values()), ids=list(ROUTER_ANSWERS))
def test_well_formed_request_answered_by_router(h2_limits, fields, status):
    b, m = h2_limits()
    with _conn(b, m) as c:
        a = _send(c, b, [("headers", fields, True)])
        assert a.status == status and a.ended and a.reset is None, a
    _only_good_streams(b)


# -- B. upstream: a backend that lies -------------------------------------------------


@pytest.fixture
def liar(meshd, ports):
    """(RawH2Backend, Meshd): bundles/h2_limits (one worker) in front of a
    raw backend."""
    b = RawH2Backend(ports.get(), name="liar").start()
    try:
        m = meshd("h2_limits", concurrency=1, **{**H2_LIMITS_DEFAULTS, "upstream_port": b.port})
        yield b, m
    finally:
        b.stop()
    assert not b.errors, b.errors


@contextlib.contextmanager
def _upstream_conn(b, m):
    """A RawH2 connection to meshd; one good request before and after the
    test's (same downstream connection), and the upstream connection is the
    same one throughout and still open."""
    with RawH2(m.listen_port, timeout=HANG_GUARD) as c:
        c.next_sid = 1
        assert _send(c, b, [("headers", _req("/ok/before"), True)]).data == b"ok\n"
        yield c
        a = _send(c, b, [("headers", _req("/ok/after"), True)])
        assert a.status == 200 and a.ended and a.data == b"ok\n", a
        assert not c.goaways(), f"meshd ended the downstream connection: {c.goaways()}"
    assert b.conn_ids() == [1] and not b.conns[1]["closed"], f"upstream connections: {b.conns}"


LIES_REFUSED = {
    "no-status": [("headers", [("content-type", "text/plain")], True)],
    "status-20": [("headers", [(":status", "20")], True)],
    "status-abc": [("headers", [(":status", "abc")], True)],
    "two-statuses": [("headers", [(":status", "200"), (":status", "200")], True)],
    "status-after-regular": [("headers", [("x-a", "1"), (":status", "200")], True)],
    "connection-close": [("headers", [(":status", "200"), ("connection", "close")], True)],
    "transfer-encoding-chunked": [("headers", [(":status", "200"), ("transfer-encoding", "chunked")], True)],
    "uppercase-name": [("headers", [(":status", "200"), ("X-Upper", "1")], True)],
    "status-101": [("headers", [(":status", "101")], True)],
    # The brief expected the field dropped and the rest delivered.
    "control-byte-in-value": [("headers", [(":status", "200"), ("x-before", "1"), ("x-bad", "a\x01b"),
                                           ("x-after", "2"), ("content-length", "3")], False),
                              ("data", b"ok\n", True)],
    # END_STREAM on the headers of a GET's answer that declares a body.
    "content-length-10-without-body": [("headers", [(":status", "200"), ("content-length", "10")], True)],
}


def _upstream_reset(b, m, path, resets_before):
    rec = wait_until(lambda: [r for r in b.requests_for(path) if r["reset_by_peer"] is not None],
                     timeout=HANG_GUARD, what=f"meshd's RST_STREAM on {path} at the backend")
    assert [r["reset_by_peer"] for r in rec] == [PROTOCOL_ERROR], rec
    wait_until(lambda: _stat(m, "meshd_cluster_upstream_rq_reset_total", cluster=CLUSTER) == resets_before + 1,
               timeout=HANG_GUARD, what="meshd_cluster_upstream_rq_reset_total + 1")


@pytest.mark.parametrize("steps", list(LIES_REFUSED.values()), ids=list(LIES_REFUSED))
def test_malformed_response_headers_reset_both_streams(liar, steps):
    """Not a 502: the client gets RST_STREAM(PROTOCOL_ERROR), as the upstream."""
    b, m = liar
    b.answer("/lie", steps)
    resets = _stat(m, "meshd_cluster_upstream_rq_reset_total", cluster=CLUSTER)
    with _upstream_conn(b, m) as c:
        a = _send(c, b, [("headers", _req("/lie"), True)])
        assert a.refused, f"expected RST_STREAM(PROTOCOL_ERROR) only: {a!r}"
    _upstream_reset(b, m, "/lie", resets)


def test_response_body_shorter_than_content_length(liar):
    """The headers and the 5 bytes reach the client, then the reset."""
    b, m = liar
    b.answer("/lie", [("headers", [(":status", "200"), ("content-length", "10")], False),
                      ("data", b"12345", True)])
    resets = _stat(m, "meshd_cluster_upstream_rq_reset_total", cluster=CLUSTER)
    with _upstream_conn(b, m) as c:
        a = _send(c, b, [("headers", _req("/lie"), True)])
        assert a.status == 200 and a.header("content-length") == "10", a
        assert a.data == b"12345" and not a.ended and a.reset == PROTOCOL_ERROR, a
    _upstream_reset(b, m, "/lie", resets)


def test_204_with_data_frame(liar):
    """The 204's headers reach the client (without END_STREAM), then the reset."""
    b, m = liar
    b.answer("/lie", [("headers", [(":status", "204")], False), ("data", b"12345", True)])
    resets = _stat(m, "meshd_cluster_upstream_rq_reset_total", cluster=CLUSTER)
    with _upstream_conn(b, m) as c:
        a = _send(c, b, [("headers", _req("/lie"), True)])
        assert a.status == 204 and len(a.blocks) == 1, a
        assert a.data == b"" and not a.ended and a.reset == PROTOCOL_ERROR, a
    _upstream_reset(b, m, "/lie", resets)


def test_early_hints_not_forwarded(liar):
    b, m = liar
    b.answer("/lie", [("headers", [(":status", "103"), ("link", "</s.css>; rel=preload")], False),
                      ("headers", [(":status", "200"), ("content-length", "3")], False),
                      ("data", b"ok\n", True)])
    resets = _stat(m, "meshd_cluster_upstream_rq_reset_total", cluster=CLUSTER)
    with _upstream_conn(b, m) as c:
        a = _send(c, b, [("headers", _req("/lie"), True)])
        assert len(a.blocks) == 1 and a.status == 200 and a.header("link") is None, a
        assert a.data == b"ok\n" and a.ended and a.reset is None, a
    assert _stat(m, "meshd_cluster_upstream_rq_reset_total", cluster=CLUSTER) == resets


def test_head_response_with_content_length_and_no_body(liar):
    b, m = liar
    b.answer("/lie", [("headers", [(":status", "200"), ("content-length", "10")], True)])
    with _upstream_conn(b, m) as c:
        a = _send(c, b, [("headers", _req("/lie", "HEAD"), True)])
        assert a.status == 200 and a.header("content-length") == "10", a
        assert a.data == b"" and a.ended and a.reset is None, a
    assert b.requests_for("/lie")[0]["reset_by_peer"] is None


GRPC_OK = [("headers", [(":status", "200"), ("content-type", "application/grpc")], False),
           ("data", b"\0\0\0\0\0", False), ("headers", [("grpc-status", "0")], True)]
GRPC_LIES = {
    "no-status": [("headers", [("content-type", "application/grpc")], True)],
    "connection-close": [("headers", [(":status", "200"), ("content-type", "application/grpc"),
                                      ("connection", "close")], True)],
    "control-byte-in-value": [("headers", [(":status", "200"), ("content-type", "application/grpc"),
                                           ("x-bad", "a\x01b")], False)] + GRPC_OK[1:],
    "body-shorter-than-content-length": [("headers", [(":status", "200"), ("content-type", "application/grpc"),
                                                      ("content-length", "10")], False),
                                         ("data", b"\0\0\0\0\0", True)],
}


@pytest.mark.parametrize("steps", list(GRPC_LIES.values()), ids=list(GRPC_LIES))
def test_grpc_call_to_lying_backend_is_internal(liar, steps):
    """grpcio reads the RST_STREAM(PROTOCOL_ERROR) as INTERNAL, at once; the
    same channel's next call succeeds."""
    b, m = liar
    b.answer("/test.v1.Echo/Unary", steps)
    b.answer("/test.v1.Echo/Ok", GRPC_OK)
    ch = grpc_channel(m.listen_port)
    try:
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/test.v1.Echo/Unary")(b"", timeout=HANG_GUARD)
        assert e.value.code() == grpc.StatusCode.INTERNAL, (e.value.code(), e.value.details())
        assert time.monotonic() - t0 < HANG_GUARD / 2
        assert ch.unary_unary("/test.v1.Echo/Ok")(b"", timeout=HANG_GUARD) == b""
    finally:
        ch.close()
    assert b.conn_ids() == [1] and not b.conns[1]["closed"], f"upstream connections: {b.conns}"


# -- C. counters ----------------------------------------------------------------------

# Every refusal of part A.
ALL_REFUSED = ([[("headers", f, True)] for f in REFUSED.values()]
               + [[("headers", _req("/bad/x") + [f], True)] for f in INVALID_REGULAR.values()]
               + list(FORWARDED_THEN_REFUSED.values()))


def _refuse_all(b, m):
    """Every refused request of part A on one connection; returns how many."""
    with _conn(b, m) as c:
        for steps in ALL_REFUSED:
            a = _send(c, b, steps)
            assert a.refused, f"{steps}: {a!r}"
    return len(ALL_REFUSED)


def test_refused_requests_counted_as_requests_not_connection_errors(h2_limits):
    b, m = h2_limits()
    before = m.stats()
    n = _refuse_all(b, m)
    wait_until(lambda: _stat(m, "meshd_listener_http_rq_active", listener=LISTENER) == 0, timeout=HANG_GUARD,
               what="meshd_listener_http_rq_active back to 0")
    after = m.stats()

    def delta(name):
        return (after.get(name, listener=LISTENER) or 0) - (before.get(name, listener=LISTENER) or 0)

    print(f"{n} refused; downstream_reset +{delta('meshd_listener_http_rq_downstream_reset_total')}, "
          f"bad_request +{delta('meshd_listener_http_rq_bad_request_total')}")
    assert delta("meshd_listener_http_rq_total") == n + 2  # and HELD and AFTER
    assert delta("meshd_listener_downstream_cx_total") == 1
    assert delta("meshd_listener_http2_protocol_error_total") == 0
    assert delta("meshd_listener_http_rq_downstream_reset_total") == 0


def test_refused_requests_counted_as_bad_requests(h2_limits):
    b, m = h2_limits()
    before = _stat(m, "meshd_listener_http_rq_bad_request_total", listener=LISTENER)
    n = _refuse_all(b, m)
    wait_until(lambda: _stat(m, "meshd_listener_http_rq_bad_request_total", listener=LISTENER) - before >= n,
               timeout=1.0, what=f"meshd_listener_http_rq_bad_request_total + {n}")
    assert _stat(m, "meshd_listener_http_rq_bad_request_total", listener=LISTENER) - before == n
