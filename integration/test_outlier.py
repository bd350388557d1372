# SPDX-License-Identifier: Apache-2.0
"""Outlier detection (issue #8): endpoints that keep failing real requests
are ejected (take no traffic) and return on their own.

  grpc            three gRPC endpoints, one answering UNAVAILABLE to every
                  call: after consecutive_grpc_failures (3) it gets nothing
                  more while the others serve every call; /clusters shows it
                  ejected, the counter and the log say so; after
                  base_ejection_time_ms (1 s) it returns (logged), fails 3
                  more and is ejected again for twice as long
  http            an HTTP/1.1 endpoint answering 503: ejected after
                  consecutive_errors (3), the other serves every request
  connect         an endpoint refusing connections: ejected after 3 failed
                  connects, no connect is tried there afterwards
  max percent     two of three endpoints failing with max_ejection_percent
                  50: only one is ejected (50 % of 3 rounds down to 1); the
                  other keeps getting its share
Calls are sequential on one connection, so the round robin is exact. Every
loop is bounded in count and time.
"""
import http.client
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from env.clients import grpc_channel, wait_until
from env.factory import made
from env.flaky_backend import FlakyGrpcBackend
from env.grpc_backend import started_backends

pytestmark = pytest.mark.proxy_only

CALL_TIMEOUT = 10.0


def bundle(ports, protocol="HTTP2", outlier="", codec="H2C"):
    eps = "".join(f'  endpoints {{ address {{ address: "127.0.0.1" port: {p} }} }}\n' for p in ports)
    return (
        f'listeners {{\n  name: "in"\n  address {{ address: "127.0.0.1" port: {{listen_port}} }}\n'
        f'  http {{ codec: {codec} route_config: "rc" }}\n}}\n'
        f'route_configs {{\n  name: "rc"\n  virtual_hosts {{\n    name: "all"\n    domains: "*"\n'
        f'    routes {{ name: "r" match {{ prefix: "/" }} route {{ cluster: "svc" }} }}\n  }}\n}}\n'
        f'clusters {{\n  name: "svc"\n  connect_timeout_ms: 2000\n  protocol: {protocol}\n{eps}'
        f"  outlier_detection {{ {outlier} }}\n}}\n"
    )


@pytest.fixture
def flaky(echo_stubs, ports, workdir, request):
    yield from started_backends(request, lambda name, **kw: FlakyGrpcBackend(
        echo_stubs[2], ports.get(), ports.get(), workdir, name=name, **kw))


class StatusOrigin:
    """An HTTP/1.1 origin (keep-alive) answering every request with `status`;
    counts the requests it got."""

    def __init__(self, status):
        self.status = status
        self.count = 0
        self.lock = threading.Lock()
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                with origin.lock:
                    origin.count += 1
                body = b"status %d\n" % origin.status
                self.send_response(origin.status)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def origins():
    yield from made(StatusOrigin)


def stat(m, name, **labels):
    v = m.stats().get(name, **labels)
    return 0 if v is None else int(v)


def ep_line(m, port):
    """The /clusters line of endpoint 127.0.0.1:port."""
    for line in m.admin_get("/clusters")[1].splitlines():
        if line.strip().startswith(f"127.0.0.1:{port} "):
            return line
    raise AssertionError(f"127.0.0.1:{port} not on /clusters")


def ejected(m, port):
    return "outlier=ejected" in ep_line(m, port)


def log_events(m, event, port):
    return [l for l in m.log().splitlines() if f"event={event} " in l and f"endpoint=127.0.0.1:{port} " in l]


def unary(stub, pb, id):
    import grpc

    try:
        stub.Unary(pb.EchoRequest(id=id), timeout=CALL_TIMEOUT)
        return "OK"
    except grpc.RpcError as e:
        return e.code().name


def calls_until(stub, pb, pred, limit, prefix):
    """Sequential calls until pred() holds (checked after each); at most `limit`."""
    out = []
    for i in range(limit):
        out.append(unary(stub, pb, f"{prefix}{i}"))
        if pred():
            return out
    raise AssertionError(f"not after {limit} calls: {out}")


def test_grpc_failures_eject_and_return(meshd, flaky, echo_stubs):
    bad = flaky("bad", fail_rate=1.0, fail_code=14)
    good = [flaky("good1"), flaky("good2")]
    m = meshd(bundle([bad.port] + [g.port for g in good],
                     outlier="consecutive_grpc_failures: 3 consecutive_errors: 3 "
                             "base_ejection_time_ms: 1000 max_ejection_percent: 50"), concurrency=2)
    assert "outlier=ok" in ep_line(m, bad.port)
    pb, pbg = echo_stubs[0], echo_stubs[1]
    ch = grpc_channel(m.values["listen_port"])
    try:
        stub = pbg.EchoStub(ch)
        res = calls_until(stub, pb, lambda: len(bad.calls()) >= 3, 30, "a")
        assert res.count("UNAVAILABLE") == 3, res
        t_ejected = time.monotonic()
        assert ejected(m, bad.port)
        assert stat(m, "meshd_cluster_outlier_ejected_total", cluster="svc") == 1
        assert stat(m, "meshd_cluster_outlier_ejected_active", cluster="svc") == 1
        ev = log_events(m, "outlier_ejected", bad.port)
        assert len(ev) == 1 and "reason=consecutive_grpc_failures" in ev[0] and "ejection_ms=1000" in ev[0], ev
        # Ejected: the others serve everything (well within the 1 s ejection).
        good_before = sum(len(g.calls()) for g in good)
        res = [unary(stub, pb, f"b{i}") for i in range(20)]
        assert res == ["OK"] * 20, res
        assert time.monotonic() - t_ejected < 0.9, "too slow to tell: the ejection may have ended"
        assert len(bad.calls()) == 3
        assert sum(len(g.calls()) for g in good) - good_before == 20
        # It returns on its own after ~1 s.
        wait_until(lambda: not ejected(m, bad.port), timeout=5, what="the endpoint to return")
        assert time.monotonic() - t_ejected >= 0.9
        wait_until(lambda: log_events(m, "outlier_returned", bad.port), timeout=2, what="outlier_returned log")
        assert stat(m, "meshd_cluster_outlier_ejected_active", cluster="svc") == 0
        # Still failing: 3 more failures, ejected again, for twice as long.
        calls_until(stub, pb, lambda: len(bad.calls()) >= 6, 30, "c")
        assert ejected(m, bad.port)
        ev = log_events(m, "outlier_ejected", bad.port)
        assert len(ev) == 2 and "ejection_ms=2000" in ev[1], ev
        assert stat(m, "meshd_cluster_outlier_ejected_total", cluster="svc") == 2
        assert len(bad.calls()) == 6
    finally:
        ch.close()


def test_http_5xx_eject(meshd, origins):
    bad, good = origins(503), origins(200)
    m = meshd(bundle([bad.port, good.port], protocol="HTTP1", codec="AUTO",
                     outlier="consecutive_errors: 3 base_ejection_time_ms: 10000"), concurrency=1)
    c = http.client.HTTPConnection("127.0.0.1", m.values["listen_port"], timeout=CALL_TIMEOUT)
    statuses = []
    try:
        for i in range(30):
            c.request("GET", f"/r{i}")
            r = c.getresponse()
            r.read()
            statuses.append(r.status)
    finally:
        c.close()
    assert bad.count == 3, (bad.count, statuses)
    assert statuses.count(503) == 3 and statuses.count(200) == 27, statuses
    assert statuses[-20:] == [200] * 20
    assert ejected(m, bad.port)
    ev = log_events(m, "outlier_ejected", bad.port)
    assert len(ev) == 1 and "reason=consecutive_errors" in ev[0], ev


def test_connect_failures_eject(meshd, backends, flaky, echo_stubs):
    refusing = backends.refusing()
    good = [flaky("good1"), flaky("good2")]
    m = meshd(bundle([refusing.port] + [g.port for g in good],
                     outlier="consecutive_errors: 3 base_ejection_time_ms: 10000 max_ejection_percent: 50"),
              concurrency=1)
    pb, pbg = echo_stubs[0], echo_stubs[1]
    ch = grpc_channel(m.values["listen_port"])
    try:
        stub = pbg.EchoStub(ch)
        res = calls_until(stub, pb, lambda: ejected(m, refusing.port), 40, "a")
        # a refused connect fails over to another endpoint: every call succeeds
        assert all(r == "OK" for r in res), res
        tried = lambda: len([l for l in m.log().splitlines()
                             if "event=upstream_connect_failed" in l and f"ep=127.0.0.1:{refusing.port} " in l])
        n = tried()
        assert n == 3, n
        res = [unary(stub, pb, f"b{i}") for i in range(20)]
        assert res == ["OK"] * 20
        assert tried() == 3  # no connect tried there while ejected
    finally:
        ch.close()


def test_max_ejection_percent(meshd, flaky, echo_stubs):
    bad = [flaky("bad1", fail_rate=1.0), flaky("bad2", fail_rate=1.0)]
    good = flaky("good")
    m = meshd(bundle([b.port for b in bad] + [good.port],
                     outlier="consecutive_grpc_failures: 3 base_ejection_time_ms: 10000 "
                             "max_ejection_percent: 50"), concurrency=1)
    pb, pbg = echo_stubs[0], echo_stubs[1]
    ch = grpc_channel(m.values["listen_port"])
    try:
        stub = pbg.EchoStub(ch)
        res = [unary(stub, pb, f"a{i}") for i in range(45)]
    finally:
        ch.close()
    # 50 % of 3 endpoints is one: one failing endpoint is ejected, the other
    # keeps its share (and keeps failing).
    out = [b for b in bad if ejected(m, b.port)]
    kept = [b for b in bad if b not in out]
    assert len(out) == 1, [ep_line(m, b.port) for b in bad]
    assert stat(m, "meshd_cluster_outlier_ejected_total", cluster="svc") == 1
    assert stat(m, "meshd_cluster_outlier_ejected_active", cluster="svc") == 1
    assert len(out[0].calls()) == 3
    assert len(kept[0].calls()) >= 15, len(kept[0].calls())  # about half of the calls after the ejection
    assert res.count("OK") == len(good.calls())
    assert res.count("UNAVAILABLE") == len(out[0].calls()) + len(kept[0].calls())
