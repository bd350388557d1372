# SPDX-License-Identifier: Apache-2.0
"""Gauges come back to 0 however a connection ends (issue 14 item 5):
requests, connections and sessions are opened in each shape, then the client
or the backend goes away mid-exchange, and /stats/prometheus is polled
(bounded) until every gauge is 0: meshd_listener_downstream_cx_active,
meshd_listener_http_rq_active, and the cluster's upstream_cx_active,
upstream_rq_active and upstream_http2_cx_active. A client that vanished
with streams open also counts them in _rq_downstream_reset_total.

HTTP/2 on h2c and TLS listeners; raw TCP through a tcp_proxy listener.
(The HTTP/1.1 server's gauges: test_h1_*.)"""
import pytest

from env.clients import RawH2, connect, echo_roundtrip, expect_closed, reset_close, wait_until
from env.h1_origin import H1Origin
from env.tls import client_context, cluster, downstream_tls, http_bundle, http_listener, pki, tls_connect  # noqa: F401

pytestmark = pytest.mark.proxy_only

HANG_GUARD = 20.0
HELD = {"h2": "/held?wait=held", "h1": "/h1/held?delay_ms=60000"}
CLUSTER = {"h2": "app", "h1": "origin"}
N = 3
LISTENERS = {"h2c": "h2_plain", "tls": "h2_tls"}
TCP_LISTENER = "tcp_in"


def _req(path):
    return [(":method", "GET"), (":scheme", "http"), (":path", path), (":authority", "localhost")]


class Svc:
    """meshd with an h2c listener and a TLS (h2) listener, both routing /h1/
    to HTTP/1.1 cluster `origin` (an H1Origin) and the rest to HTTP/2
    cluster `app` (an H2Backend); and a TCP listener to cluster `tcp_app`."""

    def __init__(self, m, backend, origin, echo, pki):
        self.m, self.backend, self.origin, self.echo, self.pki = m, backend, origin, echo, pki

    def raw(self, kind):
        port = self.m.values["h2c_port" if kind == "h2c" else "tls_port"]
        sock = None
        if kind == "tls":
            sock = tls_connect(port, client_context(ca=self.pki.ca.bundle, alpn=["h2"]))
        return RawH2(port, timeout=HANG_GUARD, sock=sock)

    def gauges(self, listener, cluster_name):
        st = self.m.stats()
        return {
            "cx_active": st.get("meshd_listener_downstream_cx_active", listener=listener),
            "rq_active": st.get("meshd_listener_http_rq_active", listener=listener),
            "upstream_cx_active": st.get("meshd_cluster_upstream_cx_active", cluster=cluster_name),
            "upstream_rq_active": st.get("meshd_cluster_upstream_rq_active", cluster=cluster_name),
            "upstream_http2_cx_active": st.get("meshd_cluster_upstream_http2_cx_active", cluster=cluster_name),
        }

    def wait_zero(self, listener, cluster_name, names):
        last = {}

        def zero():
            last.update(self.gauges(listener, cluster_name))
            return all(last[n] == 0 for n in names)

        try:
            wait_until(zero, timeout=HANG_GUARD, what=f"gauges {names} of {listener}/{cluster_name} at 0")
        except AssertionError as e:
            raise AssertionError(f"{e}; gauges: {last}") from None

    def stat(self, name, listener):
        return self.m.stat(name, listener=listener) or 0


@pytest.fixture
def origin():
    o = H1Origin().start()
    yield o
    o.stop()


@pytest.fixture
def svc(meshd, h2_backend, backends, origin, pki, ports):  # noqa: F811
    def make():
        b = h2_backend()
        echo = backends.echo()
        text = http_bundle(
            [http_listener(LISTENERS["h2c"], "{h2c_port}", "H2C"),
             http_listener(LISTENERS["tls"], "{tls_port}", "H2C", downstream_tls(pki.meshd, None, "NONE"))],
            [cluster("app", "{upstream_port}"), cluster("origin", "{origin_port}", protocol="HTTP1")],
            routes=['routes { name: "h1" match { prefix: "/h1/" } route { cluster: "origin" } }',
                    'routes { name: "all" match { prefix: "/" } route { cluster: "app" } }'])
        text += (f'listeners {{ name: "{TCP_LISTENER}" address {{ address: "127.0.0.1" port: {{tcp_port}} }}\n'
                 '  tcp_proxy { cluster: "tcp_app" } }\n'
                 'clusters { name: "tcp_app" connect_timeout_ms: 2000\n'
                 '  endpoints { address { address: "127.0.0.1" port: {echo_port} } } }\n')
        m = meshd(text, upstream_port=b.port, origin_port=origin.port, echo_port=echo.port, concurrency=1)
        return Svc(m, b, origin, echo, pki)

    return make


def _open_held(s, c, up, n=N):
    """n held streams on `c`, all at the `up` ("h2" | "h1") backend."""
    for i in range(n):
        c.send(c.headers(1 + 2 * i, _req(HELD[up])))
    if up == "h2":
        wait_until(lambda: len(s.backend.streams_for("/held")) >= n, timeout=HANG_GUARD,
                   what=f"{n} streams at the backend")
    else:
        wait_until(lambda: len(s.origin.requests) >= n, timeout=HANG_GUARD, what=f"{n} requests at the origin")


KINDS = pytest.mark.parametrize("kind,up", [("h2c", "h2"), ("tls", "h2"), ("h2c", "h1"), ("tls", "h1")])


@KINDS
def test_client_vanishes_with_streams_open(svc, kind, up):
    """The client's TCP connection ends (RST) with streams open: the request
    gauge comes back to 0 and each stream counts as a downstream reset; the
    upstream streams are cancelled."""
    s = svc()
    listener = LISTENERS[kind]
    before = s.stat("meshd_listener_http_rq_downstream_reset_total", listener)
    c = s.raw(kind)
    _open_held(s, c, up)
    reset_close(c.sock)
    names = ["cx_active", "rq_active", "upstream_rq_active"]
    if up == "h1":  # one request per connection: each is closed with its request
        names.append("upstream_cx_active")
    s.wait_zero(listener, CLUSTER[up], names)
    wait_until(lambda: s.stat("meshd_listener_http_rq_downstream_reset_total", listener) == before + N,
               timeout=HANG_GUARD, what=f"{N} downstream resets counted")


@KINDS
def test_backend_vanishes_with_streams_open(svc, kind, up):
    """The backend goes away with streams open: each gets its answer (503),
    and once the client leaves every gauge, upstream ones included, is 0."""
    s = svc()
    listener = LISTENERS[kind]
    with s.raw(kind) as c:
        _open_held(s, c, up)
        (s.backend if up == "h2" else s.origin).stop()
        for i in range(N):
            sid = 1 + 2 * i
            f = c.read_until(lambda f: f.stream == sid and (
                f.type == RawH2.RST_STREAM or f.flags & RawH2.END_STREAM), timeout=HANG_GUARD)
            assert f is not None, c.frames
        s.wait_zero(listener, CLUSTER[up], ["rq_active", "upstream_rq_active", "upstream_cx_active",
                                            "upstream_http2_cx_active"])
    s.wait_zero(listener, CLUSTER[up], ["cx_active"])


def test_tcp_sessions_end_either_side(svc):
    """TCP sessions ended by the client (RST, FIN) and by the backend (its
    FIN is passed on; the client then closes): the listener's and the
    cluster's connection gauges come back to 0."""
    s = svc()
    port = s.m.values["tcp_port"]
    socks = [connect(port, timeout=HANG_GUARD) for _ in range(N)]
    for i, k in enumerate(socks):
        echo_roundtrip(k, b"ping %d" % i)
    reset_close(socks[0])
    for k in socks[1:]:
        k.close()
    s.wait_zero(TCP_LISTENER, "tcp_app", ["cx_active", "upstream_cx_active"])

    socks = [connect(port, timeout=HANG_GUARD) for _ in range(N)]
    try:
        for i, k in enumerate(socks):
            echo_roundtrip(k, b"pong %d" % i)
        s.echo.stop()
        # The backend's end reaches the clients (a half-close they answer by closing).
        for k in socks:
            expect_closed(k, timeout=HANG_GUARD)
            k.close()
        s.wait_zero(TCP_LISTENER, "tcp_app", ["cx_active", "upstream_cx_active"])
    finally:
        for k in socks:
            k.close()
