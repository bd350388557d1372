# SPDX-License-Identifier: Apache-2.0
"""Circuit breakers (issue #8): per-cluster limits shared by all workers,
answered at once when exceeded, counted, and given back exactly.

  max_requests     50 concurrent slow gRPC calls (the backend holds each
                   ~1 s) with max_requests 10, over several connections (so
                   over both workers): exactly 10 reach the backend, exactly
                   40 are refused at once with UNAVAILABLE naming the
                   breaker (x-meshd-overflowed: requests in the trailers-only
                   answer); plain HTTP/1.1 and HTTP/2 requests meanwhile get
                   503 with the header; counters exact; every gauge back at
                   its limit once idle
  max_pending      a black-hole endpoint (connects hang): 3 requests wait
                   for the connection, the rest are refused "pending" at once;
                   those waiting fail on the connect timeout; gauges back
  max_connections  HTTP/1.1 cluster to a black hole with max_connections 2:
                   the third concurrent request cannot open a connection and
                   gets 503 "connections" at once; TCP proxy: a third
                   connection is closed at once
Every loop is bounded in count and time.
"""
import http.client
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from env.clients import H2Client, grpc_channel, wait_until
from env.flaky_backend import FlakyGrpcBackend
from env.grpc_backend import started_backends

pytestmark = pytest.mark.proxy_only

HANG_MS = 1000  # how long the slow backend holds each call
AT_ONCE = 0.5  # a refusal must come well before the backend would have answered
CALL_TIMEOUT = 10.0
BREAKERS = ("connections", "pending", "requests", "retries")


def bundle(clusters, codec="AUTO", cluster="svc", extra=""):
    return (
        f'listeners {{\n  name: "in"\n  address {{ address: "127.0.0.1" port: {{listen_port}} }}\n'
        f'  http {{ codec: {codec} route_config: "rc" }}\n}}\n'
        f'route_configs {{\n  name: "rc"\n  virtual_hosts {{\n    name: "all"\n    domains: "*"\n'
        f'    routes {{ name: "r" match {{ prefix: "/" }} route {{ cluster: "{cluster}" }} }}\n'
        f"  }}\n}}\n{clusters}{extra}"
    )


def cluster(name, ports, protocol="HTTP2", breakers="", connect_timeout_ms=2000):
    eps = "".join(f'  endpoints {{ address {{ address: "127.0.0.1" port: {p} }} }}\n' for p in ports)
    # Pooled connections close soon when idle, so the connections gauge
    # returns to its limit within the test.
    return (f'clusters {{\n  name: "{name}"\n  connect_timeout_ms: {connect_timeout_ms}\n'
            f"  protocol: {protocol}\n{eps}"
            f"  pool {{ idle_timeout_ms: 300 keepalive_interval_ms: 1000 }}\n"
            f"  circuit_breakers {{ {breakers} }}\n}}\n")


@pytest.fixture
def slow(echo_stubs, ports, workdir, request):
    yield from started_backends(request, lambda name="slow", **kw: FlakyGrpcBackend(
        echo_stubs[2], ports.get(), ports.get(), workdir, name=name, **kw))


def stat(m, name, **labels):
    v = m.stats().get(name, **labels)
    return 0 if v is None else int(v)


def remaining(m, cl):
    return {b: stat(m, "meshd_cluster_circuit_breakers_remaining", cluster=cl, breaker=b) for b in BREAKERS}


def wait_all_remaining(m, cl, limits, timeout=10.0):
    """Every breaker of `cl` back at its limit (all slots given back)."""
    wait_until(lambda: remaining(m, cl) == limits, timeout=timeout,
               what=f"breakers of {cl} back at {limits} (now {remaining(m, cl)})")


def call_all(stubs, pb, n, timeout=CALL_TIMEOUT, md=()):
    """n Unary calls at once, spread over the stubs (connections); returns
    [(code name, details, seconds, trailing metadata dict)] in call order."""
    import grpc

    t0 = time.monotonic()
    futs = [stubs[i % len(stubs)].Unary.future(pb.EchoRequest(id=f"c{i}"), timeout=timeout, metadata=list(md))
            for i in range(n)]
    out = [None] * n
    done = threading.Event()
    left = [n]
    lock = threading.Lock()

    def on_done(i, f):
        t = time.monotonic() - t0
        try:
            f.result()
            r = ("OK", "", t, {})
        except grpc.RpcError as e:
            r = (e.code().name, e.details() or "", t, dict(e.trailing_metadata() or ()))
        with lock:
            out[i] = r
            left[0] -= 1
            if left[0] == 0:
                done.set()

    for i, f in enumerate(futs):
        f.add_done_callback(lambda f, i=i: on_done(i, f))
    assert done.wait(timeout + 5), f"calls not done: {left[0]} left"
    return out


def test_max_requests_grpc_and_http(meshd, slow, echo_stubs):
    b = slow(hang_ms=HANG_MS)
    limits = {"connections": 1024, "pending": 1024, "requests": 10, "retries": 3}
    m = meshd(bundle(cluster("svc", [b.port], breakers="max_requests: 10")), concurrency=2)
    port = m.values["listen_port"]
    pb, pbg = echo_stubs[0], echo_stubs[1]
    channels = [grpc_channel(port) for _ in range(5)]
    try:
        stubs = [pbg.EchoStub(ch) for ch in channels]
        for s in stubs:  # connections up first: the 50 calls below start together
            s.Unary(pb.EchoRequest(id="warm"), timeout=CALL_TIMEOUT, metadata=[("x-flaky-hang-ms", "0")])
        wait_all_remaining(m, "svc", {**limits, "connections": remaining(m, "svc")["connections"]})
        before = len(b.calls())
        res = call_all(stubs, pb, 50)
        ok = [r for r in res if r[0] == "OK"]
        refused = [r for r in res if r[0] != "OK"]
        assert len(ok) == 10, f"{len(ok)} calls answered, wanted 10: {res}"
        assert len(refused) == 40, res
        for code, details, t, trailers in refused:
            assert code == "UNAVAILABLE", refused
            assert "max_requests" in details, refused
            assert trailers.get("x-meshd-overflowed") == "requests", refused
            assert t < AT_ONCE, f"a refusal took {t:.3f}s: {refused}"
        assert all(t >= HANG_MS / 1000 * 0.9 for _, _, t, _ in ok), ok
        assert len(b.calls()) - before == 10  # nothing queued behind the limit
        assert stat(m, "meshd_cluster_overflow_total", cluster="svc", breaker="requests") == 40
        for other in ("connections", "pending", "retries"):
            assert stat(m, "meshd_cluster_overflow_total", cluster="svc", breaker=other) == 0

        # Full again (10 slow calls), plain HTTP gets 503 with the header.
        futs = [stubs[i % 5].Unary.future(pb.EchoRequest(id=f"h{i}"), timeout=CALL_TIMEOUT) for i in range(10)]
        wait_until(lambda: remaining(m, "svc")["requests"] == 0, timeout=5, what="10 calls in progress")
        t0 = time.monotonic()
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/plain")
        r = c.getresponse()
        body = r.read()
        assert r.status == 503 and r.getheader("x-meshd-overflowed") == "requests", (r.status, r.getheaders())
        assert b"max_requests" in body
        c.close()
        with H2Client(port) as h:
            resp = h.request([(":method", "GET"), (":scheme", "http"), (":path", "/plain"),
                              (":authority", "localhost")])
        assert resp.status == 503 and resp.header("x-meshd-overflowed") == "requests", resp
        assert time.monotonic() - t0 < 2 * AT_ONCE
        for f in futs:
            f.result(timeout=CALL_TIMEOUT)
        assert stat(m, "meshd_cluster_overflow_total", cluster="svc", breaker="requests") == 42
    finally:
        for ch in channels:
            ch.close()
    # Idle: every slot given back (the pooled connections close after 300 ms idle).
    wait_all_remaining(m, "svc", limits)


def test_max_pending(meshd, backends, echo_stubs):
    hole = backends.black_hole()
    limits = {"connections": 1024, "pending": 3, "requests": 1024, "retries": 3}
    m = meshd(bundle(cluster("hole", [hole.port], breakers="max_pending_requests: 3", connect_timeout_ms=1500),
                     cluster="hole"), concurrency=2)
    pb, pbg = echo_stubs[0], echo_stubs[1]
    ch = grpc_channel(m.values["listen_port"])
    try:
        res = call_all([pbg.EchoStub(ch)], pb, 8)
    finally:
        ch.close()
    over = [r for r in res if "max_pending_requests" in r[1]]
    waited = [r for r in res if r not in over]
    assert len(over) == 5 and len(waited) == 3, res
    for code, details, t, trailers in over:
        assert code == "UNAVAILABLE" and trailers.get("x-meshd-overflowed") == "pending", res
        assert t < AT_ONCE, res
    for code, details, t, trailers in waited:  # the connect timed out under them
        assert code == "UNAVAILABLE" and "x-meshd-overflowed" not in trailers and t >= 1.4, res
    assert stat(m, "meshd_cluster_overflow_total", cluster="hole", breaker="pending") == 5
    wait_all_remaining(m, "hole", limits)


def test_max_connections_http1(meshd, backends):
    hole = backends.black_hole()
    limits = {"connections": 2, "pending": 1024, "requests": 1024, "retries": 3}
    m = meshd(bundle(cluster("hole", [hole.port], protocol="HTTP1", breakers="max_connections: 2",
                             connect_timeout_ms=1500), cluster="hole"), concurrency=2)
    port = m.values["listen_port"]

    def get(i):
        t0 = time.monotonic()
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            c.request("GET", f"/r{i}")
            r = c.getresponse()
            r.read()
            return r.status, r.getheader("x-meshd-overflowed"), time.monotonic() - t0
        finally:
            c.close()

    # Two requests hold the two connections (connecting), then two more.
    with ThreadPoolExecutor(4) as ex:
        first = [ex.submit(get, i) for i in range(2)]
        wait_until(lambda: remaining(m, "hole")["connections"] == 0, timeout=5, what="two connects under way")
        later = [ex.submit(get, i) for i in range(2, 4)]
        late = [f.result(timeout=15) for f in later]
        early = [f.result(timeout=15) for f in first]
    for status, hdr, t in late:
        assert status == 503 and hdr == "connections" and t < AT_ONCE, late
    for status, hdr, t in early:
        assert status == 503 and hdr is None and t >= 1.0, early  # connect timeout
    assert stat(m, "meshd_cluster_overflow_total", cluster="hole", breaker="connections") == 2
    wait_all_remaining(m, "hole", limits)


def test_max_connections_tcp_proxy(meshd, backends):
    echo = backends.echo()
    text = (
        'listeners {\n  name: "tcp"\n  address { address: "127.0.0.1" port: {listen_port} }\n'
        '  tcp_proxy { cluster: "echo" }\n}\n'
        'clusters {\n  name: "echo"\n  connect_timeout_ms: 2000\n'
        f'  endpoints {{ address {{ address: "127.0.0.1" port: {echo.port} }} }}\n'
        "  circuit_breakers { max_connections: 2 }\n}\n"
    )
    m = meshd(text, concurrency=2)
    port = m.values["listen_port"]
    socks = []
    try:
        for i in range(2):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"ping%d" % i)
            assert s.recv(16) == b"ping%d" % i
            socks.append(s)
        try:  # the reset may come before connect() returns
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            socks.append(s)
            s.sendall(b"x")
            got = s.recv(16)
        except (ConnectionResetError, BrokenPipeError):
            got = b""
        assert got == b"", "a third connection over max_connections 2 was proxied"
        assert stat(m, "meshd_cluster_overflow_total", cluster="echo", breaker="connections") == 1
        assert remaining(m, "echo")["connections"] == 0
    finally:
        for s in socks:
            s.close()
    wait_until(lambda: remaining(m, "echo")["connections"] == 2, timeout=5, what="connections given back")
