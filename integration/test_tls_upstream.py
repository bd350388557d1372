# SPDX-License-Identifier: Apache-2.0
"""TLS origination (Cluster.tls): a plaintext client -> meshd's h2c listener
-> a cluster with tls -> a TLS upstream:

  - the gRPC echo backend serving TLS and requiring client certificates
    (grpc.ssl_server_credentials): every call shape works, and the backend
    sees meshd's client identity (spiffe://.../sa/frontend);
  - match_spiffe_ids: a server naming another identity is refused
    (UNAVAILABLE, meshd_cluster_tls_identity_mismatch_total, an
    upstream_tls_failed line naming the identity presented); one of several
    matches; a server certificate of another CA is refused
    (meshd_cluster_tls_handshake_error_total), so is an expired one; no
    client certificate for a server that requires one is refused;
  - an HTTP1 cluster over TLS to env.h1_origin.H1Origin with an ssl context:
    ALPN offers http/1.1 only (HTTP2 clusters h2 only), SNI is sent as
    configured, and kept-alive TLS connections are reused.

meshd runs with one worker (one upstream pool). No timing is asserted."""
import grpc
import pytest

from env.clients import H2Client, grpc_channel, wait_until
from env.h1_origin import KNOWN_BODY, H1Origin
from env.tls import (  # noqa: F401 - pki and tls_grpc_backend are fixtures
    HANG_GUARD,
    client_context,
    cluster,
    counter,
    grpc_tls_channel,
    http_bundle,
    http_listener,
    parse_log_line,
    pki,
    probe,
    server_context,
    tls_grpc_backend,
    upstream_tls,
    wait_log,
)

ROUTES = [
    'routes { name: "grpc" match { prefix: "/test.v1.Echo/" } route { cluster: "app" } }',
    'routes { name: "h1" match { prefix: "/h1/" } route { cluster: "h1" } }',
    'routes { name: "h2o" match { prefix: "/h2o/" } route { cluster: "h2o" } }',
]


class UpSvc:
    def __init__(self, m, backend, origin, pki):
        self.m = m
        self.backend = backend
        self.origin = origin
        self.port = m.values["listen_port"]
        self.pki = pki
        self._channels = []

    def stat(self, name, cl="app"):
        return counter(self.m, name, cluster=cl)

    def stub(self, stubs):
        ch = grpc_channel(self.port)
        self._channels.append(ch)
        return stubs[1].EchoStub(ch)

    def close(self):
        for ch in self._channels:
            ch.close()


@pytest.fixture
def origin_factory():
    made = []

    def make(w, ca, require_client_cert=True, alpn=("h2", "http/1.1")):
        sni = []
        o = H1Origin(ssl_context=server_context(w, ca, require_client_cert=require_client_cert, alpn=alpn,
                                                sni_seen=sni))
        o.sni_seen = sni
        made.append(o)
        return o.start()

    yield make
    for o in made:
        o.stop()


@pytest.fixture
def up_svc(meshd, tls_grpc_backend, origin_factory, pki, ports):
    """Factory: up_svc(backend_cert=None (pki.backend), backend_ca=None (mesh
    CA), match=None ([backend's ID]), client_cert="frontend" (None: none),
    sni="", h1_sni="") -> UpSvc with clusters app (HTTP2, gRPC backend), h1
    (HTTP1, TLS origin) and h2o (HTTP2 to the same TLS origin)."""

    made = []

    def make(backend_cert=None, backend_ca=None, match=None, client_cert="frontend", sni="", h1_sni=""):
        b = tls_grpc_backend(backend_cert or pki.backend, backend_ca or pki.ca.bundle)
        o = origin_factory(pki.backend, pki.ca.bundle)
        cc = getattr(pki, client_cert) if client_cert else None
        match = [pki.backend.spiffe_id] if match is None else match
        text = http_bundle(
            [http_listener("in", "{listen_port}", "H2C")],
            [cluster("app", "{upstream_port}", "HTTP2", upstream_tls(pki.ca.bundle, cc, sni=sni, match=match)),
             cluster("h1", "{origin_port}", "HTTP1", upstream_tls(pki.ca.bundle, cc, sni=h1_sni, match=match)),
             cluster("h2o", "{origin_port}", "HTTP2", upstream_tls(pki.ca.bundle, cc, match=match))],
            routes=ROUTES,
        )
        m = meshd(text, listen_port=ports.get(), upstream_port=b.port, origin_port=o.port, concurrency=1)
        svc = UpSvc(m, b, o, pki)
        made.append(svc)
        return svc

    yield make
    for svc in made:
        svc.close()


def h2_get(port, path):
    with H2Client(port, timeout=HANG_GUARD) as c:
        return c.request([(":method", "GET"), (":scheme", "http"), (":path", path), (":authority", "localhost")])


# -- the TLS upstreams themselves ---------------------------------------------------------------------


def test_helpers_tls_backends_direct(tls_grpc_backend, origin_factory, echo_stubs, pki):
    pb, pbg, _ = echo_stubs
    b = tls_grpc_backend(pki.backend, pki.ca.bundle)
    with grpc_tls_channel(b.port, pki.ca.bundle, pki.frontend) as ch:
        assert pbg.EchoStub(ch).Unary(pb.EchoRequest(id="direct"), timeout=HANG_GUARD).id == "direct"
    call = b.wait_call("direct", lambda c: c["ended"])
    assert call["transport_security"] == ["ssl"] and pki.frontend.spiffe_id in call["peer_identities"], call
    for cert in (None, pki.rogue):
        with grpc_tls_channel(b.port, pki.ca.bundle, cert) as ch:
            with pytest.raises(grpc.RpcError) as ei:
                pbg.EchoStub(ch).Unary(pb.EchoRequest(id="refused"), timeout=10)
            assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
    assert b.calls("refused") == []

    o = origin_factory(pki.backend, pki.ca.bundle)
    p = probe(o.port, client_context(ca=pki.ca.bundle, cert=pki.frontend, alpn=["http/1.1"]), path="/h1/direct")
    assert p.ok and p.status == 200 and p.body == KNOWN_BODY and p.alpn == "http/1.1", p
    assert o.tls_info[1]["peer_uris"] == [pki.frontend.spiffe_id] and o.sni_seen == ["localhost"], o.tls_info
    p = probe(o.port, client_context(ca=pki.ca.bundle, alpn=["http/1.1"]), path="/h1/nocert")
    assert not p.ok, p


# -- gRPC over TLS ------------------------------------------------------------------------------------------


def test_grpc_calls_over_tls(up_svc, echo_stubs, pki):
    pb, _, _ = echo_stubs
    svc = up_svc()
    stub = svc.stub(echo_stubs)
    assert stub.Unary(pb.EchoRequest(id="u", payload=b"p" * 1000), timeout=HANG_GUARD).id == "u"
    assert [m.seq for m in stub.ServerStream(pb.EchoRequest(id="s", repeat=5), timeout=HANG_GUARD)] == list(range(5))
    r = stub.ClientStream(iter([pb.EchoRequest(id="c", payload=b"x" * 10)] * 4), timeout=HANG_GUARD)
    assert r.received_messages == 4
    got = list(stub.BidiStream(iter([pb.EchoRequest(id="b")] * 3), timeout=HANG_GUARD))
    assert len(got) == 3
    for cid in "uscb":
        call = svc.backend.wait_call(cid, lambda c: c["ended"])
        assert call["transport_security"] == ["ssl"], call
        assert pki.frontend.spiffe_id in call["peer_identities"], call
    assert svc.stat("meshd_cluster_tls_handshake_error_total") == 0
    assert svc.stat("meshd_cluster_tls_identity_mismatch_total") == 0


def test_any_of_several_ids_matches(up_svc, echo_stubs, pki):
    pb, _, _ = echo_stubs
    svc = up_svc(match=[pki.ca.spiffe_id("other"), pki.backend.spiffe_id])
    assert svc.stub(echo_stubs).Unary(pb.EchoRequest(id="one-of"), timeout=HANG_GUARD).id == "one-of"


def test_no_match_list_accepts_any_id_of_the_ca(up_svc, echo_stubs, pki):
    pb, _, _ = echo_stubs
    svc = up_svc(match=[])
    assert svc.stub(echo_stubs).Unary(pb.EchoRequest(id="any"), timeout=HANG_GUARD).id == "any"


def test_identity_mismatch_refused(up_svc, echo_stubs, pki):
    pb, _, _ = echo_stubs
    wanted = pki.ca.spiffe_id("payments")
    svc = up_svc(match=[wanted])
    with pytest.raises(grpc.RpcError) as ei:
        svc.stub(echo_stubs).Unary(pb.EchoRequest(id="mismatch"), timeout=HANG_GUARD)
    assert ei.value.code() == grpc.StatusCode.UNAVAILABLE, ei.value
    assert svc.backend.calls("mismatch") == []
    wait_until(lambda: svc.stat("meshd_cluster_tls_identity_mismatch_total") >= 1, timeout=HANG_GUARD,
               what="meshd_cluster_tls_identity_mismatch_total to count it")
    lines = wait_log(svc.m, "upstream_tls_failed", cluster="app")
    assert any(pki.backend.spiffe_id in parse_log_line(l).get("reason", "") for l in lines), \
        "no upstream_tls_failed reason naming the presented identity:\n" + "\n".join(lines)


def test_server_of_another_ca_refused(up_svc, echo_stubs, pki):
    pb, _, _ = echo_stubs
    impostor = pki.other_ca.workload("impostor", sa="backend")  # the right ID, the wrong CA
    svc = up_svc(backend_cert=impostor, backend_ca=pki.ca.bundle)
    with pytest.raises(grpc.RpcError) as ei:
        svc.stub(echo_stubs).Unary(pb.EchoRequest(id="impostor"), timeout=HANG_GUARD)
    assert ei.value.code() == grpc.StatusCode.UNAVAILABLE, ei.value
    assert svc.backend.calls("impostor") == []
    wait_until(lambda: svc.stat("meshd_cluster_tls_handshake_error_total") >= 1, timeout=HANG_GUARD,
               what="meshd_cluster_tls_handshake_error_total to count it")
    assert svc.stat("meshd_cluster_tls_identity_mismatch_total") == 0
    wait_log(svc.m, "upstream_tls_failed", cluster="app")


def test_expired_server_certificate_refused(up_svc, echo_stubs, pki):
    pb, _, _ = echo_stubs
    expired = pki.ca.workload("backend-expired", sa="backend", expired=True)
    svc = up_svc(backend_cert=expired)
    with pytest.raises(grpc.RpcError) as ei:
        svc.stub(echo_stubs).Unary(pb.EchoRequest(id="expired"), timeout=HANG_GUARD)
    assert ei.value.code() == grpc.StatusCode.UNAVAILABLE, ei.value
    assert svc.backend.calls("expired") == []
    wait_until(lambda: svc.stat("meshd_cluster_tls_handshake_error_total") >= 1, timeout=HANG_GUARD,
               what="meshd_cluster_tls_handshake_error_total to count it")
    wait_log(svc.m, "upstream_tls_failed", cluster="app")


@pytest.mark.parametrize("usage,served", [("serve", True), ("client", False)],
                         ids=["serve-only-served", "client-only-refused"])
def test_server_certificate_key_usage(up_svc, echo_stubs, pki, usage, served):
    """A server certificate must allow serverAuth (certs/mint --serve-only
    does; --client-only does not)."""
    pb, _, _ = echo_stubs
    w = pki.ca.workload(f"backend-{usage}", sa="backend", usage=usage)
    svc = up_svc(backend_cert=w)
    code = grpc.StatusCode.OK
    try:
        svc.stub(echo_stubs).Unary(pb.EchoRequest(id="eku"), timeout=HANG_GUARD)
    except grpc.RpcError as e:
        code = e.code()
    assert code == (grpc.StatusCode.OK if served else grpc.StatusCode.UNAVAILABLE)
    assert len(svc.backend.calls("eku")) == (1 if served else 0)


def test_large_messages_over_tls_upstream(up_svc, echo_stubs, pki):
    import hashlib

    from env.h2_backend import det_body_sha256

    pb, _, _ = echo_stubs
    svc = up_svc()
    payload = hashlib.sha256(b"u").digest() * (1 << 18)  # 8 MiB
    r = svc.stub(echo_stubs).Unary(pb.EchoRequest(id="big", payload=payload, response_size=8 << 20), timeout=120)
    assert r.payload_sha256 == hashlib.sha256(payload).hexdigest() and len(r.payload) == 8 << 20
    n = 32 << 20
    resp = h2_get(svc.port, f"/h1/big?size={n}")
    assert resp.status == 200 and resp.length == n and resp.sha256() == det_body_sha256(n), resp


def test_concurrent_calls_over_one_tls_upstream(up_svc, echo_stubs):
    """100 calls at once share the TLS upstream connection(s)."""
    from concurrent.futures import ThreadPoolExecutor

    pb, _, _ = echo_stubs
    svc = up_svc()
    stub = svc.stub(echo_stubs)
    with ThreadPoolExecutor(max_workers=20) as ex:
        futs = [stub.Unary.future(pb.EchoRequest(id=f"par{i}", payload=b"%d" % i * 1000), timeout=HANG_GUARD * 2)
                for i in range(100)]
        ids = sorted(f.result(timeout=HANG_GUARD * 3).id for f in futs)
    assert ids == sorted(f"par{i}" for i in range(100))
    assert svc.stat("meshd_cluster_tls_handshake_error_total") == 0


def test_stale_pooled_tls_connection(up_svc):
    """The origin closes a kept-alive TLS connection while it is idle in
    meshd's pool: the next request goes out on a fresh one."""
    svc = up_svc()
    o = svc.origin
    r = h2_get(svc.port, "/h1/first?idle_close_ms=50")
    assert r.status == 200, r
    wait_until(lambda: o.conn_end.get(1) == "server_close", timeout=HANG_GUARD, what="the origin closing conn 1")
    r = h2_get(svc.port, "/h1/second")
    assert r.status == 200 and bytes(r.data) == KNOWN_BODY, r
    assert [q["conn"] for q in o.requests] == [1, 2], o.requests
    assert o.tls_errors == []


def test_no_client_certificate_for_a_server_requiring_one(up_svc, echo_stubs, pki):
    pb, _, _ = echo_stubs
    svc = up_svc(client_cert=None)
    with pytest.raises(grpc.RpcError) as ei:
        svc.stub(echo_stubs).Unary(pb.EchoRequest(id="nocert"), timeout=HANG_GUARD)
    assert ei.value.code() == grpc.StatusCode.UNAVAILABLE, ei.value
    assert svc.backend.calls("nocert") == []


def test_meshd_serves_after_upstream_tls_failures(up_svc, echo_stubs, pki):
    """Refusals do not poison the pool: calls after a mismatch still fail
    the same way, quickly, and a fresh meshd with the right ID serves."""
    pb, _, _ = echo_stubs
    svc = up_svc(match=[pki.ca.spiffe_id("payments")])
    stub = svc.stub(echo_stubs)
    for i in range(3):
        with pytest.raises(grpc.RpcError) as ei:
            stub.Unary(pb.EchoRequest(id=f"again{i}"), timeout=HANG_GUARD)
        assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
    wait_until(lambda: svc.stat("meshd_cluster_tls_identity_mismatch_total") >= 3, timeout=HANG_GUARD,
               what="three mismatches counted")
    assert svc.m.alive()


# -- HTTP/1.1 over TLS ----------------------------------------------------------------------------------------


def test_http1_cluster_over_tls(up_svc, pki):
    svc = up_svc(h1_sni="origin.default.svc")
    for i in range(3):
        r = h2_get(svc.port, f"/h1/get/{i}")
        assert r.status == 200 and bytes(r.data) == KNOWN_BODY, r
    o = svc.origin
    assert [q["path"] for q in o.requests] == ["/h1/get/0", "/h1/get/1", "/h1/get/2"]
    assert o.tls_errors == [] and o.violations == []
    assert o.accepted == 1, f"{o.accepted} TLS connections for 3 sequential requests (not kept alive)"
    info = o.tls_info[1]
    # The origin prefers h2 when offered: http/1.1 shows that meshd offered only it.
    assert info["alpn"] == "http/1.1", info
    assert info["peer_uris"] == [pki.frontend.spiffe_id], info
    assert info["peer_serial"] == pki.frontend.serial, info
    assert o.sni_seen == ["origin.default.svc"], o.sni_seen


def test_http2_cluster_offers_h2(up_svc):
    """An HTTP2 cluster's ALPN offer is h2 (the origin here speaks only
    HTTP/1.1 after the handshake, so the request itself fails)."""
    svc = up_svc()
    r = h2_get(svc.port, "/h2o/x")
    assert r.status in (502, 503), r
    o = svc.origin
    wait_until(lambda: o.tls_info.get(1), timeout=HANG_GUARD, what="a TLS connection at the origin")
    assert o.tls_info[1]["alpn"] == "h2", o.tls_info


# -- health checks over TLS ------------------------------------------------------------------------


@pytest.mark.parametrize("right_identity", [True, False])
def test_http_health_check_over_tls(meshd, origin_factory, pki, ports, right_identity):
    # The check speaks TLS with the cluster's client certificate and checks
    # the server's SPIFFE ID like a request: the wrong one fails the check.
    o = origin_factory(pki.backend, pki.ca.bundle)
    match = [pki.backend.spiffe_id if right_identity else pki.ca.spiffe_id("elsewhere")]
    cl = cluster("h1", "{origin_port}", "HTTP1", upstream_tls(pki.ca.bundle, pki.frontend, match=match))
    cl = cl[:-1] + ' health_check { interval_ms: 200 timeout_ms: 200 unhealthy_threshold: 1 http { path: "/healthz" } }\n}'
    text = http_bundle([http_listener("in", "{listen_port}", "H2C")], [cl], route_cluster="h1")
    m = meshd(text, listen_port=ports.get(), origin_port=o.port, concurrency=1)
    if right_identity:
        wait_until(lambda: any(r["path"] == "/healthz" for r in o.requests), timeout=10,
                   what="a health check request at the TLS origin")
        hc = [r for r in o.requests if r["path"] == "/healthz"][0]
        assert ("user-agent", "meshd-health-check") in hc["headers"]
        assert o.tls_info[hc["conn"]]["peer_uris"] == [pki.frontend.spiffe_id]
        wait_until(lambda: counter(m, "meshd_cluster_health_check_success_total", cluster="h1") >= 2,
                   timeout=10, what="health checks passing")
        assert counter(m, "meshd_cluster_health_check_failure_total", cluster="h1") == 0
    else:
        ev = parse_log_line(wait_log(m, "health_check_unhealthy", timeout=10)[0])
        assert "TLS: server identity " + pki.backend.spiffe_id in ev.get("reason", ""), ev
        assert not any(r["path"] == "/healthz" for r in o.requests)
    healthy = m.stats().get("meshd_cluster_endpoint_healthy", cluster="h1", endpoint=f"127.0.0.1:{o.port}")
    assert healthy == (1 if right_identity else 0)
