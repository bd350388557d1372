# SPDX-License-Identifier: Apache-2.0
"""Retries, per-try timeouts, fault injection, the fallback cluster and the
max stream duration (issue #8), end to end through meshd.

Upstreams are env.flaky_backend: gRPC servers (own processes) that fail a
share of calls, the first N calls of an id, or hang, and an HTTP/1.1 origin
that answers 503 on request. Both record every attempt with the
x-meshd-attempt-count meshd sent, so attempt counts are checked exactly:
for every call, the attempts seen upstream are 1..n, each but the last a
failure, the first two on different endpoints.

  flaky gRPC       2,000 calls, two backends failing ~30 % UNAVAILABLE:
                   all succeed; retry counter = attempts - calls
  not retryable    statuses outside grpc_retry_on: one attempt
  started stream   a server stream that sent a message: never retried
  resets           an upstream reset is retried only with retry_on "reset"
  retry buffer     a request over buffer_limit_bytes: one attempt
  per-try timeout  a hanging endpoint: the next one answers; all hanging:
                   the route timeout / grpc deadline holds
  pushback         grpc-retry-pushback-ms 300 delays the retry; -1 stops it
  HTTP             503 retried (GET, POST body replayed whole), h1 and h2
                   downstream; 4xx not retried; retries capped
  faults           abort share, delay share, header-controlled faults
  fallback         a cluster with no endpoint: the fallback serves
  max duration     a long stream ends after max_stream_duration_ms

Tolerances are stated where something is random or timed. Every loop is
bounded in count and time.
"""
import hashlib
import http.client
import os
import socket
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import pytest

from env.clients import H2Client, grpc_channel, wait_until
from env.factory import made
from env.flaky_backend import FlakyGrpcBackend, FlakyHttpOrigin
from env.grpc_backend import started_backends
from env.curl import curl_h1

pytestmark = pytest.mark.proxy_only

CALL_TIMEOUT = 10.0  # one gRPC call through meshd, generous
QUIET = 0.4  # how long we wait to be sure no further attempt comes (backoffs here are <= 10 ms)
# Metadata for the flaky backend: fail the first attempt only (whichever
# endpoint it reaches), so a retried call succeeds on attempt 2.
FAIL_ONCE = [("x-flaky-fail-rate", "1"), ("x-flaky-max-failed-attempt", "1")]
RETRY_CLUSTER_LIMITS = """
  retry_budget { budget_percent: 100 min_retry_concurrency: 10000 }
  circuit_breakers { max_retries: 100000 max_requests: 100000 max_pending_requests: 100000 }
"""


# -- bundles ------------------------------------------------------------------------
def grpc_match(method=None, header=None):
    m = 'grpc { service: "test.v1.Echo"' + (f' method: "{method}"' if method else "") + " }"
    if header:
        m += f' headers {{ name: "x-route" exact: "{header}" }}'
    return m


def route(name, match, cluster, action=""):
    return f'    routes {{ name: "{name}" match {{ {match} }} route {{ cluster: "{cluster}" {action} }} }}\n'


def retry(grpc_on=(), http_on=(), num=3, base=2, max_=10, per_try=0, buffer=0):
    out = "retry_policy {"
    out += "".join(f' grpc_retry_on: "{x}"' for x in grpc_on)
    out += "".join(f' retry_on: "{x}"' for x in http_on)
    out += f" num_retries: {num} base_interval_ms: {base} max_interval_ms: {max_}"
    if per_try:
        out += f" per_try_timeout_ms: {per_try}"
    if buffer:
        out += f" buffer_limit_bytes: {buffer}"
    return out + " }"


def cluster(name, ports, protocol="HTTP2", extra=""):
    eps = "".join(f'  endpoints {{ address {{ address: "127.0.0.1" port: {p} }} }}\n' for p in ports)
    return (f'clusters {{\n  name: "{name}"\n  connect_timeout_ms: 2000\n  protocol: {protocol}\n'
            f"{eps}{RETRY_CLUSTER_LIMITS}{extra}}}\n")


def bundle(routes, clusters, codec="H2C", extra=""):
    """One listener on {listen_port} (codec H2C, or AUTO for h1 and h2
    clients on one port), one virtual host with `routes` in order."""
    return (
        f'listeners {{\n  name: "in"\n  address {{ address: "127.0.0.1" port: {{listen_port}} }}\n'
        f'  http {{ codec: {codec} route_config: "rc" }}\n}}\n'
        f'route_configs {{\n  name: "rc"\n  virtual_hosts {{\n    name: "all"\n    domains: "*"\n'
        f"{routes}  }}\n}}\n{clusters}{extra}"
    )


# -- fixtures -------------------------------------------------------------------------
@pytest.fixture
def flaky(echo_stubs, ports, workdir, request):
    """Factory: flaky(name, **kw) -> started FlakyGrpcBackend (kw as its
    constructor: fail_rate, fail_first, fail_code, max_failed_attempt,
    pushback, hang_ms, seed); stopped at teardown."""
    yield from started_backends(request, lambda name, **kw: FlakyGrpcBackend(
        echo_stubs[2], ports.get(), ports.get(), workdir, name=name, **kw))


@pytest.fixture
def origin():
    """Factory: origin(name="origin", seed=1) -> started FlakyHttpOrigin."""
    yield from made(FlakyHttpOrigin, start=True)


@pytest.fixture
def grpc_client(echo_stubs):
    """Factory: grpc_client(port) -> (EchoStub, echo_pb2); channels closed
    at teardown."""
    channels = []

    def make(port):
        ch = grpc_channel(port)
        channels.append(ch)
        return echo_stubs[1].EchoStub(ch), echo_stubs[0]

    yield make
    for ch in channels:
        ch.close()


def counter(m, name, cluster):
    v = m.stats().get(name, cluster=cluster)
    return 0 if v is None else int(v)


def unary(stub, pb, id, payload=b"", md=(), timeout=CALL_TIMEOUT):
    """One Unary call: (status code name, response or None, details, seconds)."""
    import grpc

    t0 = time.monotonic()
    try:
        r = stub.Unary(pb.EchoRequest(id=id, payload=payload), metadata=list(md), timeout=timeout)
        return "OK", r, "", time.monotonic() - t0
    except grpc.RpcError as e:
        return e.code().name, None, e.details(), time.monotonic() - t0


def records(backends, id=""):
    """Every attempt the backends saw (of `id`), in arrival order."""
    out = []
    for b in backends:
        out += b.calls(id)
    return sorted(out, key=lambda c: c["t_in"])


def assert_no_more_attempts(backends, id, n):
    """Exactly n attempts of `id`, still n after QUIET seconds."""
    got = records(backends, id)
    assert len(got) == n, f"{id}: {len(got)} attempts, wanted {n}: {got}"
    time.sleep(QUIET)  # a retry would come within ~10 ms (backoff) + RTT
    got = records(backends, id)
    assert len(got) == n, f"{id}: {len(got)} attempts after {QUIET}s, wanted {n}: {got}"
    return got


def check_attempt_sequence(recs, id):
    """The attempts of one call: numbered 1..n in arrival order, each but the
    last failed, the last ok, the first two on different endpoints."""
    nums = [r["attempt"] for r in recs]
    assert nums == list(range(1, len(recs) + 1)), f"{id}: attempt counts {nums} in arrival order: {recs}"
    outcomes = [r["outcome"] for r in recs]
    assert outcomes[-1] == "ok" and all(o == "UNAVAILABLE" for o in outcomes[:-1]), f"{id}: {recs}"
    if len(recs) > 1:
        assert recs[0]["server"] != recs[1]["server"], f"{id}: the retry went to the same endpoint: {recs}"


def many_unary(stub, pb, n, window=48, prefix="c", md=(), budget=45.0):
    """n Unary calls with ids prefix0..prefix{n-1}, at most `window` in
    flight. Returns {id: (code name, response or None)}. Bounded by `budget`
    seconds in all."""
    import grpc

    deadline = time.monotonic() + budget
    results = {}
    inflight = deque()

    def collect(fid, f):
        try:
            results[fid] = ("OK", f.result(timeout=max(deadline - time.monotonic(), 0.1)))
        except grpc.RpcError as e:
            results[fid] = (e.code().name, e.details())

    for i in range(n):
        if len(inflight) >= window:
            collect(*inflight.popleft())
        fid = f"{prefix}{i}"
        inflight.append((fid, stub.Unary.future(pb.EchoRequest(id=fid), metadata=list(md),
                                                timeout=CALL_TIMEOUT)))
        assert time.monotonic() < deadline, f"{n} calls not done within {budget}s ({len(results)} done)"
    while inflight:
        collect(*inflight.popleft())
    return results


# -- 1. flaky backends: every call succeeds --------------------------------------------
def test_flaky_grpc_all_calls_succeed(meshd, flaky, grpc_client):
    # Each backend fails ~30 % of attempts 1-3 with UNAVAILABLE and never a
    # 4th (max_failed_attempt 3): with num_retries 3 every call must succeed,
    # and only if meshd really makes up to 3 retries. Without the cap 0.3^4
    # of the calls (~16 of 2,000) would fail even with correct retries.
    bs = [flaky(n, fail_rate=0.3, max_failed_attempt=3, seed=s) for n, s in (("a", 11), ("b", 22))]
    m = meshd(bundle(route("echo", grpc_match(), "echo", retry(grpc_on=["unavailable"], num=3)),
                     cluster("echo", [b.port for b in bs])))
    stub, pb = grpc_client(m.listen_port)
    n = 2000
    t0 = time.monotonic()
    res = many_unary(stub, pb, n)
    took = time.monotonic() - t0
    bad = {k: v for k, v in res.items() if v[0] != "OK"}
    assert not bad, f"{len(bad)} of {n} calls failed (e.g. {list(bad.items())[:5]})"
    assert all(v[1].id == k for k, v in res.items())
    assert took < 45, f"{n} calls took {took:.1f}s"

    recs = records(bs)
    by_id = {}
    for r in recs:
        by_id.setdefault(r["id"], []).append(r)
    assert set(by_id) == set(res), "backends saw other calls than those made"
    for id, rs in by_id.items():
        check_attempt_sequence(rs, id)
        assert len(rs) <= 4, f"{id}: {len(rs)} attempts with num_retries 3"
    first = [rs[0] for rs in by_id.values()]
    failed_first = sum(r["outcome"] != "ok" for r in first) / n
    assert 0.25 <= failed_first <= 0.35, f"{failed_first:.1%} of first attempts failed (backends: 30 %)"
    retried = sum(len(rs) > 1 for rs in by_id.values())
    assert counter(m, "meshd_cluster_upstream_rq_retry_total", "echo") == len(recs) - n
    assert counter(m, "meshd_cluster_upstream_rq_retry_success_total", "echo") == retried
    assert "event=http_retry" in m.log()
    # the access log says how many attempts each call took
    logged = [int(l.rsplit(" attempts=", 1)[1]) for l in m.log().splitlines() if "event=http_access" in l]
    assert len(logged) == n and sum(logged) == len(recs), (len(logged), sum(logged), len(recs))


# -- 1b. retry budget and max_retries -------------------------------------------------
@pytest.mark.parametrize("limit", ["max_retries", "budget"])
def test_retries_bounded_by_budget_and_breaker(meshd, flaky, grpc_client, limit):
    # Every attempt fails and each retry waits 200 ms holding its slot: of 16
    # calls failing at once only the retries the limit allows are made, the
    # rest answer UNAVAILABLE at once and count as overflows (per route; the
    # breaker's also per cluster).
    b = flaky("a", fail_rate=1.0)
    limits = ("circuit_breakers { max_retries: 1 }\n"
              "  retry_budget { budget_percent: 100 min_retry_concurrency: 100 }\n"
              if limit == "max_retries" else
              "retry_budget { budget_percent: 10 min_retry_concurrency: 1 }\n")
    cl = (f'clusters {{\n  name: "echo"\n  protocol: HTTP2\n'
          f'  endpoints {{ address {{ address: "127.0.0.1" port: {b.port} }} }}\n  {limits}}}\n')
    m = meshd(bundle(route("echo", grpc_match(), "echo",
                           retry(grpc_on=["unavailable"], num=1, base=200, max_=200)), cl))
    stub, pb = grpc_client(m.listen_port)
    res = many_unary(stub, pb, 16, window=16)
    assert all(v[0] == "UNAVAILABLE" for v in res.values()), res
    st = m.stats()
    retried = int(st.get("meshd_route_retry_total", route="echo") or 0)
    overflow = int(st.get("meshd_route_retry_overflow_total", route="echo") or 0)
    assert retried + overflow == 16, (retried, overflow)
    assert retried >= 1 and overflow >= 8, (retried, overflow)
    assert len(records([b])) == 16 + retried
    assert int(st.get("meshd_route_retry_success_total", route="echo") or 0) == 0
    breaker = int(st.get("meshd_cluster_overflow_total", cluster="echo", breaker="retries") or 0)
    assert breaker == (overflow if limit == "max_retries" else 0)
    assert f"reason={'max_retries' if limit == 'max_retries' else 'retry_budget'}" in m.log()
    # every slot given back: the breaker's gauge is full again
    assert int(st.get("meshd_cluster_circuit_breakers_remaining", cluster="echo",
                      breaker="retries")) == (1 if limit == "max_retries" else 3)


# -- 2. statuses outside grpc_retry_on ---------------------------------------------------
def test_non_retryable_status_single_attempt(meshd, flaky, grpc_client):
    bs = [flaky("a"), flaky("b")]
    m = meshd(bundle(route("echo", grpc_match(), "echo", retry(grpc_on=["unavailable"], num=3)),
                     cluster("echo", [b.port for b in bs])))
    stub, pb = grpc_client(m.listen_port)
    for code, name in ((3, "INVALID_ARGUMENT"), (13, "INTERNAL"), (4, "DEADLINE_EXCEEDED"), (8, "RESOURCE_EXHAUSTED")):
        id = f"nr{code}"
        got, _, details, _ = unary(stub, pb, id, md=[("x-flaky-fail-rate", "1"), ("x-flaky-code", str(code))])
        assert got == name, f"status {code}: client saw {got} {details!r}"
        assert_no_more_attempts(bs, id, 1)
    # Control: the listed status is retried (once here: the first attempt fails).
    got, r, details, _ = unary(stub, pb, "ctl", md=FAIL_ONCE)
    assert got == "OK", details
    recs = records(bs, "ctl")
    assert len(recs) == 2 and {r["server"] for r in recs} == {"a", "b"}, recs
    assert counter(m, "meshd_cluster_upstream_rq_retry_total", "echo") == 1


# -- 3. a stream that has started is never retried -------------------------------------
def test_started_stream_not_retried(meshd, flaky, grpc_client):
    import grpc

    bs = [flaky("a"), flaky("b")]
    m = meshd(bundle(route("echo", grpc_match(), "echo", retry(grpc_on=["unavailable"], num=3)),
                     cluster("echo", [b.port for b in bs])))
    stub, pb = grpc_client(m.listen_port)
    got = []
    code = None
    it = stub.ServerStream(pb.EchoRequest(id="s1", repeat=3, payload=b"x"),
                           metadata=[("x-flaky-stream-fail-after", "1")], timeout=CALL_TIMEOUT)
    try:
        for resp in it:
            got.append(resp.seq)
    except grpc.RpcError as e:
        code = e.code()
    assert got == [0] and code == grpc.StatusCode.UNAVAILABLE, f"messages {got}, status {code}"
    recs = assert_no_more_attempts(bs, "s1", 1)
    assert recs[0]["attempt"] == 1 and recs[0]["responses_out"] == 1, recs
    assert counter(m, "meshd_cluster_upstream_rq_retry_total", "echo") == 0
    # Control: the same stream failing before its first message is retried.
    msgs = [r.seq for r in stub.ServerStream(pb.EchoRequest(id="s2", repeat=2), metadata=FAIL_ONCE,
                                             timeout=CALL_TIMEOUT)]
    assert msgs == [0, 1]
    assert [r["attempt"] for r in records(bs, "s2")] == [1, 2]


# -- upstream resets ------------------------------------------------------------------------
def test_upstream_reset_retried_only_with_reset(meshd, flaky, h2_backend, grpc_client):
    # One endpoint resets every stream before answering (env.h2_backend,
    # x-ctl-reset: 1: RST_STREAM INTERNAL_ERROR), the other answers. One
    # worker, round robin: calls alternate between them.
    rst, ok = h2_backend("rst"), flaky("ok")
    routes = (route("plain", grpc_match(header="plain"), "echo", retry(grpc_on=["unavailable"], num=3))
              + route("reset", grpc_match(), "echo", retry(grpc_on=["unavailable"], http_on=["reset"], num=3)))
    m = meshd(bundle(routes, cluster("echo", [rst.port, ok.port])), concurrency=1)
    stub, pb = grpc_client(m.listen_port)

    def reset_attempts(id):
        return [dict(r["headers"]).get("x-meshd-attempt-count") for r in rst.requests
                if dict(r["headers"]).get("x-call-id") == id]

    for i in range(4):
        id = f"rs{i}"
        got, r, details, _ = unary(stub, pb, id, md=[("x-ctl-reset", "1"), ("x-call-id", id)])
        assert got == "OK" and r.server == "ok", f"{id}: {got} {details!r}"
    hit = [f"rs{i}" for i in range(4) if reset_attempts(f"rs{i}")]
    assert hit, "no call reached the resetting endpoint (round robin, 4 calls)"
    for id in hit:
        assert reset_attempts(id) == ["1"], rst.requests
        assert [x["attempt"] for x in ok.calls(id)] == [2], ok.calls(id)
    assert counter(m, "meshd_cluster_upstream_rq_retry_total", "echo") == len(hit)
    # Without "reset" in retry_on, the reset reaches the client after one attempt.
    outcomes = []
    for i in range(2):
        id = f"np{i}"
        got, _, details, _ = unary(stub, pb, id, md=[("x-ctl-reset", "1"), ("x-call-id", id), ("x-route", "plain")])
        outcomes.append((id, got, reset_attempts(id), [x["attempt"] for x in ok.calls(id)]))
    reset = [o for o in outcomes if o[2]]
    assert len(reset) == 1, f"round robin: one of two calls reaches the resetting endpoint: {outcomes}"
    id, got, at_rst, at_ok = reset[0]
    assert got != "OK" and at_rst == ["1"] and at_ok == [], f"a reset not listed in retry_on was retried: {outcomes}"
    assert counter(m, "meshd_cluster_upstream_rq_retry_total", "echo") == len(hit)


# -- 4. the retry buffer ----------------------------------------------------------------
def test_request_over_retry_buffer_not_retried(meshd, flaky, grpc_client):
    b = flaky("a")
    m = meshd(bundle(route("echo", grpc_match(), "echo", retry(grpc_on=["unavailable"], num=3, buffer=1024)),
                     cluster("echo", [b.port])))
    stub, pb = grpc_client(m.listen_port)
    big = os.urandom(64 * 1024)
    got, _, details, _ = unary(stub, pb, "big", payload=big, md=FAIL_ONCE)
    assert got == "UNAVAILABLE", f"64 KiB request over a 1 KiB retry buffer: {got} {details!r}"
    recs = assert_no_more_attempts([b], "big", 1)
    assert recs[0]["bytes_in"] == len(big)
    # A small one is retried, and replayed whole.
    small = os.urandom(512)
    got, r, details, _ = unary(stub, pb, "small", payload=small, md=FAIL_ONCE)
    assert got == "OK", details
    assert r.payload_sha256 == hashlib.sha256(small).hexdigest()
    recs = records([b], "small")
    assert [x["attempt"] for x in recs] == [1, 2] and all(x["bytes_in"] == 512 for x in recs), recs
    # And a big one that succeeds at once still goes through whole.
    got, r, details, _ = unary(stub, pb, "big-ok", payload=big)
    assert got == "OK" and r.payload_sha256 == hashlib.sha256(big).hexdigest(), details
    assert counter(m, "meshd_cluster_upstream_rq_retry_total", "echo") == 1


# -- 5. per-try timeouts -----------------------------------------------------------------
def test_per_try_timeout_moves_to_next_endpoint(meshd, flaky, grpc_client):
    hang, ok = flaky("hang", hang_ms=20000), flaky("ok")
    m = meshd(bundle(route("echo", grpc_match(), "echo", retry(grpc_on=["unavailable"], num=2, per_try=200)),
                     cluster("echo", [hang.port, ok.port])), concurrency=1)
    stub, pb = grpc_client(m.listen_port)
    lat = {}
    for i in range(4):  # round robin over two endpoints: about half start on the hanging one
        got, r, details, t = unary(stub, pb, f"pt{i}")
        assert got == "OK" and r.server == "ok", f"pt{i}: {got} {details!r}"
        lat[f"pt{i}"] = t
    hung = [c for c in hang.calls() if c["id"].startswith("pt")]
    assert hung, "no call reached the hanging endpoint (round robin over two endpoints, 4 calls)"
    for c in hung:
        recs = records([hang, ok], c["id"])
        assert [(x["server"], x["attempt"]) for x in recs] == [("hang", 1), ("ok", 2)], recs
        # 200 ms per try, then a backoff of <= 10 ms; generous upper bound.
        assert 0.19 <= lat[c["id"]] <= 2.0, f"{c['id']}: {lat[c['id']]:.3f}s with a 200 ms per-try timeout"
    # The abandoned attempts were cancelled upstream (bounded wait).
    wait_until(lambda: all(c["ended"] and c["cancelled"] for c in hang.calls()), timeout=10,
               what="the hanging attempts to be cancelled")
    assert counter(m, "meshd_cluster_upstream_rq_retry_total", "echo") == len(hung)


@pytest.mark.parametrize("limit", ["route-timeout", "grpc-deadline"])
def test_all_hanging_deadline_respected(meshd, flaky, grpc_client, limit):
    bs = [flaky("a", hang_ms=20000), flaky("b", hang_ms=20000)]
    route_timeout = 700 if limit == "route-timeout" else 0
    m = meshd(bundle(route("echo", grpc_match(), "echo",
                           f"timeout_ms: {route_timeout} " + retry(grpc_on=["unavailable"], num=10, per_try=200)),
                     cluster("echo", [b.port for b in bs])))
    stub, pb = grpc_client(m.listen_port)
    t0 = time.monotonic()
    got, _, details, took = unary(stub, pb, "dl", timeout=CALL_TIMEOUT if route_timeout else 0.7)
    assert got == "DEADLINE_EXCEEDED", f"{got} {details!r}"
    # 700 ms budget: not before it (with 10 retries allowed), not much after (generous 600 ms).
    assert 0.65 <= took <= 1.3, f"DEADLINE_EXCEEDED after {took:.3f}s with a 700 ms budget"
    wait_until(lambda: all(c["ended"] for c in records(bs, "dl")), timeout=10,
               what="every attempt to end upstream")
    recs = records(bs, "dl")
    assert [r["attempt"] for r in recs] == list(range(1, len(recs) + 1)), recs
    # 200 ms per try in 700 ms: three or four attempts, none started after the deadline.
    assert 3 <= len(recs) <= 4, recs
    assert all(r["t_in"] - t0 < 0.7 for r in recs), [round(r["t_in"] - t0, 3) for r in recs]
    assert all(r["cancelled"] and r["t_end"] - t0 < 1.5 for r in recs), recs


# -- 6. grpc-retry-pushback-ms -------------------------------------------------------------
def test_pushback(meshd, flaky, grpc_client):
    b = flaky("a")
    m = meshd(bundle(route("echo", grpc_match(), "echo", retry(grpc_on=["unavailable"], num=2, base=5, max_=10)),
                     cluster("echo", [b.port])))
    stub, pb = grpc_client(m.listen_port)

    def gap(id, md):
        got, _, details, _ = unary(stub, pb, id, md=md)
        assert got == "OK", f"{id}: {got} {details!r}"
        recs = records([b], id)
        assert [r["attempt"] for r in recs] == [1, 2], recs
        return recs[1]["t_in"] - recs[0]["t_in"]

    plain = gap("pb0", FAIL_ONCE)
    assert plain < 0.2, f"backoff of at most 10 ms took {plain:.3f}s"
    pushed = gap("pb300", [*FAIL_ONCE, ("x-flaky-pushback", "300")])
    # 300 ms asked for; 20 ms of slack for timer granularity, 1.5 s upper bound (generous).
    assert 0.28 <= pushed <= 1.5, f"retry {pushed:.3f}s after a 300 ms pushback"
    got, _, details, _ = unary(stub, pb, "pbneg", md=[*FAIL_ONCE, ("x-flaky-pushback", "-1")])
    assert got == "UNAVAILABLE", f"a negative pushback must stop retries: {got} {details!r}"
    assert_no_more_attempts([b], "pbneg", 1)
    assert counter(m, "meshd_cluster_upstream_rq_retry_total", "echo") == 2


# -- 7. HTTP -------------------------------------------------------------------------------
class H1:
    def __init__(self, port):
        self.c = http.client.HTTPConnection("127.0.0.1", port, timeout=CALL_TIMEOUT)

    def get(self, path, method="GET", body=None, headers=None):
        self.c.request(method, path, body=body, headers=headers or {})
        r = self.c.getresponse()
        return r.status, r.read(), {k.lower(): v for k, v in r.getheaders()}

    def close(self):
        self.c.close()


class H2:
    def __init__(self, port):
        self.c = H2Client(port, timeout=CALL_TIMEOUT)

    def get(self, path, method="GET", body=None, headers=None):
        hdrs = [(":method", method), (":scheme", "http"), (":path", path), (":authority", "meshd.test")]
        hdrs += list((headers or {}).items())
        r = self.c.request(hdrs, body=body or b"")
        assert r.ended, r
        return r.status, bytes(r.data), dict(r.headers)

    def close(self):
        self.c.close()


@pytest.mark.parametrize("down", ["h1", "h2"], ids=["h1-h1", "h2-h1"])
def test_http_503_retried(meshd, origin, down):
    o = origin()
    m = meshd(bundle(route("r", 'prefix: "/r/"', "origin", retry(http_on=["5xx"], num=3)),
                     cluster("origin", [o.port], protocol="HTTP1"), codec="AUTO"))
    c = (H1 if down == "h1" else H2)(m.listen_port)
    try:
        st, body, _ = c.get("/r/get?id=g1&fail_first=2")
        assert (st, body) == (200, b"ok g1 3\n")
        assert [(r["attempt"], r["status"]) for r in o.for_id("g1")] == [(1, 503), (2, 503), (3, 200)]

        data = os.urandom(3000)
        st, body, h = c.get("/r/post?id=p1&fail_first=1", method="POST", body=data,
                            headers={"content-type": "application/octet-stream"})
        assert (st, body) == (200, b"ok p1 2\n")
        recs = o.for_id("p1")
        want = hashlib.sha256(data).hexdigest()
        assert [(r["attempt"], r["method"], r["body_len"], r["body_sha256"]) for r in recs] == \
            [(1, "POST", 3000, want), (2, "POST", 3000, want)], recs

        st, _, _ = c.get("/r/get?id=nf&fail_first=1&status=404")
        assert st == 404 and len(o.for_id("nf")) == 1, "a 404 must not be retried"
        st, _, _ = c.get("/r/get?id=cap&fail_first=10")
        assert st == 503, "after num_retries the last 503 goes to the client"
        assert [r["attempt"] for r in o.for_id("cap")] == [1, 2, 3, 4]

        # A share of 503s: every request ends 200 (never a 503 past attempt 3).
        n = 150
        for i in range(n):
            st, body, _ = c.get(f"/r/get?id=f{i}&fail_rate=0.3&max_failed_attempt=3")
            assert st == 200, f"f{i}: {st} {body!r}"
        fr = [r for r in o.requests if r["id"].startswith("f")]
        assert sum(r["status"] == 503 and r["attempt"] == 1 for r in fr) >= 0.15 * n, "the origin hardly failed"
    finally:
        c.close()
    total, asked = len(o.requests), 4 + n
    assert counter(m, "meshd_cluster_upstream_rq_retry_total", "origin") == total - asked


# -- 8. fault injection -----------------------------------------------------------------
FAULT_ROUTES = (
    route("abort", grpc_match(header="abort"), "echo", "fault { abort_grpc_status: 14 abort_percent: 30 }")
    + route("delay", grpc_match(header="delay"), "echo", "fault { delay_ms: 100 delay_percent: 50 }")
    + route("hdr", grpc_match(), "echo", "fault { header_control: true }")
    + route("web", 'prefix: "/f/"', "origin", "fault { header_control: true }")
)


@pytest.fixture
def fault_setup(meshd, flaky, origin, grpc_client):
    b, o = flaky("a"), origin()
    m = meshd(bundle(FAULT_ROUTES, cluster("echo", [b.port]) + cluster("origin", [o.port], protocol="HTTP1"),
                     codec="AUTO"))
    stub, pb = grpc_client(m.listen_port)
    return m, b, o, stub, pb


def test_fault_abort_share(fault_setup):
    m, b, _, stub, pb = fault_setup
    n = 1000
    res = many_unary(stub, pb, n, prefix="ab", md=[("x-route", "abort")])
    aborted = [k for k, v in res.items() if v[0] == "UNAVAILABLE"]
    assert all(v[0] in ("OK", "UNAVAILABLE") for v in res.values()), {v[0] for v in res.values()}
    # 30 % of 1,000: sd 1.45 %; +-5 % is about 3.4 sd.
    assert 0.25 <= len(aborted) / n <= 0.35, f"{len(aborted)} of {n} aborted (30 % configured)"
    seen = {c["id"] for c in b.calls() if c["id"].startswith("ab")}
    assert seen == set(res) - set(aborted), "an aborted call reached the upstream, or a passed one did not"
    assert counter(m, "meshd_cluster_upstream_rq_fault_abort_total", "echo") == len(aborted)
    assert "event=http_fault_abort" in m.log()


def test_fault_delay_share(fault_setup):
    _, _, _, stub, pb = fault_setup
    n = 100

    def one(i):
        got, _, details, t = unary(stub, pb, f"d{i}", md=[("x-route", "delay")])
        assert got == "OK", details
        return t

    with ThreadPoolExecutor(4) as ex:
        lat = list(ex.map(one, range(n), timeout=60))
    delayed = [t for t in lat if t >= 0.09]  # 100 ms delay; 10 ms slack for timer granularity
    fast = sorted(t for t in lat if t < 0.09)
    # 50 % of 100: sd 5 %; 50 +- 17 % is about 3.4 sd.
    assert 33 <= len(delayed) <= 67, f"{len(delayed)} of {n} calls delayed (50 % configured): {sorted(lat)}"
    assert fast and fast[len(fast) // 2] < 0.05, f"undelayed calls are slow: {fast}"


def test_fault_header_control(fault_setup, workdir):
    m, b, o, stub, pb = fault_setup
    got, _, details, _ = unary(stub, pb, "h8", md=[("x-meshd-fault-abort-grpc-status", "8")])
    assert got == "RESOURCE_EXHAUSTED", f"{got} {details!r}"
    assert b.calls("h8") == []
    got, _, details, _ = unary(stub, pb, "h-ok")
    assert got == "OK", f"the next call, without the header: {got} {details!r}"
    got, _, details, t = unary(stub, pb, "h-delay", md=[("x-meshd-fault-delay-ms", "300")])
    assert got == "OK" and 0.29 <= t <= 3.0, f"{got} after {t:.3f}s with a 300 ms delay asked for"
    assert counter(m, "meshd_cluster_upstream_rq_fault_abort_total", "echo") == 1

    r = curl_h1(m.listen_port, "/f/x?id=teapot", workdir, headers=["x-meshd-fault-abort-http-status: 418"])
    assert r.rc == 0 and r.transfers[0]["http_code"] == 418, r
    assert o.for_id("teapot") == []
    r = curl_h1(m.listen_port, "/f/x?id=plain", workdir)
    assert r.rc == 0 and r.transfers[0]["http_code"] == 200, r
    assert counter(m, "meshd_cluster_upstream_rq_fault_abort_total", "origin") == 1


# -- 9. fallback cluster -----------------------------------------------------------------
def closed_udp_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_fallback_when_primary_has_no_endpoint(meshd, flaky, grpc_client):
    fb = flaky("fb")
    primary = ('clusters {\n  name: "primary"\n  type: DNS\n  dns_name: "nothing.invalid"\n  dns_port: 1\n'
               "  protocol: HTTP2\n}\n")
    routes = (route("nofb", grpc_match(header="nofb"), "primary")
              + route("echo", grpc_match(), "primary", 'fallback_cluster: "fb"'))
    dns = f'dns {{ resolvers {{ address: "127.0.0.1" port: {closed_udp_port()} }} query_timeout_ms: 200 }}\n'
    m = meshd(bundle(routes, primary + cluster("fb", [fb.port]), extra=dns))
    stub, pb = grpc_client(m.listen_port)
    for i in range(5):
        got, r, details, _ = unary(stub, pb, f"fb{i}")
        assert got == "OK" and r.server == "fb", f"fb{i}: {got} {details!r}"
    assert counter(m, "meshd_cluster_upstream_rq_fallback_total", "primary") == 5
    assert "event=http_fallback" in m.log()
    # Control: the same cluster without a fallback has nothing to send to.
    got, _, details, _ = unary(stub, pb, "nofb", md=[("x-route", "nofb")])
    assert got == "UNAVAILABLE", f"{got} {details!r}"
    assert fb.calls("nofb") == []


def test_fallback_when_primary_unhealthy(meshd, flaky, grpc_client, backends):
    fb = flaky("fb")
    down = backends.refusing()
    hc = "  health_check { interval_ms: 100 timeout_ms: 100 unhealthy_threshold: 1 healthy_threshold: 1 tcp {} }\n"
    m = meshd(bundle(route("echo", grpc_match(), "primary", 'fallback_cluster: "fb"'),
                     cluster("primary", [down.port], extra=hc) + cluster("fb", [fb.port])))
    stub, pb = grpc_client(m.listen_port)
    # The first check may not have run yet: poll (bounded) until the fallback serves.
    wait_until(lambda: unary(stub, pb, "probe")[0] == "OK", timeout=3, interval=0.1,
               what="the fallback to serve once the primary's only endpoint is unhealthy")
    before = counter(m, "meshd_cluster_upstream_rq_fallback_total", "primary")
    for i in range(5):
        got, r, details, _ = unary(stub, pb, f"hfb{i}")
        assert got == "OK" and r.server == "fb", f"hfb{i}: {got} {details!r}"
    assert counter(m, "meshd_cluster_upstream_rq_fallback_total", "primary") == before + 5


# -- 10. max stream duration -------------------------------------------------------------
def test_max_stream_duration_grpc(meshd, flaky, grpc_client):
    import grpc

    b = flaky("a")
    m = meshd(bundle(route("echo", grpc_match(), "echo", "max_stream_duration_ms: 500"), cluster("echo", [b.port])))
    stub, pb = grpc_client(m.listen_port)
    t0 = time.monotonic()
    got, code = [], None
    try:  # 50 responses 100 ms apart: 5 s
        for r in stub.ServerStream(pb.EchoRequest(id="long", repeat=50, interval_ms=100), timeout=CALL_TIMEOUT):
            got.append(r.seq)
    except grpc.RpcError as e:
        code = e.code()
    took = time.monotonic() - t0
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED, f"{code} after {len(got)} messages"
    assert 0.45 <= took <= 1.3, f"ended after {took:.3f}s with max_stream_duration_ms 500"
    assert 2 <= len(got) <= 7 and got == list(range(len(got))), got
    wait_until(lambda: b.calls("long")[0]["ended"], timeout=10, what="the upstream stream to end")
    assert b.calls("long")[0]["cancelled"]


def test_max_stream_duration_http_reset(meshd, origin):
    o = origin()
    m = meshd(bundle(route("r", 'prefix: "/r/"', "origin", "max_stream_duration_ms: 500"),
                     cluster("origin", [o.port], protocol="HTTP1")))
    with H2Client(m.listen_port, timeout=CALL_TIMEOUT) as c:
        t0 = time.monotonic()
        r = c.request([(":method", "GET"), (":scheme", "http"), (":path", "/r/slow?id=sl&slow=40"),
                       (":authority", "meshd.test")])
        took = time.monotonic() - t0
    assert r.status == 200 and r.reset is not None and not r.ended, r
    assert 0.45 <= took <= 1.3, f"reset after {took:.3f}s with max_stream_duration_ms 500"
    assert b"chunk 0" in r.data and b"chunk 39" not in r.data
