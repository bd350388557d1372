# SPDX-License-Identifier: Apache-2.0
"""Active health checks (sidecar/health/checker.c) against real peers:
a gRPC backend process killed mid-traffic and restarted (TCP check), gRPC
backends reporting NOT_SERVING (grpc.health.v1 check), HTTP backends
answering 503 on /healthz (HTTP check with expected_statuses), and the panic
threshold with health checks failing while the data path still works. Each
case also reads GET /clusters, the metrics and the log lines.

Short intervals (200 ms) keep it fast; every wait is bounded, and the time
bounds are generous (a loaded ASan build is slow): only "within seconds"."""
import http.client
import os
import re
import signal
import time

import pytest

from env.clients import grpc_channel, wait_until
from env.factory import made
from env.health_backends import NOT_SERVING, SERVING, HealthGrpcServer, HealthH1Server

INTERVAL_MS = 200
# unhealthy_threshold 2 × (interval + jitter) + timeout ≈ 0.65 s; the bound is
# far above that so that a slow machine does not fail the test.
EJECT_BOUND_S = 8.0

GRPC_BUNDLE = """
listeners {{
  name: "grpc_in"
  address {{ address: "127.0.0.1" port: {{listen_port}} }}
  http {{ codec: H2C route_config: "routes" }}
}}
route_configs {{
  name: "routes"
  virtual_hosts {{
    name: "all"
    domains: "*"
    routes {{
      name: "echo"
      match {{ grpc {{ service: "test.v1.Echo" }} }}
      route {{ cluster: "echo" timeout_ms: 5000 }}
    }}
  }}
}}
clusters {{
  name: "echo"
  protocol: HTTP2
  connect_timeout_ms: 1000
  {endpoints}
  health_check {{
    interval_ms: {interval} jitter_ms: 20 timeout_ms: {interval}
    unhealthy_threshold: 2 healthy_threshold: 2
    {check}
  }}
}}
admin {{ address {{ address: "127.0.0.1" port: {{admin_port}} }} }}
"""

H1_BUNDLE = """
listeners {{
  name: "h1_in"
  address {{ address: "127.0.0.1" port: {{listen_port}} }}
  http {{ codec: HTTP1 route_config: "routes" }}
}}
route_configs {{
  name: "routes"
  virtual_hosts {{
    name: "all"
    domains: "*"
    routes {{
      name: "web"
      match {{ prefix: "/" }}
      route {{ cluster: "web" timeout_ms: 5000 }}
    }}
  }}
}}
clusters {{
  name: "web"
  protocol: HTTP1
  connect_timeout_ms: 1000
  lb_policy: ROUND_ROBIN
  panic_threshold_percent: {panic}
  {endpoints}
  health_check {{
    interval_ms: {interval} jitter_ms: 20 timeout_ms: {interval}
    unhealthy_threshold: 2 healthy_threshold: 2
    http {{ path: "/healthz" {statuses} }}
  }}
}}
admin {{ address {{ address: "127.0.0.1" port: {{admin_port}} }} }}
"""


def endpoints(ports):
    return "\n  ".join(f'endpoints {{ address {{ address: "127.0.0.1" port: {p} }} }}' for p in ports)


def ep(port):
    return f"127.0.0.1:{port}"


def clusters_page(m):
    """GET /clusters as {cluster: {endpoint: "healthy" | "unhealthy"}}."""
    status, body = m.admin_get("/clusters")
    assert status == 200, body
    out, cur = {}, None
    for line in body.splitlines():
        if not line.startswith(" "):
            cur = out.setdefault(line.split(" ", 1)[0], {})
            assert "health_checked=yes" in line, line
            continue
        mm = re.fullmatch(r"  (\S+) priority=\d+ weight=\d+ health=(healthy|unhealthy)", line)
        assert mm, f"unexpected /clusters line {line!r}"
        cur[mm.group(1)] = mm.group(2)
    return out


def wait_health(m, cluster, endpoint, want, timeout=EJECT_BOUND_S):
    wait_until(
        lambda: clusters_page(m)[cluster][endpoint] == want,
        timeout=timeout,
        interval=0.05,
        what=f"{endpoint} of {cluster} {want} on /clusters",
    )


def endpoint_gauge(m, cluster, endpoint):
    return m.stat("meshd_cluster_endpoint_healthy", cluster=cluster, endpoint=endpoint)


def counter(m, name, cluster):
    return m.stat(f"meshd_cluster_health_check_{name}_total", cluster=cluster)


def log_has(m, event, **kv):
    want = [f"event={event}"] + [f"{k}={v}" for k, v in kv.items()]
    return any(all(w in line for w in want) for line in m.log().splitlines())


class Unary:
    """Unary calls through meshd; tells which backend answered."""

    def __init__(self, port, stubs):
        self.pb, pbg = stubs[0], stubs[1]
        self.ch = grpc_channel(port)
        self.stub = pbg.EchoStub(self.ch)
        self.n = 0

    def call(self):
        self.n += 1
        return self.stub.Unary(self.pb.EchoRequest(id=f"hc-{self.n}"), timeout=5).server

    def try_call(self):
        import grpc

        try:
            return self.call()
        except grpc.RpcError:
            return None

    def close(self):
        self.ch.close()


class H1Client:
    """GETs through meshd's HTTP/1.1 listener; tells which backend answered."""

    def __init__(self, port):
        self.port = port
        self.conn = None

    def get(self, path="/app"):
        for attempt in range(2):  # a fresh connection if the kept one was closed
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                self.conn.request("GET", path)
                r = self.conn.getresponse()
                body = r.read()
                assert r.status == 200, (r.status, body)
                return r.getheader("x-backend")
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        return None

    def close(self):
        if self.conn is not None:
            self.conn.close()


@pytest.fixture
def h1_servers():
    yield from made(HealthH1Server, start=True)


@pytest.fixture
def grpc_health_servers(echo_stubs, ports):
    yield from made(lambda name: HealthGrpcServer(echo_stubs, ports.get(), name), start=True)


def test_killed_backend_is_ejected_and_restored(meshd, grpc_backend, echo_stubs):
    bs = [grpc_backend(f"b{i}") for i in range(3)]
    victim = bs[0]
    m = meshd(
        GRPC_BUNDLE.format(endpoints=endpoints(b.port for b in bs), interval=INTERVAL_MS, check="tcp {}")
    )
    client = Unary(m.listen_port, echo_stubs)
    try:
        names = {b.name for b in bs}
        seen = set()
        wait_until(lambda: seen.add(client.call()) or seen == names, timeout=20, what="every backend answering")
        assert all(v == "healthy" for v in clusters_page(m)["echo"].values())

        # Killed mid-traffic (SIGKILL: no goodbye on its connections).
        os.kill(victim.pid, signal.SIGKILL)
        victim.proc.wait(10)
        victim.stop()  # closes its control channel; the process is gone
        t0 = time.monotonic()
        for _ in range(10000):
            client.try_call()  # traffic goes on; calls in flight at the kill may fail
            if clusters_page(m)["echo"][ep(victim.port)] == "unhealthy":
                break
            assert time.monotonic() - t0 < EJECT_BOUND_S, "killed backend not marked unhealthy"
        assert endpoint_gauge(m, "echo", ep(victim.port)) == 0
        assert m.stat("meshd_cluster_membership_healthy", cluster="echo") == 2
        assert m.stat("meshd_cluster_membership_total", cluster="echo") == 3
        assert counter(m, "ejected", "echo") == 1
        assert counter(m, "failure", "echo") >= 2
        wait_until(
            lambda: log_has(m, "health_check_unhealthy", cluster="echo", endpoint=ep(victim.port))
            and 'reason="connect refused"' in m.log(),
            timeout=5,
            what="health_check_unhealthy log line",
        )

        # Ejected: no more attempts at it, every call succeeds elsewhere.
        fails = m.stat("meshd_cluster_upstream_cx_connect_fail_total", cluster="echo")
        got = [client.call() for _ in range(30)]
        assert set(got) <= {"b1", "b2"} and len(set(got)) == 2, got
        assert m.stat("meshd_cluster_upstream_cx_connect_fail_total", cluster="echo") == fails

        # Restarted on the same port: healthy after healthy_threshold passes.
        victim.start()
        wait_health(m, "echo", ep(victim.port), "healthy")
        assert endpoint_gauge(m, "echo", ep(victim.port)) == 1
        assert counter(m, "restored", "echo") == 1
        assert log_has(m, "health_check_healthy", cluster="echo", endpoint=ep(victim.port))
        seen = set()
        wait_until(lambda: seen.add(client.call()) or "b0" in seen, timeout=20, what="b0 answering again")
        assert counter(m, "success", "echo") > 0
    finally:
        client.close()


def test_grpc_not_serving_is_removed_until_serving(meshd, grpc_health_servers, echo_stubs):
    g = [grpc_health_servers(f"g{i}") for i in range(2)]
    for s in g:
        s.set_status("test.v1.Echo", SERVING)
    m = meshd(
        GRPC_BUNDLE.format(
            endpoints=endpoints(s.port for s in g),
            interval=INTERVAL_MS,
            check='grpc { service_name: "test.v1.Echo" }',
        )
    )
    client = Unary(m.listen_port, echo_stubs)
    try:
        wait_until(lambda: counter(m, "success", "echo") >= 4, timeout=10, what="passing gRPC checks")
        assert set(g[0].check_services) == {"test.v1.Echo"}

        g[0].set_status("test.v1.Echo", NOT_SERVING)
        wait_health(m, "echo", ep(g[0].port), "unhealthy")
        assert log_has(m, "health_check_unhealthy", cluster="echo", endpoint=ep(g[0].port))
        assert 'reason="NOT_SERVING"' in m.log()
        served = g[0].served
        got = [client.call() for _ in range(20)]
        assert got == ["g1"] * 20
        assert g[0].served == served
        assert endpoint_gauge(m, "echo", ep(g[0].port)) == 0
        assert endpoint_gauge(m, "echo", ep(g[1].port)) == 1

        g[0].set_status("test.v1.Echo", SERVING)
        wait_health(m, "echo", ep(g[0].port), "healthy")
        seen = set()
        wait_until(lambda: seen.add(client.call()) or "g0" in seen, timeout=20, what="g0 answering again")
        assert counter(m, "ejected", "echo") == 1 and counter(m, "restored", "echo") == 1
    finally:
        client.close()


def test_grpc_unknown_service_fails_the_check(meshd, grpc_health_servers):
    g = grpc_health_servers("g0")  # knows no service: NOT_FOUND
    m = meshd(
        GRPC_BUNDLE.format(
            endpoints=endpoints([g.port]), interval=INTERVAL_MS, check='grpc { service_name: "nope" }'
        )
    )
    wait_health(m, "echo", ep(g.port), "unhealthy")
    assert 'reason="grpc-status 5"' in m.log()
    assert counter(m, "success", "echo") == 0


def test_http_expected_statuses(meshd, h1_servers):
    ok = h1_servers("ok", health_status=204)
    bad = h1_servers("bad", health_status=200)
    m = meshd(
        H1_BUNDLE.format(
            endpoints=endpoints([ok.port, bad.port]),
            interval=INTERVAL_MS,
            panic=50,
            statuses="expected_statuses: 200 expected_statuses: 204",
        )
    )
    client = H1Client(m.listen_port)
    try:
        wait_until(lambda: ok.checks >= 2 and bad.checks >= 2, timeout=10, what="HTTP checks arriving")
        req = ok.check_requests[-1]
        assert req["method"] == "GET" and req["target"] == "/healthz" and req["version"] == "HTTP/1.1"
        assert req["headers"]["host"] == ep(ok.port)
        assert req["headers"]["connection"] == "close"
        assert req["headers"]["user-agent"] == "meshd-health-check"

        bad.health_status = 503
        wait_health(m, "web", ep(bad.port), "unhealthy")
        assert 'reason="status 503"' in m.log()
        assert clusters_page(m)["web"][ep(ok.port)] == "healthy"  # 204 is expected too
        served = bad.served
        assert [client.get() for _ in range(20)] == ["ok"] * 20
        assert bad.served == served

        bad.health_status = 200
        wait_health(m, "web", ep(bad.port), "healthy")
        seen = set()
        wait_until(lambda: seen.add(client.get()) or "bad" in seen, timeout=10, what="bad serving again")
    finally:
        client.close()


def test_http_garbage_and_timeout_fail(meshd, h1_servers, backends):
    garbage = h1_servers("garbage")
    garbage.health_raw = b"HTTP/1.1 2OO OK\r\n\r\n"  # letters for digits
    hole = backends.black_hole()  # connects neither complete nor fail
    m = meshd(
        H1_BUNDLE.format(
            endpoints=endpoints([garbage.port, hole.port]), interval=INTERVAL_MS, panic=50, statuses=""
        )
    )
    wait_health(m, "web", ep(garbage.port), "unhealthy")
    wait_health(m, "web", ep(hole.port), "unhealthy")
    log = m.log()
    assert f'endpoint={ep(garbage.port)} reason="bad status line"' in log
    assert f'endpoint={ep(hole.port)} reason="timeout"' in log
    assert counter(m, "success", "web") == 0
    assert m.stat("meshd_cluster_membership_healthy", cluster="web") == 0


@pytest.mark.parametrize("panic", [50, 1], ids=["panic50", "panic1"])
def test_panic_threshold(meshd, h1_servers, panic):
    s = [h1_servers(f"s{i}") for i in range(3)]
    s[1].health_status = s[2].health_status = 503  # failing checks, working data path
    m = meshd(
        H1_BUNDLE.format(
            endpoints=endpoints(x.port for x in s), interval=INTERVAL_MS, panic=panic, statuses=""
        ),
        concurrency=1,
    )
    client = H1Client(m.listen_port)
    try:
        for x in s[1:]:
            wait_health(m, "web", ep(x.port), "unhealthy")
        page = clusters_page(m)["web"]
        assert page == {ep(s[0].port): "healthy", ep(s[1].port): "unhealthy", ep(s[2].port): "unhealthy"}
        assert [endpoint_gauge(m, "web", ep(x.port)) for x in s] == [1, 0, 0]
        assert m.stat("meshd_cluster_membership_healthy", cluster="web") == 1
        _, body = m.admin_get("/clusters")
        assert "web type=STATIC endpoints=3 healthy=1 health_checked=yes" in body

        got = [client.get() for _ in range(30)]
        counts = {x.name: got.count(x.name) for x in s}
        if panic == 50:
            # 1 of 3 healthy is below 50 %: the level balances over all three.
            assert all(c >= 5 for c in counts.values()), counts
        else:
            # 1 %: panic only when none is healthy; the healthy one takes all.
            assert counts == {"s0": 30, "s1": 0, "s2": 0}, counts
    finally:
        client.close()
