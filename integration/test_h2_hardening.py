# SPDX-License-Identifier: Apache-2.0
"""HTTP/2 frame-level hardening (issue 14), each on an h2c listener and on a
TLS listener (codec H2C, ALPN h2, no client certificate), with raw frames
from env.clients.RawH2:

  - rapid reset kept up in small writes: the GOAWAY meshd decides goes out
    while the client is still sending (over TLS it used to wait for a pause
    in the input, and every stream reached the upstream);

No timing is asserted: waits are bounded polls, bounds are hang guards."""
import select

import pytest

from env.clients import H2_ERRORS, RawH2, h2_get
from env.tls import client_context, cluster, downstream_tls, http_bundle, http_listener, pki  # noqa: F401

pytestmark = pytest.mark.proxy_only

HANG_GUARD = 20.0
LISTENER = "in"
PROTOCOL_ERROR, INTERNAL_ERROR, STREAM_CLOSED, CANCEL, ENHANCE_YOUR_CALM = 1, 2, 5, 8, 11


class Svc:
    """meshd with one HTTP/2 listener `in` (h2c or TLS) in front of an
    H2Backend."""

    def __init__(self, m, backend, port, ctx):
        self.m, self.backend, self.port, self.ctx = m, backend, port, ctx

    def raw(self, **kw):
        return RawH2(self.port, timeout=HANG_GUARD, tls=self.ctx, **kw)

    def stat(self, name):
        return self.m.stat(name, listener=LISTENER) or 0

    def still_serving(self):
        """A normal request on a fresh connection is answered."""
        with self.raw() as c:
            c.send(c.headers(1, _req("/after")))
            f = c.read_until(lambda f: f.type == RawH2.HEADERS and f.stream == 1, timeout=HANG_GUARD)
            assert f is not None and dict(f.headers)[":status"] == "200", (f, c.frames[-5:])


@pytest.fixture(params=["h2c", "tls"])
def svc(request, meshd, h2_backend, pki, ports):  # noqa: F811 - pki is a fixture
    def make(hcm_extra=""):
        b = h2_backend()
        tls = request.param == "tls"
        text = http_bundle(
            [http_listener(LISTENER, "{listen_port}", "H2C", downstream_tls(pki.meshd, None, "NONE") if tls else "",
                           hcm_extra)],
            [cluster("app", "{upstream_port}")])
        port = ports.get()
        m = meshd(text, listen_port=port, upstream_port=b.port, concurrency=1)
        ctx = client_context(ca=pki.ca.bundle, alpn=["h2"]) if tls else None
        return Svc(m, b, port, ctx)

    return make


def _req(path):
    return [(":method", "GET"), (":scheme", "http"), (":path", path), (":authority", "localhost")]


def _readable(c):
    return (c.tls and c.sock.pending()) or select.select([c.sock], [], [], 0)[0]


def _goaway(c):
    return next((f for f in c.frames if f.type == RawH2.GOAWAY), None)


# -- rapid reset in small writes --------------------------------------------------------------


PAIRS = 100_000
PAIRS_PER_WRITE = 100


def test_rapid_reset_in_small_writes_gets_goaway(svc):
    """HEADERS + RST_STREAM(CANCEL) pairs, 100 per write (one TLS record
    each), written without pause. The reset rate limit (1000 burst) trips
    within the first few thousand streams; its GOAWAY must go out while the
    client still sends, and the streams after it are not acted on: far
    fewer than the 100,000 sent reach meshd_listener_http_rq_total."""
    s = svc()
    s.still_serving()
    before = s.stat("meshd_listener_http_rq_total")
    with s.raw() as c:
        c.send(c.headers(1, _req("/rr"), end_stream=True) + c.rst_stream(1, CANCEL))
        block = c.header_block(_req("/rr"))  # all indexed from here on
        chunks = [
            b"".join(c.headers(sid, None, end_stream=True, block=block) + c.rst_stream(sid, CANCEL)
                     for sid in range(first, first + 2 * PAIRS_PER_WRITE, 2))
            for first in range(3, 2 * PAIRS, 2 * PAIRS_PER_WRITE)]
        sent = 1
        for i, chunk in enumerate(chunks):  # no pause between writes: a peek at the input now and then
            try:
                c.send(chunk)
            except OSError:
                break  # meshd closed the connection
            sent += PAIRS_PER_WRITE
            if i % 20 == 19 and _readable(c):
                c.read(timeout=0.001)
                if _goaway(c) is not None or c.eof is not None:
                    break
        c.read_until(lambda f: f.type == RawH2.GOAWAY, timeout=HANG_GUARD)
        g = _goaway(c)
        print(f"pairs sent: {sent}; GOAWAY: {g!r}; end: {c.eof}")
        assert g is not None, f"no GOAWAY after {sent} pairs; last frames {c.frames[-5:]}"
        assert g.error_code in (ENHANCE_YOUR_CALM, INTERNAL_ERROR), H2_ERRORS.get(g.error_code)
    took = s.stat("meshd_listener_http_rq_total") - before
    print(f"streams taken: {took} of {sent} sent")
    assert took < 5000, f"{took} of {sent} streams taken: the GOAWAY did not stop the flood"
    s.still_serving()
