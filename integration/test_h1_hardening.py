# SPDX-License-Identifier: Apache-2.0
"""HTTP/1.1 and AUTO hardening (issue 14): what an attacker tried.

- A request meshd refuses for its framing never reaches the upstream, even
  with a pooled upstream connection ready to take it at once (the
  Transfer-Encoding checks run before routing).

Waits are for events (a response, an EOF, a stat value) under bounded
deadlines; the only sleeps pace a trickling client.
"""
import pytest

from env.clients import wait_until
from env.h1 import HANG_GUARD, H1Conn, H1Upstream, request_bytes
from env.tls import TlsH1Conn, client_context, cluster, downstream_tls, http_bundle, http_listener, pki  # noqa: F401

pytestmark = pytest.mark.proxy_only

HEADERS_TIMEOUT_MS = 300
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
    """Factory: svc(concurrency=2, idle_timeout_ms=60000) -> Svc."""
    made = []

    def make(concurrency=2, idle_timeout_ms=60000):
        up = H1Upstream(name="h2").start()
        made.append(up)
        extra = f"request_headers_timeout_ms: {HEADERS_TIMEOUT_MS} idle_timeout_ms: {idle_timeout_ms}"
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
                answers.append((te, status, r.status, r.closes, c.expect_closed() in ("eof", "rst")))
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
