# SPDX-License-Identifier: Apache-2.0
"""HTTP/1.1 and AUTO hardening (issue 14): what an attacker tried.

- A request meshd refuses for its framing never reaches the upstream, even
  with a pooled upstream connection ready to take it at once (the
  Transfer-Encoding checks run before routing).
- An HTTP/1.1 upstream's response with a transfer coding other than chunked
  is answered 502 (the coding would reach the client still applied).
- Request-headers timeout (request_headers_timeout_ms, 300 ms here): a
  client that trickles its header section, on the first request of a
  connection or a later keep-alive one, plaintext or TLS, gets 408 with
  Connection: close and the connection closes; counted in
  meshd_listener_http_rq_timeout_total. A request whose header section is
  complete is not cut by it (its body may take longer; a body that stops
  coming gets 504 from the stream idle timeout, and its connection then
  closes at the same timeout instead of waiting for the rest forever). On
  an AUTO listener without tcp_fallback, a partial method or HTTP/2 preface
  is closed at the request-headers timeout (counted as detect_none).
- Gauges: every way a client leaves (mid-headers, mid-body, during
  100-continue, mid-response, in an upgraded tunnel, by FIN or RST) brings
  meshd_listener_downstream_cx_active and _http_rq_active back to 0, and
  leaving an unfinished exchange counts _rq_downstream_reset_total.

Waits are for events (a response, an EOF, a stat value) under bounded
deadlines; the only sleeps pace a trickling client.
"""
import select
import socket
import ssl
import time

import pytest

from env.clients import wait_until
from env.h1 import HANG_GUARD, H1Conn, H1Upstream, request_bytes
from env.h2_backend import KNOWN_BODY
from env.tls import TlsH1Conn, client_context, cluster, downstream_tls, http_bundle, http_listener, pki  # noqa: F401
from env.ws_upgrade import raw_upgrade, ws_service  # noqa: F401 - ws_service is a fixture

pytestmark = pytest.mark.proxy_only

HEADERS_TIMEOUT_MS = 300
TRICKLE = 0.1  # seconds between the bytes of a trickling client (pacing, not a wait)
LISTENERS = ("h1_in", "tls_in")


class Svc:
    """meshd with h1_in (HTTP1), tls_in (HTTP1 over TLS) and auto_in (AUTO,
    no tcp_fallback), every path to an H1Upstream."""

    def __init__(self, m, upstream, pki):
        self.m = m
        self.upstream = upstream
        self.pki = pki

    def port(self, listener):
        return self.m.values[f"{listener}_port"]

    def conn(self, listener="h1_in"):
        if listener == "tls_in":
            return TlsH1Conn(self.port(listener), client_context(ca=self.pki.ca.bundle, alpn=["http/1.1"]))
        return H1Conn(self.port(listener))

    def stat(self, name, listener="h1_in"):
        v = self.m.stat(name, listener=listener)
        assert v is not None, f"{name}{{listener={listener!r}}} missing from /stats/prometheus"
        return v

    def paths(self):
        return [q["path"] for q in self.upstream.requests]


@pytest.fixture
def svc(meshd, pki, ports):
    """Factory: svc(concurrency=2, idle_timeout_ms=60000,
    stream_idle_timeout_ms=0) -> Svc."""
    made = []

    def make(concurrency=2, idle_timeout_ms=60000, stream_idle_timeout_ms=0):
        up = H1Upstream(name="h2").start()
        made.append(up)
        extra = (f"request_headers_timeout_ms: {HEADERS_TIMEOUT_MS} idle_timeout_ms: {idle_timeout_ms}"
                 f" stream_idle_timeout_ms: {stream_idle_timeout_ms}")
        tls = downstream_tls(pki.meshd, client_certificate="NONE")
        text = http_bundle([http_listener("h1_in", "{h1_in_port}", "HTTP1", hcm_extra=extra),
                            http_listener("tls_in", "{tls_in_port}", "HTTP1", tls, hcm_extra=extra),
                            http_listener("auto_in", "{auto_in_port}", "AUTO", hcm_extra=extra)],
                           [cluster("app", "{upstream_port}")])
        m = meshd(text, concurrency=concurrency, upstream_port=up.port)
        return Svc(m, up, pki)

    yield make
    for up in made:
        up.stop()


# -- nothing leaves meshd before the request is known valid ----------------------------------------

BAD_TE = [
    ("identity", 400),
    ("gzip", 400),
    ("x-made-up", 400),
    ("chunked, gzip", 400),
    ("gzip, chunked", 501),
    ("identity, chunked", 501),
]


def test_refused_framing_never_reaches_a_pooled_upstream(svc):
    """One worker, its upstream connection pooled and ready: a DELETE whose
    Transfer-Encoding is refused is never sent (the issue saw 6 of 10 such
    DELETEs executed)."""
    s = svc(concurrency=1)
    with s.conn() as c:  # warms the pool
        c.send(request_bytes("GET", "/plain/warm"))
        assert c.read_response().status == 200
    answers = []
    for round_ in range(3):
        for te, status in BAD_TE:
            with s.conn() as c:
                c.send(request_bytes("DELETE", f"/plain/deleted-{round_}", headers=[f"Transfer-Encoding: {te}"])
                       + b"5\r\nhello\r\n0\r\n\r\n")
                r = c.read_response()
                closed = r.closes and c.expect_closed() in ("eof", "rst")
                answers.append((te, status, r.status, r.closes, closed))
    with s.conn() as c:
        c.send(request_bytes("GET", "/plain/after"))
        assert c.read_response().status == 200
    wait_until(lambda: "/plain/after" in s.paths(), timeout=HANG_GUARD, what="/plain/after upstream")
    assert [p for p in s.paths() if p.startswith("/plain/deleted")] == [], s.paths()
    assert [a for a in answers if a[1:] != (a[1], a[1], True, True)] == [], answers


@pytest.mark.parametrize("te", ["chunked", "Chunked", "CHUNKED"])
def test_chunked_in_any_case_is_served(svc, te):
    s = svc()
    with s.conn() as c:
        c.send(request_bytes("POST", "/plain/chunked", headers=[f"Transfer-Encoding: {te}"])
               + b"5\r\nhello\r\n0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.body == b"hello", r


# -- request-headers timeout ----------------------------------------------------------------------


def _answered(c, wait):
    """Whether meshd sent something (kept in c.buf) or closed within `wait`
    seconds. A TLS record that is not data (a session ticket) is not an
    answer."""
    if not select.select([c.sock], [], [], wait)[0]:
        return False
    c.sock.settimeout(0)
    try:
        b = c.sock.recv(1 << 16)
    except (ssl.SSLWantReadError, BlockingIOError):
        return False
    except ConnectionResetError:
        c.eof = "rst"
        return True
    finally:
        c.sock.settimeout(c.timeout)
    if not b:
        c.eof = "eof"
    c.buf += b
    return True


def _trickle_until_answer(c, data, what):
    """Sends `data` one byte per TRICKLE seconds until meshd answers or
    closes. Fails (hang guard) if meshd is still silent after HANG_GUARD
    seconds or the bytes run out."""
    deadline = time.monotonic() + HANG_GUARD
    for i in range(len(data)):
        if _answered(c, TRICKLE):
            return
        assert time.monotonic() < deadline, f"{what}: still no answer after {HANG_GUARD}s of trickling"
        try:
            c.send(data[i:i + 1])
        except (BrokenPipeError, ConnectionResetError):
            return
    raise AssertionError(f"{what}: the whole request went out one byte at a time with no answer")


def _expect_408(c, what):
    r = c.read_response()
    assert r.status == 408 and r.closes, f"{what}: {r!r}"
    assert c.expect_closed() in ("eof", "rst")


TRICKLED = request_bytes("GET", "/plain/trickled", headers=[f"X-Pad-{i}: {'v' * 20}" for i in range(40)])


@pytest.mark.parametrize("listener", LISTENERS)
def test_trickled_headers_get_408(svc, listener):
    """One header byte every 100 ms: activity does not extend the 300 ms."""
    s = svc()
    before = s.stat("meshd_listener_http_rq_timeout_total", listener)
    with s.conn(listener) as c:
        _trickle_until_answer(c, TRICKLED, "trickled header section")
        _expect_408(c, "trickled header section")
    assert "/plain/trickled" not in s.paths()
    wait_until(lambda: s.stat("meshd_listener_http_rq_timeout_total", listener) == before + 1, timeout=HANG_GUARD,
               what="rq_timeout_total to count the 408")
    wait_until(lambda: s.stat("meshd_listener_downstream_cx_active", listener) == 0, timeout=HANG_GUARD,
               what="downstream_cx_active back to 0")
    assert s.stat("meshd_listener_http_rq_active", listener) == 0


@pytest.mark.parametrize("listener", LISTENERS)
def test_stalled_keepalive_request_gets_408(svc, listener):
    """The second request on a kept-alive connection: part of its request
    line, then nothing."""
    s = svc()
    with s.conn(listener) as c:
        c.send(request_bytes("GET", "/plain/first"))
        r = c.read_response()
        assert r.status == 200 and r.body == KNOWN_BODY, r
        c.send(b"GET /plain/sec")
        _expect_408(c, "stalled second request")


@pytest.mark.parametrize("listener", LISTENERS)
def test_slow_body_is_not_cut_by_the_headers_timeout(svc, listener):
    """The header section is complete: its body may take longer than 300 ms
    (the stream's own timers apply to it)."""
    s = svc()
    with s.conn(listener) as c:
        c.send(request_bytes("POST", "/plain/slow-body", headers=["Content-Length: 6"]))
        for b in b"hello!":  # paced by meshd's silence: nothing may come before the body ends
            assert not _answered(c, TRICKLE), f"answered or closed before the body ended: {bytes(c.buf)!r}"
            c.send(bytes([b]))
        r = c.read_response()
        assert r.status == 200 and r.body == b"hello!", r


@pytest.mark.parametrize("listener", LISTENERS)
def test_stalled_body_is_ended_by_the_stream_idle_timeout(svc, listener):
    """After the header section the stream's timers apply: a body that stops
    coming gets 504 at stream_idle_timeout_ms, and the connection, whose
    request can no longer end cleanly, closes."""
    s = svc(stream_idle_timeout_ms=HEADERS_TIMEOUT_MS)
    with s.conn(listener) as c:
        c.send(request_bytes("POST", "/plain/stalled-body", headers=["Content-Length: 10"]) + b"ab")
        r = c.read_response()
        assert r.status == 504, r
        assert c.expect_closed() in ("eof", "rst")
    wait_until(lambda: s.stat("meshd_listener_downstream_cx_active", listener) == 0, timeout=HANG_GUARD,
               what="downstream_cx_active back to 0")
    assert s.stat("meshd_listener_http_rq_active", listener) == 0


@pytest.mark.parametrize("partial", [b"GE", b"PRI * HTTP/2"], ids=["method", "h2-preface"])
def test_auto_partial_prefix_is_closed(svc, partial):
    """AUTO without tcp_fallback: a partial method or preface, then nothing,
    is closed at the request-headers timeout."""
    s = svc()
    before = s.stat("meshd_listener_detect_none_total", "auto_in")
    with H1Conn(s.port("auto_in")) as c:
        c.send(partial)
        assert c.expect_closed() in ("eof", "rst")
    wait_until(lambda: s.stat("meshd_listener_detect_none_total", "auto_in") == before + 1, timeout=HANG_GUARD,
               what="detect_none_total to count it")


def test_auto_trickled_headers_get_408(svc):
    """AUTO: the method is in (HTTP/1.1 decided), the header section
    trickles: 408 as on an HTTP1 listener."""
    s = svc()
    with H1Conn(s.port("auto_in")) as c:
        c.send(TRICKLED[:4])
        _trickle_until_answer(c, TRICKLED[4:], "trickled header section on AUTO")
        _expect_408(c, "trickled header section on AUTO")


# -- gauges on every way out ----------------------------------------------------------------------


def _leave(c, how):
    if how == "rst":
        c.abort()
    else:
        c.close()


def _mid_headers(s, c):
    c.send(b"GET /plain/half HTTP/1.1\r\nHost: a\r\nX-A:")


def _mid_body(s, c):
    c.send(request_bytes("POST", "/plain/mid-body", headers=["Content-Length: 100"]) + b"0123456789")


def _during_100_continue(s, c):
    c.send(request_bytes("POST", "/plain/continue", headers=["Content-Length: 5", "Expect: 100-continue"]))
    assert c.read_head()[1] == 100


def _mid_response(s, c):
    c.send(request_bytes("GET", "/plain/held?hold=after-headers&size=100000"))
    assert c.read_head()[1] == 200


# A FIN after a whole request is a half-close, not a leaving: meshd still
# answers (RFC 9112 §9.6), bounded by the stream idle timeout. Mid-response
# is left by RST only.
STATES = {"mid-headers": (_mid_headers, ("fin", "rst")), "mid-body": (_mid_body, ("fin", "rst")),
          "during-100-continue": (_during_100_continue, ("fin", "rst")), "mid-response": (_mid_response, ("rst",))}


@pytest.mark.parametrize("how", ["fin", "rst"])
@pytest.mark.parametrize("listener", LISTENERS)
def test_gauges_back_to_zero_whatever_the_client_does(svc, listener, how):
    """One connection at a time: put it in the state, see the request under
    way, leave, see both gauges at 0 and one more downstream reset."""
    s = svc()
    for state, (setup, hows) in STATES.items():
        if how not in hows:
            continue
        before = s.stat("meshd_listener_http_rq_downstream_reset_total", listener)
        c = s.conn(listener)
        setup(s, c)
        wait_until(lambda: s.stat("meshd_listener_http_rq_active", listener) == 1, timeout=HANG_GUARD,
                   what=f"{state}: the request under way")
        if how == "rst":
            c.abort()
        else:
            c.close()
        wait_until(lambda: s.stat("meshd_listener_downstream_cx_active", listener) == 0, timeout=HANG_GUARD,
                   what=f"{state}: downstream_cx_active back to 0")
        assert s.stat("meshd_listener_http_rq_active", listener) == 0, state
        wait_until(lambda: s.stat("meshd_listener_http_rq_downstream_reset_total", listener) == before + 1,
                   timeout=HANG_GUARD, what=f"{state}: rq_downstream_reset_total to count it")


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_gauges_back_to_zero_after_a_tunnel(ws_service, how):
    """An upgraded connection (101, bytes both ways) the client leaves: by
    RST (a reset), or by close() while the upstream keeps it open."""
    svc = ws_service()
    st = lambda name: svc.meshd.stat(name, listener="ws_h1")  # noqa: E731
    before = st("meshd_listener_http_rq_downstream_reset_total")
    t, r = raw_upgrade(svc.port, "/raw/observe")
    assert t is not None, r
    t.send(b"abc")
    svc.raw.wait_event("open", "/observe")
    assert st("meshd_listener_http_rq_active") == 1
    t.abort() if how == "rst" else t.close()
    wait_until(lambda: st("meshd_listener_downstream_cx_active") == 0, timeout=HANG_GUARD,
               what="downstream_cx_active back to 0")
    assert st("meshd_listener_http_rq_active") == 0
    if how == "rst":
        wait_until(lambda: st("meshd_listener_http_rq_downstream_reset_total") == before + 1, timeout=HANG_GUARD,
                   what="rq_downstream_reset_total to count it")


# -- transfer codings from an HTTP/1.1 upstream ----------------------------------------------------


def _read_head(sock):
    data = b""
    for _ in range(1000):
        if b"\r\n\r\n" in data:
            return data
        b = sock.recv(65536)
        assert b, f"the request ended early: {data!r}"
        data += b
    raise AssertionError(f"no end of the request head: {data!r}")


@pytest.mark.parametrize("te,status", [("gzip, chunked", 502), ("gzip", 502), ("x-made-up, chunked", 502),
                                       ("chunked", 200), ("Chunked", 200)])
def test_upstream_response_codings(meshd, backends, te, status):
    """A response's transfer coding other than chunked would reach the
    client still applied and unnamed (meshd takes chunked off and frames
    anew): 502 instead. Bodies with chunked last are chunked; "gzip" alone
    is delimited by the close (RFC 9112 §6.3)."""
    up = backends.manual()
    text = http_bundle([http_listener("h1_in", "{listen_port}", "HTTP1")],
                       [cluster("app", "{upstream_port}", protocol="HTTP1")])
    m = meshd(text, upstream_port=up.port)
    with H1Conn(m.values["listen_port"]) as c:
        c.send(request_bytes("GET", "/coded"))
        u = up.accept(timeout=HANG_GUARD)
        _read_head(u)
        chunked = te.lower().endswith("chunked")
        u.sendall(f"HTTP/1.1 200 OK\r\nTransfer-Encoding: {te}\r\n\r\n".encode()
                  + (b"5\r\nhello\r\n0\r\n\r\n" if chunked else b"hello"))
        if not chunked:
            u.shutdown(socket.SHUT_WR)
        r = c.read_response()
        assert r.status == status, r
        if status == 200:
            assert r.body == b"hello", r
