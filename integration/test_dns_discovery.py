# SPDX-License-Identifier: Apache-2.0
"""DNS and DNS_SRV clusters (sidecar/discovery/dns.c) against a real dnsmasq:
SRV targets with their ports, weights and priorities become the endpoint set,
record changes are followed within a few TTLs, a dead DNS server keeps the
last good set (counted as failures), A records give one endpoint per address,
and a name that does not exist answers 503 "no endpoint" and is counted."""
import collections
import re
import socket
import time

import pytest

from env.clients import H2Client, wait_until
from env.dnsmasq import Dnsmasq
from env.h2_backend import H2Backend

pytestmark = pytest.mark.proxy_only

TTL = 1  # seconds, every record
SRV_NAME = "_grpc._tcp.svc.test"
FOLLOW_DEADLINE = 10.0  # a few TTLs (1 s) and min_refresh_ms (200 ms), with room for ASan
HANG_GUARD = 20.0


def _cluster(name, kind, dns_name, lb="ROUND_ROBIN", dns_port=None):
    port = f" dns_port: {dns_port}" if dns_port else ""
    return (
        f'clusters {{ name: "{name}" type: {kind} dns_name: "{dns_name}"{port} lb_policy: {lb}'
        f" protocol: HTTP2 connect_timeout_ms: 2000 }}\n"
    )


def _bundle(clusters):
    """h2c listener; /<cluster>/... goes to that cluster. {dns_port} is the resolver."""
    routes = "".join(
        f'    routes {{ name: "{c}" match {{ prefix: "/{c}/" }} route {{ cluster: "{c}" timeout_ms: 5000 }} }}\n'
        for c in clusters
    )
    return (
        'listeners { name: "in" address { address: "127.0.0.1" port: {listen_port} }'
        ' http { codec: H2C route_config: "r" } }\n'
        'route_configs { name: "r" virtual_hosts { name: "all" domains: "*"\n' + routes + "} }\n"
        + "".join(clusters.values())
        + 'dns { resolvers { address: "127.0.0.1" port: {dns_port} } min_refresh_ms: 200'
        " max_refresh_ms: 2000 query_timeout_ms: 300 }\n"
    )


def _clusters_page(m):
    """GET /clusters -> {cluster: {"endpoints": n, "eps": {label: (priority, weight)}}}."""
    status, body = m.admin_get("/clusters")
    assert status == 200, body
    out, cur = {}, None
    for line in body.splitlines():
        if not line.startswith(" "):
            name = line.split(" ", 1)[0]
            n = int(re.search(r" endpoints=(\d+)", line).group(1))
            cur = out[name] = {"endpoints": n, "eps": {}}
        else:
            label, prio, weight = re.match(r"\s+(\S+) priority=(\d+) weight=(\d+)", line).groups()
            cur["eps"][label] = (int(prio), int(weight))
    return out


def _wait_eps(m, cluster, want, what=None):
    """Poll /clusters until `cluster`'s endpoints are exactly `want`
    ({label: (priority, weight)}); returns the seconds it took."""
    t0 = time.monotonic()
    wait_until(
        lambda: _clusters_page(m)[cluster]["eps"] == want,
        timeout=FOLLOW_DEADLINE,
        interval=0.05,
        what=what or f"{cluster} endpoints {want}",
    )
    return time.monotonic() - t0


def _spread(port, path, n):
    """n requests on one connection; Counter of the answering backends."""
    seen = collections.Counter()
    with H2Client(port, timeout=HANG_GUARD) as c:
        for _ in range(n):
            r = c.request(
                [(":method", "GET"), (":scheme", "http"), (":path", path), (":authority", "svc")],
                timeout=HANG_GUARD,
            )
            assert r.status == 200, r
            seen[r.header("x-backend")] += 1
    return seen


def _stat(m, name, cluster):
    return m.stat(name, cluster=cluster) or 0


@pytest.fixture
def dnsmasq(workdir, ports):
    started = []

    def make(hosts, srv=()):
        d = Dnsmasq(workdir, ports.get(), ttl=TTL)
        started.append(d)
        return d.start(hosts=hosts, srv=srv)

    yield make
    for d in started:
        d.stop()


@pytest.fixture
def bound_h2():
    """Factory: bound_h2(name, host, port=0) -> started H2Backend listening on
    host:port (the shared backends bind 127.0.0.1 only)."""
    started = []

    def make(name, host, port=0):
        b = H2Backend(name=name)
        b.lsock.close()
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(256)
        s.setblocking(False)
        b.lsock, b.port = s, s.getsockname()[1]
        started.append(b)
        return b.start()

    yield make
    for b in started:
        b.stop()


def _srv_env(h2_backend, dnsmasq, meshd, records, lb="WEIGHTED_ROUND_ROBIN"):
    """Backends b1..bN (127.0.0.1, own ports, target names bN.svc.test) and
    an SRV cluster "srv" over them. records: [(priority, weight)] per backend."""
    bs = [h2_backend(f"b{i + 1}") for i in range(len(records))]
    hosts = {f"b{i + 1}.svc.test": ["127.0.0.1"] for i in range(len(bs))}
    srv = [(SRV_NAME, f"b{i + 1}.svc.test", b.port, p, w) for i, (b, (p, w)) in enumerate(zip(bs, records))]
    d = dnsmasq(hosts, srv)
    m = meshd(_bundle({"srv": _cluster("srv", "DNS_SRV", SRV_NAME, lb=lb)}), dns_port=d.port, concurrency=1)
    return bs, d, m


def _want(bs, records):
    return {f"127.0.0.1:{b.port}": (p, w or 1) for b, (p, w) in zip(bs, records)}


def test_srv_targets_ports_and_weights(h2_backend, dnsmasq, meshd):
    records = [(0, 1), (0, 2), (0, 3)]
    bs, d, m = _srv_env(h2_backend, dnsmasq, meshd, records)
    _wait_eps(m, "srv", _want(bs, records))
    seen = _spread(m.listen_port, "/srv/x", 60)
    # Smooth weighted round robin on one worker: 10/20/30 over 60 picks.
    for b, (_, w) in zip(bs, records):
        assert abs(seen[b.name] - 10 * w) <= 2, seen
    assert _stat(m, "meshd_cluster_dns_resolve_total", "srv") >= 1
    assert _stat(m, "meshd_cluster_dns_failure_total", "srv") == 0
    assert m.stat("meshd_cluster_membership_total", cluster="srv") == 3


def test_srv_weight_zero_counts_as_one(h2_backend, dnsmasq, meshd):
    records = [(0, 0), (0, 3)]
    bs, d, m = _srv_env(h2_backend, dnsmasq, meshd, records)
    _wait_eps(m, "srv", {f"127.0.0.1:{bs[0].port}": (0, 1), f"127.0.0.1:{bs[1].port}": (0, 3)})
    seen = _spread(m.listen_port, "/srv/x", 40)
    assert abs(seen["b1"] - 10) <= 2 and abs(seen["b2"] - 30) <= 2, seen


def test_srv_records_changed_are_followed(h2_backend, dnsmasq, meshd):
    records = [(0, 1), (0, 1), (0, 1)]
    bs, d, m = _srv_env(h2_backend, dnsmasq, meshd, records, lb="ROUND_ROBIN")
    # Start with b1 and b2 only.
    d.restart(srv=d.srv[:2])
    _wait_eps(m, "srv", _want(bs[:2], records[:2]))
    assert set(_spread(m.listen_port, "/srv/x", 10)) == {"b1", "b2"}
    # b1 leaves, b3 joins, b2's weight changes.
    d.restart(srv=[(SRV_NAME, "b2.svc.test", bs[1].port, 0, 4), (SRV_NAME, "b3.svc.test", bs[2].port, 0, 1)])
    took = _wait_eps(m, "srv", {f"127.0.0.1:{bs[1].port}": (0, 4), f"127.0.0.1:{bs[2].port}": (0, 1)})
    print(f"endpoint set followed the new records in {took:.2f}s (TTL {TTL}s)")
    assert set(_spread(m.listen_port, "/srv/x", 10)) == {"b2", "b3"}
    assert "event=cluster_endpoints cluster=srv endpoints=2" in m.log()


def test_dns_server_down_keeps_last_good_set(h2_backend, dnsmasq, meshd):
    records = [(0, 1), (0, 1), (0, 1)]
    bs, d, m = _srv_env(h2_backend, dnsmasq, meshd, records, lb="ROUND_ROBIN")
    want = _want(bs, records)
    _wait_eps(m, "srv", want)
    before = _stat(m, "meshd_cluster_dns_failure_total", "srv")
    d.stop()
    wait_until(
        lambda: _stat(m, "meshd_cluster_dns_failure_total", "srv") >= before + 2,
        timeout=FOLLOW_DEADLINE,
        what="dns failures counted with the server down",
    )
    assert _clusters_page(m)["srv"]["eps"] == want
    assert set(_spread(m.listen_port, "/srv/x", 9)) == {"b1", "b2", "b3"}
    log = m.log()
    assert re.search(r"level=warn event=dns_failure cluster=srv query=SRV name=\"_grpc\._tcp\.svc\.test\" err=\"", log), log[-2000:]
    # Back up: resolutions answer again, the set is the same.
    resolved = _stat(m, "meshd_cluster_dns_resolve_total", "srv")
    d.start()
    wait_until(
        lambda: _stat(m, "meshd_cluster_dns_resolve_total", "srv") > resolved,
        timeout=FOLLOW_DEADLINE,
        what="a resolution once the server is back",
    )
    assert "event=dns_recovered cluster=srv" in m.log()
    assert _clusters_page(m)["srv"]["eps"] == want


def test_dns_a_records_two_addresses(dnsmasq, meshd, bound_h2):
    b2 = bound_h2("a2", "127.0.0.2")
    b3 = bound_h2("a3", "127.0.0.3", b2.port)
    d = dnsmasq({"two.svc.test": ["127.0.0.2", "127.0.0.3"]})
    m = meshd(_bundle({"a": _cluster("a", "DNS", "two.svc.test", dns_port=b2.port)}), dns_port=d.port)
    _wait_eps(m, "a", {f"127.0.0.2:{b2.port}": (0, 1), f"127.0.0.3:{b2.port}": (0, 1)})
    seen = _spread(m.listen_port, "/a/x", 10)
    assert seen == {"a2": 5, "a3": 5}, seen
    assert _stat(m, "meshd_cluster_dns_resolve_total", "a") >= 1


def test_name_not_found_is_503_and_counted(dnsmasq, meshd, h2_backend):
    d = dnsmasq({"other.svc.test": ["127.0.0.1"]})
    m = meshd(_bundle({"gone": _cluster("gone", "DNS", "nosuch.svc.test", dns_port=1)}), dns_port=d.port)
    wait_until(
        lambda: _stat(m, "meshd_cluster_dns_failure_total", "gone") >= 1,
        timeout=FOLLOW_DEADLINE,
        what="the failed resolution counted",
    )
    with H2Client(m.listen_port, timeout=HANG_GUARD) as c:
        r = c.request([(":method", "GET"), (":scheme", "http"), (":path", "/gone/x"), (":authority", "svc")],
                      timeout=HANG_GUARD)
    assert r.status == 503, r
    assert _clusters_page(m)["gone"]["endpoints"] == 0
    assert _stat(m, "meshd_cluster_dns_resolve_total", "gone") == 0
    assert 'event=dns_failure cluster=gone query=A/AAAA name="nosuch.svc.test" err="Domain name not found"' in m.log()
    # Retried after min_refresh_ms, one warning per streak (not per retry).
    wait_until(lambda: _stat(m, "meshd_cluster_dns_failure_total", "gone") >= 3, timeout=FOLLOW_DEADLINE,
               what="retries")
    assert m.log().count("event=dns_failure cluster=gone") == 1


def test_srv_priorities_lower_level_idle(h2_backend, dnsmasq, meshd):
    records = [(10, 1), (10, 1), (20, 5)]
    bs, d, m = _srv_env(h2_backend, dnsmasq, meshd, records)
    _wait_eps(m, "srv", _want(bs, records))
    seen = _spread(m.listen_port, "/srv/x", 30)
    assert seen["b3"] == 0 and seen["b1"] == 15 and seen["b2"] == 15, seen


def test_resolver_silent_is_a_timeout(meshd):
    # A UDP port that never answers: every query ends by c-ares' timeout
    # (query_timeout_ms 300, tried twice), driven by the control loop's timer.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        m = meshd(_bundle({"slow": _cluster("slow", "DNS", "slow.svc.test", dns_port=1)}),
                  dns_port=silent.getsockname()[1])
        t0 = time.monotonic()
        wait_until(lambda: _stat(m, "meshd_cluster_dns_failure_total", "slow") >= 1,
                   timeout=FOLLOW_DEADLINE, what="a timed-out resolution counted")
        print(f"first timeout counted after {time.monotonic() - t0:.2f}s")
        assert 'event=dns_failure cluster=slow query=A/AAAA name="slow.svc.test" err="Timeout while contacting DNS servers"' in m.log()
        assert m.admin_get("/ready")[0] == 200
        m.stop()  # with a query in flight: c-ares is torn down cleanly
