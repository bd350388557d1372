# SPDX-License-Identifier: Apache-2.0
"""HTTP/1.1 *upstreams* (clusters with `protocol: HTTP1`): meshd in front of
env.h1_origin.H1Origin, a hand-written HTTP/1.1 origin that parses strictly
and records every request and connection (bundles/h1_upstream: h2c, HTTP1
and AUTO listeners on one route configuration).

  - test_helpers_*: H1Origin checked directly with curl and a raw client,
    without meshd, so the failures below are meshd's;
  - the upstream pool: keep-alive reuse (curl --http1.1 and HTTP/2 clients,
    counted at the origin), at most max_connections_per_endpoint idle
    connections kept, pool idle timeout, stale pooled connections (closed by
    the origin while idle, or closed across a request: retried once);
  - HTTP/2 client -> HTTP/1.1 upstream: :authority becomes one Host, no
    pseudo-header or HTTP/2-only field leaks, request bodies framed by
    Content-Length or chunked, chunked responses with trailers,
    close-delimited bodies, 204/304/HEAD without a body, 1xx not forwarded;
  - HTTP/1.1 client -> HTTP/1.1 upstream: a 100 MiB chunked upload,
    keep-alive on both sides, an origin's `Connection: close`;
  - hop-by-hop fields both ways;
  - bad upstream responses (502 / reset) and an origin reset before
    answering (503: README "no connection to an upstream -> 503"), and meshd
    serving afterwards;
  - a wrk smoke run (skipped without wrk).

meshd runs with one worker (concurrency=1) so that every downstream
connection shares one upstream pool, and connection counts at the origin are
exact. No timing is asserted: waits are bounded polls for a state."""
import hashlib
import re
import shutil
import subprocess

import pytest

from env.clients import H2Client, H2MultiClient, wait_until
from env.curl import curl_h1
from env.h1 import HANG_GUARD, H1Conn, chunked, request_bytes
from env.h1_origin import KNOWN_BODY, H1Origin
from env.h2_backend import det_body, det_body_sha256

POOL_IDLE_MS = 300
UUID4_RE = re.compile(r"\A[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\Z")
HOP_REQ = {"connection", "keep-alive", "proxy-connection", "upgrade", "te", "transfer-encoding"}
HOP_RESP = {"connection", "keep-alive", "proxy-connection", "upgrade", "transfer-encoding"}
MiB = 1 << 20


# -- fixtures and helpers -----------------------------------------------------------------


@pytest.fixture
def origin():
    o = H1Origin().start()
    yield o
    o.stop()


class Svc:
    """meshd from bundles/h1_upstream in front of `origin`."""

    def __init__(self, m, origin):
        self.meshd = m
        self.origin = origin
        self.h2_port = m.values["h2_port"]
        self.port = m.values["listen_port"]
        self.auto_port = m.values["auto_port"]

    def cstat(self, name, cluster="origin"):
        v = self.meshd.stat(name, cluster=cluster)
        return 0 if v is None else v

    def h2(self):
        return H2Client(self.h2_port, timeout=HANG_GUARD)


@pytest.fixture
def svc(meshd, origin, backends):
    """Factory: svc(pool_idle_ms=POOL_IDLE_MS, concurrency=1) -> Svc."""

    def make(pool_idle_ms=POOL_IDLE_MS, concurrency=1):
        m = meshd("h1_upstream", concurrency=concurrency, origin_port=origin.port,
                  down_port=backends.refusing().port, pool_idle_ms=pool_idle_ms)
        return Svc(m, origin)

    return make


def h2_req(c, path, method="GET", authority="meshd.test", headers=(), body=b"", trailers=None):
    hdrs = [(":method", method), (":scheme", "http"), (":path", path), (":authority", authority)]
    return c.request(hdrs + list(headers), body=body, trailers=trailers, timeout=HANG_GUARD)


def hval(headers, name):
    return [v for k, v in headers if k == name]


def one_rec(origin, target, n=1):
    recs = wait_until(lambda: len(origin.requests_for(target)) >= n and origin.requests_for(target),
                      timeout=HANG_GUARD, what=f"{target} at the origin")
    assert len(recs) == n, recs
    return recs[-1]


def no_violations(origin):
    assert origin.violations == [], f"the origin saw malformed requests: {origin.violations}"


def get(port, path, headers=()):
    with H1Conn(port) as c:
        c.send(request_bytes("GET", path, headers=headers))
        return c.read_response()


# -- the origin, checked without meshd -------------------------------------------------------


def test_helpers_origin_direct(origin, workdir):
    o = origin
    # keep-alive with curl: one connection for three URLs
    r = curl_h1(o.port, ["/o/a", f"/o/b?size={3 * MiB + 5}", "/o/c?chunked=1&size=70000"], workdir)
    assert r.rc == 0 and [t["http_code"] for t in r.transfers] == [200] * 3, r
    assert [t["num_connects"] for t in r.transfers] == [1, 0, 0], r
    assert r.body(0) == KNOWN_BODY and r.body(1) == det_body(3 * MiB + 5) and r.body(2) == det_body(70000)
    assert o.accepted == 1 and [x["seq"] for x in o.requests] == [1, 2, 3]
    assert hval(o.requests[0]["headers"], "host") == [f"127.0.0.1:{o.port}"]
    with H1Conn(o.port) as c:
        # chunked with trailers
        c.send(request_bytes("GET", "/t?trailer=X-Sum:abc&trailer=X-Two:2&size=20000"))
        t = c.read_response()
        assert t.framing == "chunked" and t.body == det_body(20000) and t.trailers == [("x-sum", "abc"), ("x-two", "2")], t
        assert t.header("x-origin-conn") == "2" and t.header("x-origin-seq") == "1", t
        # HEAD: length, no body; 204 / 304 (with and without length): no body
        c.send(request_bytes("HEAD", "/h?size=1234"))
        h = c.read_response(head=True)
        assert h.status == 200 and h.header("content-length") == "1234", h
        for st, extra in ((204, ""), (304, ""), (304, "&cl=10")):
            c.send(request_bytes("GET", f"/nb?status={st}{extra}"))
            n = c.read_response()
            assert n.status == st and n.header("transfer-encoding") is None, n
            assert n.header("content-length") == ("10" if extra else None), n
        # interim responses, then the final one
        c.send(request_bytes("GET", "/i?interim=100&interim=103"))
        i = c.read_response()
        assert [s for s, _ in i.informational] == [100, 103] and i.status == 200 and i.body == KNOWN_BODY, i
        # echo of a chunked request body, and of a Content-Length one; digest
        data = det_body(300000)[::-1]
        c.send(request_bytes("POST", "/e?echo=1", headers=["Transfer-Encoding: chunked"]) + chunked(data))
        e = c.read_response()
        assert e.body == data and e.header("x-echo-body-len") == str(len(data)), e
        c.send(request_bytes("PUT", "/e2?echo", body=b"xyz"))
        assert c.read_response().body == b"xyz"
        c.send(request_bytes("POST", "/d?digest=1", body=data))
        assert c.read_response().body == f"{hashlib.sha256(data).hexdigest()} {len(data)}\n".encode()
        # hop-by-hop fields on request
        c.send(request_bytes("GET", "/hop?hop=1&delay_ms=20"))
        hp = c.read_response()
        assert hp.header("x-origin-hop") == "secret" and hp.header("keep-alive"), hp
        # close=1: Connection: close, then a FIN
        c.send(request_bytes("GET", "/c?close=1"))
        cr = c.read_response()
        assert cr.closes and cr.body == KNOWN_BODY, cr
        assert c.expect_closed() == "eof"
    recs = o.requests_for("/e?echo=1")
    assert recs[0]["framing"] == "chunked" and recs[0]["body_len"] == 300000
    assert o.requests_for("/e2")[0]["framing"] == "length"
    # eof=1: a close-delimited body
    with H1Conn(o.port) as c:
        c.send(request_bytes("GET", "/eof?eof=1&size=100000"))
        r = c.read_response()
        assert r.framing == "eof" and r.body == det_body(100000) and c.eof == "eof", r
    # idle_close_ms: the origin closes the idle connection after the response
    with H1Conn(o.port) as c:
        c.send(request_bytes("GET", "/ic?idle_close_ms=50"))
        assert c.read_response().status == 200
        assert c.expect_closed() == "eof"
    # drop_next: the next request is read, then the connection closes (FIN / RST)
    for how, end in (("1", "eof"), ("rst", "rst")):
        with H1Conn(o.port) as c:
            c.send(request_bytes("GET", f"/dn?drop_next={how}"))
            assert c.read_response().status == 200
            c.send(request_bytes("GET", f"/dn-dropped-{how}"))
            assert c.expect_closed() == end
        assert o.requests_for(f"/dn-dropped-{how}")[0]["answered"] is False
    # bad responses and a reset
    for bad in ("1", "header", "chunk"):
        with H1Conn(o.port) as c:
            c.send(request_bytes("GET", f"/bad?bad={bad}"))
            with pytest.raises(AssertionError):
                c.read_response()
    with H1Conn(o.port) as c:
        c.send(request_bytes("GET", "/rst?reset=1"))
        with pytest.raises(AssertionError, match="connection ended"):
            c.read_response()
        assert c.eof == "rst"
    no_violations(o)
    # strictness: a bare LF, and Content-Length with Transfer-Encoding, are refused
    for raw in (b"GET / HTTP/1.1\nHost: a\n\n",
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                b"GET / HTTP/1.1\r\n\r\n"):
        with H1Conn(o.port) as c:
            c.send(raw)
            assert c.read_response().status == 400
    assert len(o.violations) == 3, o.violations
    wait_until(lambda: o.open_conns() == [], timeout=HANG_GUARD, what="every origin connection closed")
    ends = dict(o.conn_end)
    assert ends[1] == "peer_eof" and ends[2] == "server_close", ends
    assert list(ends.values()).count("server_reset") == 2, ends  # drop_next=rst, reset=1
    wait_until(lambda: o.finished == o.accepted, timeout=HANG_GUARD, what="every handler thread done")
    assert o.errors == [], o.errors


# -- the upstream pool ------------------------------------------------------------------------


@pytest.mark.proxy_only
def test_keep_alive_reuses_one_origin_connection(svc, workdir):
    s = svc()
    o = s.origin
    r = curl_h1(s.port, ["/o/k1", "/o/k2?size=100000", "/o/k3?chunked=1", "/o/k4"], workdir)
    assert r.rc == 0 and [t["http_code"] for t in r.transfers] == [200] * 4, r
    assert [t["num_connects"] for t in r.transfers] == [1, 0, 0, 0], r
    assert r.body(1) == det_body(100000) and r.body(2) == KNOWN_BODY
    with s.h2() as c:
        for i in range(4):
            resp = h2_req(c, f"/o/h2-{i}")
            assert resp.status == 200 and bytes(resp.data) == KNOWN_BODY, resp
    r = curl_h1(s.auto_port, ["/o/a1", "/o/a2"], workdir)
    assert r.rc == 0 and [t["http_code"] for t in r.transfers] == [200] * 2, r
    assert o.accepted == 1, f"meshd opened {o.accepted} origin connections for sequential requests"
    assert {rec["conn"] for rec in o.requests} == {1} and len(o.requests) == 10
    assert o.open_conns() == [1]
    assert s.cstat("meshd_cluster_upstream_rq_total") == 10
    assert s.cstat("meshd_cluster_upstream_cx_active") == 1
    no_violations(o)


def _concurrent(s, n, path, delay_ms=300):
    c = H2MultiClient(s.h2_port, timeout=HANG_GUARD)
    try:
        sids = [c.start([(":method", "GET"), (":scheme", "http"), (":path", f"{path}{i}?delay_ms={delay_ms}"),
                         (":authority", "meshd.test")]) for i in range(n)]
        c.wait(lambda: all(c.done(x) for x in sids), timeout=HANG_GUARD, what=f"{n} responses")
        return [c.responses[x] for x in sids]
    finally:
        c.close()


@pytest.mark.proxy_only
def test_pool_keeps_at_most_max_connections_idle(svc):
    """HTTP1 pools: one request per connection; after a burst, at most
    max_connections_per_endpoint (2) idle connections stay (cluster.proto:
    "HTTP1: idle connections kept per endpoint and worker"), and the next
    requests reuse them."""
    s = svc(pool_idle_ms=60000)
    o = s.origin
    resps = _concurrent(s, 6, "/p2/c")
    assert [r.status for r in resps] == [200] * 6, resps
    assert all(bytes(r.data) == KNOWN_BODY for r in resps)
    wait_until(lambda: len(o.open_conns()) == 2, timeout=HANG_GUARD,
               what="meshd to close the origin connections beyond 2 idle")
    kept = set(o.open_conns())
    assert all(o.conn_end[c] == "peer_eof" for c in o.conn_end), o.conn_end
    before = o.accepted
    with s.h2() as c:
        for i in range(3):
            assert h2_req(c, f"/p2/after{i}").status == 200
    assert o.accepted == before, "an idle pooled connection was not reused"
    assert {r["conn"] for r in o.requests_for("/p2/after")} <= kept
    no_violations(o)


@pytest.mark.proxy_only
def test_pool_idle_timeout_closes_origin_connection(svc):
    s = svc(pool_idle_ms=POOL_IDLE_MS)
    o = s.origin
    with s.h2() as c:
        r = h2_req(c, "/p2/idle")
        assert r.status == 200, r
        cid = one_rec(o, "/p2/idle")["conn"]
        wait_until(lambda: o.conn_end.get(cid), timeout=HANG_GUARD, what="meshd to close the idle connection")
        assert o.conn_end[cid] == "peer_eof", o.conn_end
        r = h2_req(c, "/p2/after-idle")
        assert r.status == 200, r
    assert one_rec(o, "/p2/after-idle")["conn"] != cid
    # the default pool (5 minutes) keeps its connection meanwhile
    with s.h2() as c:
        assert h2_req(c, "/o/x1").status == 200
    x1 = one_rec(o, "/o/x1")["conn"]
    assert x1 in o.open_conns()
    no_violations(o)


@pytest.mark.proxy_only
def test_cx_active_tracks_http1_connections(svc):
    s = svc(pool_idle_ms=POOL_IDLE_MS)
    o = s.origin
    resps = _concurrent(s, 6, "/p2/g")
    assert [r.status for r in resps] == [200] * 6, resps
    wait_until(lambda: o.conn_end and len(o.open_conns()) <= 2, timeout=HANG_GUARD, what="closes over the cap")
    assert s.cstat("meshd_cluster_upstream_cx_total", "origin_pool2") == 6
    assert s.cstat("meshd_cluster_upstream_cx_active", "origin_pool2") == len(o.open_conns())
    wait_until(lambda: o.open_conns() == [], timeout=HANG_GUARD, what="the pool idle timeout")
    assert s.cstat("meshd_cluster_upstream_cx_active", "origin_pool2") == 0


@pytest.mark.proxy_only
@pytest.mark.parametrize("client", ["h1", "h2"])
def test_stale_connection_closed_while_idle(svc, client):
    """The origin closes a kept-alive connection after idle_close_ms; the
    next request goes out on a fresh connection and succeeds."""
    s = svc()
    o = s.origin
    assert get(s.port, "/o/s1?idle_close_ms=50").status == 200
    wait_until(lambda: o.conn_end.get(1) == "server_close", timeout=HANG_GUARD, what="the origin's close")
    if client == "h1":
        r = get(s.port, "/o/s2")
        assert r.status == 200 and r.body == KNOWN_BODY, r
    else:
        with s.h2() as c:
            r = h2_req(c, "/o/s2")
            assert r.status == 200 and bytes(r.data) == KNOWN_BODY, r
    assert one_rec(o, "/o/s2")["conn"] == 2
    assert s.cstat("meshd_cluster_upstream_rq_unavailable_total") == 0
    no_violations(o)


@pytest.mark.proxy_only
@pytest.mark.parametrize("how", ["1", "rst"], ids=["fin", "rst"])
@pytest.mark.parametrize("client", ["h1", "h2"])
def test_stale_connection_closed_across_request_is_retried(svc, client, how):
    """The origin closes a pooled connection as a request arrives on it (it
    read it, answered nothing): a GET without body is sent again once on a
    fresh connection (meshd_cluster_upstream_rq_refused_retry_total)."""
    s = svc()
    o = s.origin
    assert get(s.port, f"/o/d1?drop_next={how}").status == 200
    if client == "h1":
        r = get(s.port, "/o/d2")
        status, body = r.status, r.body
    else:
        with s.h2() as c:
            r = h2_req(c, "/o/d2")
            status, body = r.status, bytes(r.data)
    assert status == 200 and body == KNOWN_BODY, r
    recs = o.requests_for("/o/d2")
    assert [(x["conn"], x["answered"]) for x in recs] == [(1, False), (2, True)], recs
    assert s.cstat("meshd_cluster_upstream_rq_refused_retry_total") == 1
    assert s.cstat("meshd_cluster_upstream_rq_unavailable_total") == 0
    no_violations(o)


@pytest.mark.proxy_only
def test_stale_connection_request_with_body_not_replayed(svc):
    """Documented: only requests none of whose body was sent are retried. A
    POST whose body went out on a connection the origin then closed gets 503
    and reaches the origin once."""
    s = svc()
    o = s.origin
    assert get(s.port, "/o/p1?drop_next=1").status == 200
    with H1Conn(s.port) as c:
        c.send(request_bytes("POST", "/o/p2", body=b"payload"))
        r = c.read_response()
    assert r.status == 503, r
    recs = o.requests_for("/o/p2")
    assert len(recs) == 1 and recs[0]["body"] == b"payload", recs
    assert s.cstat("meshd_cluster_upstream_rq_refused_retry_total") == 0
    assert get(s.port, "/o/p3").status == 200


# -- HTTP/2 client -> HTTP/1.1 upstream ---------------------------------------------------


@pytest.mark.proxy_only
def test_h2_host_without_authority_becomes_the_host_line(svc):
    """RFC 9113 §8.3.1 lets a request name its host in host alone: the
    origin gets that as its one Host (it got an empty one)."""
    s = svc()
    with s.h2() as c:
        r = c.request([(":method", "GET"), (":scheme", "http"), (":path", "/o/hostonly"),
                       ("host", "svc.example:8080")], timeout=HANG_GUARD)
        assert r.status == 200, r
    rec = one_rec(s.origin, "/o/hostonly")
    assert hval(rec["headers"], "host") == ["svc.example:8080"], rec["headers"]


@pytest.mark.proxy_only
def test_h2_request_becomes_http11(svc):
    s = svc()
    o = s.origin
    with s.h2() as c:
        r = h2_req(c, "/o/hdrs?a=1&b=%2F", authority="svc.example:8080",
                   headers=[("te", "trailers"), ("x-custom", "Value  With Spaces"), ("x-multi", "a"),
                            ("x-multi", "b"), ("user-agent", "h2-test"), ("cookie", "a=1"), ("cookie", "b=2")])
        assert r.status == 200 and bytes(r.data) == KNOWN_BODY, r
    rec = one_rec(o, "/o/hdrs?a=1&b=%2F")
    assert rec["version"] == "1.1" and rec["method"] == "GET" and rec["framing"] == "none", rec
    assert hval(rec["headers"], "host") == ["svc.example:8080"], rec["headers"]
    names = [k for k, _ in rec["headers"]]
    assert not [n for n in names if n.startswith(":")], f"pseudo-headers reached the origin: {names}"
    assert not set(names) & HOP_REQ, f"{set(names) & HOP_REQ} reached the origin: {rec['headers']}"
    assert hval(rec["headers"], "x-custom") == ["Value  With Spaces"]
    assert hval(rec["headers"], "x-multi") == ["a", "b"]
    assert hval(rec["headers"], "user-agent") == ["h2-test"]
    assert hval(rec["headers"], "x-forwarded-for") == ["127.0.0.1"]
    rid = hval(rec["headers"], "x-request-id")
    assert len(rid) == 1 and UUID4_RE.match(rid[0]), rec["headers"]
    cookies = "; ".join(hval(rec["headers"], "cookie"))
    assert "a=1" in cookies and "b=2" in cookies, rec["headers"]
    no_violations(o)


@pytest.mark.proxy_only
@pytest.mark.parametrize("with_length", [True, False], ids=["content-length", "no-length"])
def test_h2_request_body_framing(svc, with_length):
    """DATA frames become a Content-Length body when the client sent
    content-length, a chunked one otherwise."""
    s = svc()
    o = s.origin
    data = det_body(700000)[::-1]
    hdrs = [("content-type", "application/x-test")] + ([("content-length", str(len(data)))] if with_length else [])
    with s.h2() as c:
        r = h2_req(c, "/o/body?echo=1", method="POST", headers=hdrs, body=data)
        assert r.status == 200 and bytes(r.data) == data, r
        r2 = h2_req(c, "/o/body-empty?digest=1", method="POST", headers=[("content-length", "0")] if with_length else [],
                    body=b"")
        assert r2.status == 200, r2
    rec = one_rec(o, "/o/body?echo=1")
    assert rec["framing"] == ("length" if with_length else "chunked"), rec["headers"]
    assert rec["body_len"] == len(data) and rec["body_sha256"] == hashlib.sha256(data).hexdigest()
    assert hval(rec["headers"], "content-length") == ([str(len(data))] if with_length else [])
    assert hval(rec["headers"], "content-type") == ["application/x-test"]
    assert one_rec(o, "/o/body-empty?digest=1")["body_len"] == 0
    no_violations(o)


@pytest.mark.proxy_only
def test_h2_chunked_response_with_trailers(svc):
    s = svc()
    o = s.origin
    with s.h2() as c:
        r = h2_req(c, "/o/tr?size=150000&trailer=x-checksum:abc123&trailer=grpc-status:0")
        assert r.status == 200, r
        assert r.events == ["headers", "data", "trailers", "end"], r
        assert bytes(r.data) == det_body(150000)
        assert r.trailers == [("x-checksum", "abc123"), ("grpc-status", "0")], r.trailers
        names = {k for k, _ in r.headers}
        assert not names & HOP_RESP, r.headers
        assert r.header("content-length") is None, r.headers
        # chunked without trailers: DATA then END_STREAM
        r = h2_req(c, "/o/ch?chunked=1&size=40000")
        assert r.status == 200 and bytes(r.data) == det_body(40000) and r.trailers is None, r
        assert r.events == ["headers", "data", "end"], r
    assert o.accepted == 1
    no_violations(o)


@pytest.mark.proxy_only
@pytest.mark.parametrize("client", ["h1", "h2"])
def test_post_with_empty_body_keeps_content_length(svc, client):
    s = svc()
    o = s.origin
    if client == "h1":
        with H1Conn(s.port) as c:
            c.send(request_bytes("POST", "/o/cl0", headers=["Content-Length: 0"]))
            assert c.read_response().status == 200
    else:
        with s.h2() as c:
            assert h2_req(c, "/o/cl0", method="POST", headers=[("content-length", "0")]).status == 200
    rec = one_rec(o, "/o/cl0")
    assert hval(rec["headers"], "content-length") == ["0"], rec["headers"]
    no_violations(o)


@pytest.mark.proxy_only
@pytest.mark.parametrize("client", ["h1", "h2"])
def test_request_trailers_reach_origin(svc, client):
    s = svc()
    o = s.origin
    if client == "h1":
        with H1Conn(s.port) as c:
            c.send(request_bytes("POST", "/o/rt", headers=["Transfer-Encoding: chunked", "Trailer: x-t"])
                   + b"3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n")
            assert c.read_response().status == 200
    else:
        with s.h2() as c:
            assert h2_req(c, "/o/rt", method="POST", body=b"abc", trailers=[("x-t", "1")]).status == 200
    rec = one_rec(o, "/o/rt")
    assert rec["framing"] == "chunked" and rec["body"] == b"abc", rec
    assert rec["trailers"] == [("x-t", "1")], rec


@pytest.mark.proxy_only
@pytest.mark.parametrize("chunked_resp", [False, True], ids=["length", "chunked"])
def test_large_response_both_clients(svc, workdir, chunked_resp):
    s = svc()
    n = 24 * MiB + 7
    q = f"size={n}" + ("&chunked=1" if chunked_resp else "")
    r = curl_h1(s.port, [f"/o/big1?{q}", "/o/small"], workdir)
    assert r.rc == 0 and [t["http_code"] for t in r.transfers] == [200, 200], r
    assert [t["num_connects"] for t in r.transfers] == [1, 0], r
    assert hashlib.sha256(r.body(0)).hexdigest() == det_body_sha256(n)
    with s.h2() as c:
        resp = h2_req(c, f"/o/big2?{q}")
        assert resp.status == 200 and resp.ended and len(resp.data) == n, resp
        assert hashlib.sha256(resp.data).hexdigest() == det_body_sha256(n)
    assert s.origin.accepted == 1
    no_violations(s.origin)


@pytest.mark.proxy_only
def test_h2_close_delimited_response(svc):
    s = svc()
    o = s.origin
    with s.h2() as c:
        r = h2_req(c, f"/o/eof?eof=1&size={2 * MiB + 3}")
        assert r.status == 200 and r.ended and r.reset is None, r
        assert len(r.data) == 2 * MiB + 3 and hashlib.sha256(r.data).hexdigest() == det_body_sha256(2 * MiB + 3)
        r = h2_req(c, "/o/eof-empty?eof=1&size=0")
        assert r.status == 200 and r.ended and bytes(r.data) == b"", r
        r = h2_req(c, "/o/after-eof")
        assert r.status == 200, r
    assert [x["conn"] for x in o.requests] == [1, 2, 3], "a close-delimited connection must not be reused"
    no_violations(o)


@pytest.mark.proxy_only
@pytest.mark.parametrize("path,method,status", [
    ("/o/nb?status=204", "GET", 204),
    ("/o/nb?status=304", "GET", 304),
    ("/o/nb?size=5000", "HEAD", 200),
], ids=["204", "304", "HEAD"])
def test_h2_no_body_responses(svc, path, method, status):
    s = svc()
    o = s.origin
    with s.h2() as c:
        r = h2_req(c, path, method=method)
        assert r.status == status and r.events == ["headers", "end"] and bytes(r.data) == b"", r
        if method == "HEAD":
            assert r.header("content-length") == "5000", r.headers
        r = h2_req(c, "/o/after-nb")
        assert r.status == 200 and bytes(r.data) == KNOWN_BODY, r
    assert o.accepted == 1, "the connection should be reused after a body-less response"
    no_violations(o)


@pytest.mark.proxy_only
def test_h2_304_with_content_length(svc):
    """RFC 9110 §8.6: a 304 may carry the Content-Length of the body it does
    not send. The client gets headers + END_STREAM, and the origin
    connection stays reusable."""
    s = svc()
    o = s.origin
    with s.h2() as c:
        r = h2_req(c, "/o/nm?status=304&cl=10")
        assert r.status == 304 and r.events == ["headers", "end"], r
        r = h2_req(c, "/o/after-304")
        assert r.status == 200 and bytes(r.data) == KNOWN_BODY, r
    assert one_rec(o, "/o/after-304")["conn"] == 1, "the 304's connection was not reused"


@pytest.mark.proxy_only
def test_h2_304_with_content_length_then_origin_closes(svc):
    """The connection a 304-with-Content-Length left waiting is closed by the
    origin: meshd frees it (no crash, no sanitizer report, rq_active back to
    0) and goes on serving."""
    s = svc()
    o = s.origin
    with s.h2() as c:
        r = h2_req(c, "/o/nmc?status=304&cl=10&idle_close_ms=50")
        assert r.status == 304 and r.events == ["headers", "end"], r
        wait_until(lambda: o.conn_end.get(1) == "server_close", timeout=HANG_GUARD, what="the origin's close")
        wait_until(lambda: s.cstat("meshd_cluster_upstream_rq_active") == 0, timeout=HANG_GUARD,
                   what="rq_active back to 0")
        r = h2_req(c, "/o/after-304c")
        assert r.status == 200 and bytes(r.data) == KNOWN_BODY, r
    assert s.meshd.alive()


@pytest.mark.proxy_only
@pytest.mark.parametrize("interim", ["100", "103", "100&interim=103"])
def test_h2_interim_not_forwarded_as_final(svc, interim):
    s = svc()
    with s.h2() as c:
        r = h2_req(c, f"/o/i?interim={interim}&size=1000")
        assert r.status == 200 and bytes(r.data) == det_body(1000), r
        assert all(int(dict(h)[":status"]) < 200 for h in r.informational), r.informational
        r = h2_req(c, "/o/after-i")
        assert r.status == 200, r
    assert s.origin.accepted == 1
    no_violations(s.origin)


# -- HTTP/1.1 client -> HTTP/1.1 upstream -------------------------------------------------


@pytest.mark.proxy_only
def test_h1_100mib_chunked_upload(svc, workdir):
    s = svc()
    o = s.origin
    total = 100 * MiB
    f = workdir / "up.bin"
    seg = det_body(MiB)
    with open(f, "wb") as fh:
        for _ in range(total // MiB):
            fh.write(seg)
    want = det_body_sha256(total)
    r = curl_h1(s.port, "/o/up?digest=1", workdir, data_file=f,
                headers=["Transfer-Encoding: chunked", "Content-Type: application/octet-stream"], max_time=60)
    assert r.rc == 0 and r.transfers[0]["http_code"] == 200, r
    assert r.body(0) == f"{want} {total}\n".encode(), r.body(0)
    rec = one_rec(o, "/o/up?digest=1")
    assert rec["framing"] == "chunked" and rec["body_len"] == total and rec["body_sha256"] == want
    leaked = {k for k, _ in rec["headers"]} & ((HOP_REQ - {"transfer-encoding"}) | {"expect"})
    assert not leaked, f"{leaked} reached the origin: {rec['headers']}"
    f.unlink()
    no_violations(o)


@pytest.mark.proxy_only
def test_h1_echo_and_keep_alive_both_sides(svc):
    s = svc()
    o = s.origin
    data = det_body(5 * MiB + 11)[::-1]
    with H1Conn(s.port) as c:
        c.send(request_bytes("POST", "/o/echo?echo=1", headers=["Transfer-Encoding: chunked"]) + chunked(data))
        r = c.read_response()
        assert r.status == 200 and r.body == data and not r.closes, r.headers
        c.send(request_bytes("PUT", "/o/echo2?echo=1", body=data[:100000]))
        r = c.read_response()
        assert r.status == 200 and r.body == data[:100000], r.headers
        c.send(request_bytes("GET", "/o/after-echo"))
        assert c.read_response().body == KNOWN_BODY
        assert c.is_open(0.2)
    assert [(x["conn"], x["framing"]) for x in o.requests] == [(1, "chunked"), (1, "length"), (1, "none")]
    assert o.requests[0]["body_len"] == len(data)
    assert o.accepted == 1
    no_violations(o)


@pytest.mark.proxy_only
def test_origin_connection_close_not_reused(svc):
    s = svc()
    o = s.origin
    with H1Conn(s.port) as c:
        c.send(request_bytes("GET", "/o/c1?close=1"))
        r = c.read_response()
        assert r.status == 200 and r.body == KNOWN_BODY, r
        assert not r.closes, "the origin's Connection: close is not the client's"
        c.send(request_bytes("GET", "/o/c2"))
        r = c.read_response()
        assert r.status == 200, r
    assert one_rec(o, "/o/c1?close=1")["conn"] == 1 and one_rec(o, "/o/c2")["conn"] == 2
    wait_until(lambda: o.conn_end.get(1), timeout=HANG_GUARD, what="connection 1's end")
    assert o.conn_end[1] == "server_close", o.conn_end
    assert len(o.requests) == 2
    no_violations(o)


# -- hop-by-hop ----------------------------------------------------------------------------


@pytest.mark.proxy_only
def test_hop_by_hop_request_fields_not_forwarded(svc):
    s = svc()
    o = s.origin
    with H1Conn(s.port) as c:
        c.send(request_bytes("GET", "/o/hop", headers=[
            "Connection: keep-alive, X-Hop-A, x-hop-b", "X-Hop-A: 1", "X-Hop-B: 2", "Keep-Alive: timeout=5",
            "Proxy-Connection: keep-alive", "Upgrade: foo/1", "TE: trailers", "X-Keep: yes"]))
        r = c.read_response()
        assert r.status == 200, r
    rec = one_rec(o, "/o/hop")
    names = {k for k, _ in rec["headers"]}
    leaked = names & (HOP_REQ | {"x-hop-a", "x-hop-b"})
    assert not leaked, f"{leaked} reached the origin: {rec['headers']}"
    assert hval(rec["headers"], "x-keep") == ["yes"]
    no_violations(o)


@pytest.mark.proxy_only
def test_hop_by_hop_response_fields_not_forwarded_h2(svc):
    s = svc()
    with s.h2() as c:
        r = h2_req(c, "/o/hop?hop=1&chunked=1")
        assert r.status == 200 and bytes(r.data) == KNOWN_BODY, r
    names = {k for k, _ in r.headers}
    assert not names & HOP_RESP, f"{names & HOP_RESP} reached the HTTP/2 client: {r.headers}"


@pytest.mark.proxy_only
@pytest.mark.parametrize("client", ["h1", "h2"])
def test_connection_nominated_response_field_not_forwarded(svc, client):
    s = svc()
    if client == "h2":
        with s.h2() as c:
            r = h2_req(c, "/o/hopn?hop=1")
            assert r.status == 200, r
            headers = r.headers
    else:
        r = get(s.port, "/o/hopn?hop=1")
        assert r.status == 200, r
        headers = r.headers
        assert not (r.header("keep-alive") or "").startswith("timeout=5"), headers
    assert hval(headers, "x-origin-hop") == [], f"x-origin-hop reached the client: {headers}"


# -- bad upstream responses and resets -----------------------------------------------------


@pytest.mark.proxy_only
@pytest.mark.parametrize("bad", ["status", "header"])
def test_bad_response_h1_client_gets_502(svc, bad):
    s = svc()
    with H1Conn(s.port) as c:
        c.send(request_bytes("GET", f"/o/bad?bad={bad}"))
        r = c.read_response()
        assert r.status == 502 and r.header("server") is None, r
    assert get(s.port, "/o/after-bad").status == 200
    assert s.cstat("meshd_cluster_upstream_rq_reset_total") == 1
    no_violations(s.origin)


@pytest.mark.proxy_only
@pytest.mark.parametrize("bad", ["status", "header"])
def test_bad_response_h2_client_gets_reset_or_502(svc, bad):
    s = svc()
    with s.h2() as c:
        r = h2_req(c, f"/o/bad?bad={bad}")
        assert r.reset is not None or r.status == 502, r
        assert r.status != 200, r
        r = h2_req(c, "/o/after-bad")
        assert r.status == 200 and bytes(r.data) == KNOWN_BODY, r
    no_violations(s.origin)


@pytest.mark.proxy_only
@pytest.mark.parametrize("client", ["h1", "h2"])
def test_bad_chunk_mid_body_is_not_a_complete_response(svc, client):
    s = svc()
    if client == "h1":
        c = H1Conn(s.port, timeout=5.0)
        try:
            c.send(request_bytes("GET", "/o/badc?bad=chunk"))
            with pytest.raises(AssertionError, match="connection ended"):
                c.read_response()
        finally:
            c.abort()
        assert get(s.port, "/o/after").status == 200
    else:
        with s.h2() as c:
            r = h2_req(c, "/o/badc?bad=chunk")
            assert r.reset is not None and not r.ended, r
            assert h2_req(c, "/o/after").status == 200


@pytest.mark.proxy_only
@pytest.mark.parametrize("client", ["h1", "h2"])
def test_origin_reset_before_answer_is_503(svc, client):
    """The origin resets a fresh connection after reading the request: 503
    (router.c: a lost connection before any response -> 503 "upstream
    connection lost"; README: no connection to an upstream -> 503)."""
    s = svc()
    o = s.origin
    if client == "h1":
        with H1Conn(s.port) as c:
            c.send(request_bytes("GET", "/o/rst?reset=1"))
            r = c.read_response()
            assert r.status == 503 and r.body, r
            c.send(request_bytes("GET", "/o/after-rst"))
            assert c.read_response().status == 200
    else:
        with s.h2() as c:
            r = h2_req(c, "/o/rst?reset=1")
            assert r.status == 503, r
            assert h2_req(c, "/o/after-rst").status == 200
    assert len(o.requests_for("/o/rst")) == 1, "a request on a fresh connection must not be retried"
    assert s.cstat("meshd_cluster_upstream_rq_unavailable_total") == 1
    no_violations(o)


@pytest.mark.proxy_only
def test_origin_reset_on_reused_connection(svc):
    """The same reset on a pooled connection looks like a stale connection:
    the GET is sent once more on a fresh connection (reset again): 503."""
    s = svc()
    o = s.origin
    assert get(s.port, "/o/warm").status == 200
    r = get(s.port, "/o/rst2?reset=1")
    assert r.status == 503, r
    assert [x["conn"] for x in o.requests_for("/o/rst2")] == [1, 2]
    assert s.cstat("meshd_cluster_upstream_rq_refused_retry_total") == 1
    assert get(s.port, "/o/after").status == 200


@pytest.mark.proxy_only
def test_upstream_down_is_503(svc):
    s = svc()
    assert get(s.port, "/down/x").status == 503
    with s.h2() as c:
        assert h2_req(c, "/down/y").status == 503
    assert s.cstat("meshd_cluster_upstream_rq_unavailable_total", "down") == 2


# -- wrk smoke -----------------------------------------------------------------------------


@pytest.mark.proxy_only
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed")
def test_wrk_smoke(svc):
    s = svc()
    p = subprocess.run(["wrk", "-t1", "-c4", "-d1s", "--timeout", "5s", f"http://127.0.0.1:{s.port}/o/wrk"],
                       capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    out = p.stdout.decode("utf-8", "replace")
    assert p.returncode == 0, out + p.stderr.decode("utf-8", "replace")
    m = re.search(r"(\d+) requests in", out)
    assert m and int(m.group(1)) > 0, out
    assert "Socket errors" not in out and "Non-2xx" not in out, out
    assert s.origin.accepted <= 4 + 1, f"{s.origin.accepted} origin connections for 4 client connections"
    no_violations(s.origin)
