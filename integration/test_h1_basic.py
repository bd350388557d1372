# SPDX-License-Identifier: Apache-2.0
"""HTTP/1.1 downstream (listener codec HTTP1) through meshd to an HTTP/2
upstream, with curl --http1.1 and a raw socket client:
  - GET / POST / HEAD: status, headers and body both ways; the upstream sees
    :authority from Host, x-forwarded-for and x-request-id, and no Host or
    connection-specific header;
  - keep-alive: one TCP connection for several requests (curl's num_connects,
    meshd's downstream connection count, the upstream's connection count);
    `Connection: close` and HTTP/1.0 close after the response (a FIN);
  - 204 / 304 / HEAD carry no body (the next response on the connection
    parses right after them);
  - meshd's own answers (404 no route, 503 upstream down, 504 route timeout)
    are plain HTTP/1.1 responses with a body, on a connection that stays
    usable;
  - an upstream reset cannot look like a complete response."""
import re
import socket

import pytest

from env.clients import wait_until
from env.curl import curl_h1
from env.h1 import HANG_GUARD, H1Conn, h1_service, request_bytes  # noqa: F401 - fixture
from env.h2_backend import KNOWN_BODY, det_body

pytestmark = pytest.mark.proxy_only

UUID4_RE = re.compile(r"\A[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\Z")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "host", "expect"}


def _one(up, path):
    recs = wait_until(lambda: [r for r in up.requests if r["path"] == path], timeout=HANG_GUARD,
                      what=f"{path} at the upstream")
    assert len(recs) == 1, recs
    return recs[0]


def _values(rec, name):
    return [v for k, v in rec["headers"] if k == name]


def _ok(r, n=1):
    assert r.rc == 0, r
    assert len(r.transfers) == n, r
    for t in r.transfers:
        assert t["http_version"] == "1.1", r
    return r


# -- GET / POST / HEAD with curl ------------------------------------------------------


def test_get(h1_service, workdir):
    svc = h1_service()
    r = _ok(curl_h1(svc.port, "/plain/hello?x=1&y=%2F", workdir))
    assert r.transfers[0]["http_code"] == 200, r
    assert r.body() == KNOWN_BODY
    hdrs = dict(r.final_blocks()[0][1])
    assert hdrs["x-backend"] == "h2" and hdrs["x-echo-method"] == "GET", r
    assert hdrs["content-length"] == str(len(KNOWN_BODY)), r
    rec = _one(svc.upstream, "/plain/hello?x=1&y=%2F")
    assert rec["method"] == "GET" and rec["scheme"] == "http"
    assert rec["authority"] == f"127.0.0.1:{svc.port}", "Host did not become :authority"
    assert _values(rec, "x-forwarded-for") == ["127.0.0.1"], rec["headers"]
    rid = _values(rec, "x-request-id")
    assert len(rid) == 1 and UUID4_RE.match(rid[0]), rec["headers"]
    assert _values(rec, "user-agent") and _values(rec, "accept") == ["*/*"], rec["headers"]
    leaked = {k for k, _ in rec["headers"]} & HOP_BY_HOP
    assert not leaked, f"{leaked} reached the upstream: {rec['headers']}"


def test_post(h1_service, workdir):
    svc = h1_service()
    data = det_body(3 * 1024 * 1024 + 17)[::-1]
    f = workdir / "post.bin"
    f.write_bytes(data)
    r = _ok(curl_h1(svc.port, "/plain/upload", workdir, data_file=f, headers=["Content-Type: application/x-test"]))
    assert r.transfers[0]["http_code"] == 200, r
    assert r.body() == data, "the echoed body changed on the way"
    rec = _one(svc.upstream, "/plain/upload")
    assert rec["method"] == "POST" and rec["body_len"] == len(data)
    assert _values(rec, "content-type") == ["application/x-test"]
    assert not {k for k, _ in rec["headers"]} & HOP_BY_HOP, rec["headers"]


def test_head_has_no_body(h1_service, workdir):
    svc = h1_service()
    r = _ok(curl_h1(svc.port, "/plain/head", workdir, extra=["-I"]))
    assert r.transfers[0]["http_code"] == 200, r
    assert r.transfers[0]["size_download"] == 0, r
    assert dict(r.final_blocks()[0][1]).get("content-length") == str(len(KNOWN_BODY)), r
    assert _one(svc.upstream, "/plain/head")["method"] == "HEAD"
    # Raw: a HEAD then a GET on one connection; a body after the HEAD
    # response would be read as the start of the next response.
    with H1Conn(svc.port) as c:
        c.send(request_bytes("HEAD", "/plain/head2"))
        h = c.read_response(head=True)
        assert h.status == 200 and h.header("content-length") == str(len(KNOWN_BODY)), h
        c.send(request_bytes("GET", "/plain/after-head"))
        g = c.read_response()
        assert g.status == 200 and g.body == KNOWN_BODY, g
        assert g.header("x-echo-path") == "/plain/after-head"


def test_request_headers_reach_upstream(h1_service):
    """Host (any case, with a port) becomes :authority and is not forwarded;
    names arrive in lower case with their values unchanged; a client's
    x-forwarded-for gets the peer appended; a client's x-request-id is kept."""
    svc = h1_service()
    with H1Conn(svc.port) as c:
        c.send(request_bytes("GET", "/plain/hdrs", host=None, headers=[
            "hOsT: Example.COM:8080", "X-Forwarded-For: 203.0.113.7", "X-Request-Id: client-id-1",
            "X-Mixed-Case: Value With  Spaces", "X-Empty:", "X-Multi: a", "X-Multi: b"]))
        r = c.read_response()
        assert r.status == 200, r
    rec = _one(svc.upstream, "/plain/hdrs")
    assert rec["authority"] == "Example.COM:8080"
    assert _values(rec, "host") == []
    assert [p.strip() for v in _values(rec, "x-forwarded-for") for p in v.split(",")] == ["203.0.113.7", "127.0.0.1"]
    assert _values(rec, "x-request-id") == ["client-id-1"]
    assert _values(rec, "x-mixed-case") == ["Value With  Spaces"]
    assert _values(rec, "x-empty") == [""]
    assert _values(rec, "x-multi") == ["a", "b"]


def test_connection_nominated_headers_not_forwarded(h1_service):
    svc = h1_service()
    with H1Conn(svc.port) as c:
        c.send(request_bytes("GET", "/plain/nominated", headers=["Connection: keep-alive, X-Hop", "X-Hop: secret"]))
        assert c.read_response().status == 200
    rec = _one(svc.upstream, "/plain/nominated")
    assert _values(rec, "x-hop") == [], f"x-hop (a connection option) reached the upstream: {rec['headers']}"


@pytest.mark.parametrize("size", [100, 600, 3000, 20000])
def test_long_response_header_intact(h1_service, size):
    """The upstream echoes a request header of `size` bytes as a response
    header; it must reach the client whole, on its own header line."""
    svc = h1_service()
    value = ("v%05d-" % size) * (size // 7) + "z" * (size % 7)
    with H1Conn(svc.port) as c:
        c.send(request_bytes("GET", "/plain/long", headers=[f"X-Long: {value}", "X-After: after"]))
        r = c.read_response()
    assert r.status == 200, r
    got = r.header("x-echo-x-long")
    assert got == value, f"x-echo-x-long came back as {len(got or '')} bytes: {(got or '')[-80:]!r}"
    assert r.header("x-echo-x-after") == "after", r.headers


# -- keep-alive and closing -----------------------------------------------------------


def test_keep_alive_reuses_one_connection(h1_service, workdir):
    svc = h1_service()
    before = svc.stat("meshd_listener_downstream_cx_total")
    r = _ok(curl_h1(svc.port, ["/plain/k1", "/plain/k2", "/plain/k3"], workdir), n=3)
    assert [t["http_code"] for t in r.transfers] == [200, 200, 200], r
    assert [t["num_connects"] for t in r.transfers] == [1, 0, 0], "curl had to reconnect: keep-alive broken"
    assert [r.body(i) for i in range(3)] == [KNOWN_BODY] * 3
    for blk in r.final_blocks():
        assert "close" not in dict(blk[1]).get("connection", ""), blk
    assert svc.stat("meshd_listener_downstream_cx_total") - before == 1
    recs = [_one(svc.upstream, f"/plain/k{i}") for i in (1, 2, 3)]
    assert len(svc.upstream.conn_ids()) == 1, "meshd opened more than one upstream connection"
    assert len({rec["conn"] for rec in recs}) == 1
    # Raw: the connection stays open after a response, and serves the next.
    with H1Conn(svc.port) as c:
        for i in range(3):
            c.send(request_bytes("GET", f"/plain/raw{i}"))
            resp = c.read_response()
            assert resp.status == 200 and not resp.closes, resp
            assert c.is_open(0.2), "meshd closed a keep-alive connection"


def test_connection_close_honoured(h1_service, workdir):
    svc = h1_service()
    with H1Conn(svc.port) as c:
        c.send(request_bytes("GET", "/plain/close", headers=["Connection: close"]))
        r = c.read_response()
        assert r.status == 200 and r.body == KNOWN_BODY, r
        assert r.closes, f"no Connection: close in the response: {r.headers}"
        assert c.expect_closed() == "eof", "meshd reset instead of closing after the response"
    before = svc.stat("meshd_listener_downstream_cx_total")
    r = _ok(curl_h1(svc.port, ["/plain/c1", "/plain/c2"], workdir, headers=["Connection: close"]), n=2)
    assert [t["num_connects"] for t in r.transfers] == [1, 1], r
    assert svc.stat("meshd_listener_downstream_cx_total") - before == 2


def test_half_close_after_request_is_answered(h1_service):
    """A client that shuts down its sending side after a whole request still
    gets the whole response, then a FIN."""
    svc = h1_service()
    with H1Conn(svc.port) as c:
        c.send(request_bytes("GET", f"/plain/half?size={300 * 1024}"))
        c.sock.shutdown(socket.SHUT_WR)
        r = c.read_response()
        assert r.status == 200 and r.body == det_body(300 * 1024), r
        assert c.expect_closed() == "eof"


def test_http10_request_gets_a_close(h1_service, workdir):
    svc = h1_service()
    with H1Conn(svc.port) as c:
        c.send(request_bytes("GET", "/plain/old", version="1.0"))
        r = c.read_response()
        assert r.status == 200 and r.body == KNOWN_BODY, r
        assert r.closes, f"HTTP/1.0 without keep-alive: the response should say close: {r.headers}"
        assert c.expect_closed() == "eof"
    r = curl_h1(svc.port, ["/plain/o1", "/plain/o2"], workdir, http10=True)
    assert r.rc == 0 and [t["http_code"] for t in r.transfers] == [200, 200], r
    assert [t["num_connects"] for t in r.transfers] == [1, 1], r
    assert r.body(1) == KNOWN_BODY


# -- responses without a body -----------------------------------------------------------


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses(h1_service, workdir, status):
    svc = h1_service()
    with H1Conn(svc.port) as c:
        c.send(request_bytes("GET", f"/plain/nb?status={status}&nobody=1"))
        r = c.read_response()
        assert r.status == status, r
        assert r.header("transfer-encoding") is None, r
        if status == 204:
            assert r.header("content-length") is None, "RFC 9110 §8.6: no Content-Length in a 204"
        # Any body byte would be taken for the next response's status line.
        c.send(request_bytes("GET", "/plain/after-nb"))
        n = c.read_response()
        assert n.status == 200 and n.header("x-echo-path") == "/plain/after-nb", n
    r = _ok(curl_h1(svc.port, f"/plain/nbc?status={status}&nobody=1", workdir))
    assert r.transfers[0]["http_code"] == status and r.transfers[0]["size_download"] == 0, r


# -- meshd's own answers ----------------------------------------------------------------


@pytest.mark.parametrize(
    "path,status,counter",
    [
        ("/nothing/here", 404, "meshd_listener_http_rq_no_route_total"),
        ("/down/x", 503, None),
        ("/slow/x?delay_ms=30000", 504, "meshd_listener_http_rq_timeout_total"),
    ],
    ids=["no-route-404", "upstream-down-503", "timeout-504"],
)
def test_local_replies(h1_service, workdir, path, status, counter):
    svc = h1_service(route_timeout_ms=300)
    before = svc.stat(counter) if counter else None
    with H1Conn(svc.port) as c:
        c.send(request_bytes("GET", path))
        r = c.read_response()
        assert r.status == status and r.version == 1, r
        assert r.header("content-type").startswith("text/plain"), r
        assert r.framing == "length" and len(r.body) > 0, f"a local reply should carry a reason: {r!r}"
        assert r.header("x-backend") is None, "that answer came from the upstream"
        # The connection stays usable after meshd's answer.
        c.send(request_bytes("GET", "/plain/after-local"))
        n = c.read_response()
        assert n.status == 200 and n.body == KNOWN_BODY, n
    if counter:
        assert svc.stat(counter) - before == 1
    if status == 503:
        v = svc.meshd.stat("meshd_cluster_upstream_rq_unavailable_total", cluster="down")
        assert v is not None and v >= 1
    r = curl_h1(svc.port, path, workdir, max_time=HANG_GUARD)
    assert r.rc == 0 and r.transfers[0]["http_code"] == status, r
    assert r.body(0), r


# -- upstream resets ---------------------------------------------------------------------




@pytest.mark.parametrize(
    "framing,delay_ms",
    [
        ("length", 300),
        ("chunked", 300),
        pytest.param("length", 0),
        pytest.param("chunked", 0),
    ],
    ids=["length-reset-later", "chunked-reset-later", "length-reset-same-write", "chunked-reset-same-write"],
)
def test_upstream_reset_mid_body_is_not_a_complete_response(h1_service, framing, delay_ms):
    """The upstream sends headers and 16 KiB of a 100,000-byte body, then
    RST_STREAM (300 ms later, or in the same write): the connection must end
    before the body does, so the client can tell; meshd goes on serving."""
    svc = h1_service()
    extra = "&chunked=1" if framing == "chunked" else ""
    c = H1Conn(svc.port, timeout=3.0)  # hang guard: the end follows the reset at once
    try:
        c.send(request_bytes("GET", f"/plain/cut?reset=after-headers&reset_delay_ms={delay_ms}&size=100000{extra}"))
        with pytest.raises(AssertionError) as ei:
            c.read_response()
        assert "connection ended" in str(ei.value), f"no end of the connection: {ei.value}"
        assert c.eof in ("eof", "rst")
    finally:
        c.abort()
    with H1Conn(svc.port) as c:
        c.send(request_bytes("GET", "/plain/after-cut"))
        assert c.read_response().status == 200


def test_upstream_reset_before_headers(h1_service):
    """RST_STREAM before any response: the client gets no response that could
    pass for the upstream's (meshd closes, or answers 5xx), and meshd goes on."""
    svc = h1_service()
    with H1Conn(svc.port) as c:
        c.send(request_bytes("GET", "/plain/rst?reset=1"))
        try:
            r = c.read_response()
        except AssertionError as e:
            assert "connection ended" in str(e), e
        else:
            assert 500 <= r.status < 600 and r.header("x-backend") is None, r
    with H1Conn(svc.port) as c:
        c.send(request_bytes("GET", "/plain/after-rst"))
        assert c.read_response().status == 200
