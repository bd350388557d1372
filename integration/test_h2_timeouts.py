# SPDX-License-Identifier: Apache-2.0
"""Every state an HTTP/2 downstream connection or stream can sit in is
bounded by some timer (issue 14 item 2), on h2c and TLS listeners:

- a header block left open (HEADERS without END_HEADERS, CONTINUATION never
  comes), for a request or for its trailers: the whole connection can do
  nothing else (RFC 9113 §6.10), so after request_headers_timeout_ms it gets
  GOAWAY and is closed, counted in meshd_listener_http_rq_header_timeout_total;
- a stream meshd answered itself (404, 504...) that the client never
  half-closes: the stream idle timeout still resets it.

Raw frames (env.clients.RawH2); short configured timeouts; every wait is for
an event with a bounded deadline."""
import pytest

from env.clients import RawH2, wait_until
from env.tls import client_context, cluster, downstream_tls, http_bundle, http_listener, pki, tls_connect  # noqa: F401

pytestmark = pytest.mark.proxy_only

HANG_GUARD = 20.0
LISTENER = "h2_t"
HEADERS_TIMEOUT_MS = 300
STREAM_IDLE_MS = 1000
HELD = "/a/held?wait=held"


def _req(path, method="GET"):
    return [(":method", method), (":scheme", "http"), (":path", path), (":authority", "localhost")]


class Svc:
    """meshd with one HTTP/2 listener (h2c or TLS) in front of an H2Backend;
    only /a/ is routed (other paths: 404 from meshd)."""

    def __init__(self, m, backend, tls, pki):
        self.m, self.backend, self.tls, self.pki = m, backend, tls, pki
        self.port = m.values["listen_port"]

    def raw(self):
        """A RawH2 connection whose SETTINGS exchange is over: an ACK sent in
        the middle of a header block would be a protocol error."""
        sock = None
        if self.tls:
            sock = tls_connect(self.port, client_context(ca=self.pki.ca.bundle, alpn=["h2"]))
        c = RawH2(self.port, timeout=HANG_GUARD, sock=sock)
        c.read_until(lambda f: f.type == RawH2.SETTINGS and not f.flags & RawH2.ACK, timeout=HANG_GUARD)
        return c

    def stat(self, name):
        return self.m.stat(name, listener=LISTENER) or 0

    def wait_stat(self, name, want):
        wait_until(lambda: self.stat(name) == want, timeout=HANG_GUARD, what=f"{name} == {want}")


@pytest.fixture(params=["h2c", "tls"])
def svc(request, meshd, h2_backend, pki, ports):  # noqa: F811
    def make(**extra):
        b = h2_backend()
        tls = request.param == "tls"
        opts = {"request_headers_timeout_ms": HEADERS_TIMEOUT_MS, "stream_idle_timeout_ms": STREAM_IDLE_MS,
                **extra}
        hcm = " ".join(f"{k}: {v}" for k, v in opts.items())
        text = http_bundle(
            [http_listener(LISTENER, "{listen_port}", "H2C",
                           downstream_tls(pki.meshd, None, "NONE") if tls else "", hcm)],
            [cluster("app", "{upstream_port}")],
            routes=['routes { name: "a" match { prefix: "/a/" } route { cluster: "app" } }'])
        m = meshd(text, listen_port=ports.get(), upstream_port=b.port)
        return Svc(m, b, tls, pki)

    return make


def _goaway_then_end(c):
    g = c.read_until(lambda f: f.type == RawH2.GOAWAY, timeout=HANG_GUARD)
    assert g is not None, f"connection ended ({c.eof}) without GOAWAY; frames: {c.frames[-10:]}"
    c.read_to_end(timeout=HANG_GUARD)
    return g


def _all_gauges_zero(svc):
    svc.wait_stat("meshd_listener_http_rq_active", 0)
    svc.wait_stat("meshd_listener_downstream_cx_active", 0)


def test_request_header_block_left_open(svc):
    """HEADERS without END_HEADERS, and no CONTINUATION: GOAWAY, the
    connection closes, counted once."""
    s = svc()
    with s.raw() as c:
        full = c.header_block(_req("/a/x"))
        c.send(c.headers(1, None, end_stream=True, end_headers=False, block=full[: len(full) // 2]))
        g = _goaway_then_end(c)
    print(f"GOAWAY: {g!r}")
    s.wait_stat("meshd_listener_http_rq_header_timeout_total", 1)
    _all_gauges_zero(s)
    assert s.backend.streams_for("/a/") == [], "an incomplete request reached the backend"


def test_trailers_block_left_open(svc):
    """A request whose trailers' HEADERS never get their END_HEADERS: the
    connection is locked (§6.10), so it goes the same way."""
    s = svc(stream_idle_timeout_ms=60000)
    with s.raw() as c:
        c.send(c.headers(1, _req(HELD, "POST"), end_stream=False) + c.data(1, b"x"))
        wait_until(lambda: s.backend.streams_for("/a/held"), timeout=HANG_GUARD, what="the request upstream")
        trailers = c.header_block([("x-t", "1")])
        c.send(c.headers(1, None, end_stream=True, end_headers=False, block=trailers[:1]))
        _goaway_then_end(c)
    s.wait_stat("meshd_listener_http_rq_header_timeout_total", 1)
    _all_gauges_zero(s)


def test_complete_headers_are_not_cut(svc):
    """A request whose headers completed may take its time for the rest (its
    body here): the header timeout does not apply to it, nor to later
    requests on the connection."""
    s = svc(stream_idle_timeout_ms=60000)
    with s.raw() as c:
        c.send(c.headers(1, _req("/a/echo", "POST"), end_stream=False))
        wait_until(lambda: s.backend.streams_for("/a/echo"), timeout=HANG_GUARD, what="the request upstream")
        # Several header timeouts pass with the stream open and no block open.
        for i in range(4):
            c.read(timeout=HEADERS_TIMEOUT_MS / 1000.0)
            assert c.eof is None and not c.goaways(), c.frames
        c.send(c.data(1, b"body", end_stream=True))
        end = c.read_until(lambda f: f.stream == 1 and f.flags & RawH2.END_STREAM, timeout=HANG_GUARD)
        assert end is not None, c.frames
        c.send(c.headers(3, _req("/a/x")))
        end = c.read_until(lambda f: f.stream == 3 and f.flags & RawH2.END_STREAM, timeout=HANG_GUARD)
        assert end is not None and not c.goaways(), c.frames
    assert s.stat("meshd_listener_http_rq_header_timeout_total") == 0


@pytest.mark.parametrize("path", ["/nothing", "/a/late?delay_ms=5000"], ids=["404", "504"])
def test_local_reply_not_half_closed(svc, path):
    """meshd answers the stream itself (404: no route; 504: the route's
    timeout) and the client never ends its side: the stream idle timeout
    still resets the stream, the request gauge comes back to 0."""
    s = svc()
    with s.raw() as c:
        c.send(c.headers(1, _req(path, "POST") + [("grpc-timeout", "200m")], end_stream=False))
        resp = c.read_until(lambda f: f.stream == 1 and f.type == RawH2.HEADERS, timeout=HANG_GUARD)
        assert resp is not None, c.frames
        print(f"answer: {resp!r}")
        rst = c.read_until(lambda f: f.stream == 1 and f.type == RawH2.RST_STREAM, timeout=HANG_GUARD)
        assert rst is not None, f"connection ended ({c.eof}) instead; frames: {c.frames[-10:]}"
        s.wait_stat("meshd_listener_http_rq_active", 0)
