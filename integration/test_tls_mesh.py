# SPDX-License-Identifier: Apache-2.0
"""Sidecar to sidecar over mTLS, as in a pod-to-pod call:

    plaintext grpc client -> meshd A (outbound: h2c listener; cluster with
    tls, client certificate of identity "frontend", match_spiffe_ids = B's
    ID) -> meshd B (inbound: AUTO listener, tls REQUIRE, identity "backend")
    -> plaintext gRPC app

  - the app sees x-forwarded-client-cert: By=<B's ID>;URI=<frontend's ID>
    for every call shape, and never a value the client made up;
  - B's access log carries peer_id=<frontend's ID>;
  - RBAC on B's listener: frontend may call Echo/Unary only; another
    identity of the same mesh (a second outbound sidecar, "intruder") may
    not; decisions counted per policy;
  - B refuses a plaintext client (it is not in the mesh).
No timing is asserted."""
import grpc
import pytest

from env.clients import H2Client, grpc_channel, grpc_outcome, wait_until
from env.tls import (  # noqa: F401 - pki is a fixture
    HANG_GUARD,
    cluster,
    counter,
    downstream_tls,
    http_bundle,
    http_listener,
    log_events,
    metadata,
    parse_log_line,
    pki,
    upstream_tls,
    xfcc,
)

XFCC = "x-forwarded-client-cert"
DENIED = "RBAC: access denied"
RBAC_FRONTEND_UNARY = """rbac {{ action: ALLOW
      policies {{ name: "frontend-unary"
        principals {{ spiffe_id: "{id}" }}
        permissions {{ grpc {{ service: "test.v1.Echo" method: "Unary" }} }} }} }}"""


class Mesh:
    def __init__(self, a, b, app, pki, stubs):
        self.a = a
        self.b = b
        self.app = app
        self.pki = pki
        self.pb, self.pbg, _ = stubs
        self._channels = []

    def stub(self, m=None):
        ch = grpc_channel((m or self.a).values["listen_port"])
        self._channels.append(ch)
        return self.pbg.EchoStub(ch)

    def close(self):
        for ch in self._channels:
            ch.close()


@pytest.fixture
def mesh(meshd, grpc_backend, echo_stubs, pki, ports):
    """Factory: mesh(rbac="") -> Mesh; outbound(identity) starts another A."""
    made = []

    def outbound(b, identity):
        tls = upstream_tls(pki.ca.bundle, identity, match=[pki.backend.spiffe_id])
        text = http_bundle([http_listener("outbound", "{listen_port}", "H2C")],
                           [cluster("to_b", "{b_port}", "HTTP2", tls)], route_cluster="to_b")
        return meshd(text, listen_port=ports.get(), b_port=b.values["listen_port"])

    def make(rbac=""):
        app = grpc_backend("app")
        tls = downstream_tls(pki.backend, pki.ca.bundle, "REQUIRE")
        text = http_bundle([http_listener("inbound", "{listen_port}", "AUTO", tls, hcm_extra=rbac)],
                           [cluster("app", "{app_port}")])
        b = meshd(text, listen_port=ports.get(), app_port=app.port)
        a = outbound(b, pki.frontend)
        ms = Mesh(a, b, app, pki, echo_stubs)
        ms.outbound = lambda identity: outbound(b, identity)
        made.append(ms)
        return ms

    yield make
    for ms in made:
        ms.close()


def test_identity_crosses_the_mesh(mesh, pki):
    ms = mesh()
    pb = ms.pb
    s = ms.stub()
    spoof = ((XFCC, f"By={pki.backend.spiffe_id};URI={pki.ca.spiffe_id('admin', ns='kube-system')}"),)
    assert s.Unary(pb.EchoRequest(id="u", payload=b"x" * 512), timeout=HANG_GUARD, metadata=spoof).id == "u"
    assert [m.seq for m in s.ServerStream(pb.EchoRequest(id="s", repeat=3), timeout=HANG_GUARD)] == [0, 1, 2]
    assert s.ClientStream(iter([pb.EchoRequest(id="c")] * 3), timeout=HANG_GUARD).received_messages == 3
    assert len(list(s.BidiStream(iter([pb.EchoRequest(id="b")] * 2), timeout=HANG_GUARD, metadata=spoof))) == 2
    want = [xfcc(pki.backend.spiffe_id, pki.frontend.spiffe_id)]
    for cid in "uscb":
        call = ms.app.wait_call(cid, lambda c: c["ended"])
        assert metadata(call, XFCC) == want, (cid, call["metadata"])
    lines = wait_until(lambda: [l for l in log_events(ms.b, "http_access", listener="inbound")
                                if "Unary" in l], timeout=HANG_GUARD, what="B's access log line")
    assert parse_log_line(lines[0]).get("peer_id") == pki.frontend.spiffe_id, lines[0]
    assert counter(ms.b, "meshd_listener_tls_handshake_total", listener="inbound") >= 1
    assert counter(ms.b, "meshd_listener_tls_handshake_error_total", listener="inbound") == 0
    assert counter(ms.a, "meshd_cluster_tls_handshake_error_total", cluster="to_b") == 0
    assert counter(ms.a, "meshd_cluster_tls_identity_mismatch_total", cluster="to_b") == 0


def test_inbound_refuses_plaintext(mesh):
    ms = mesh()
    try:
        with H2Client(ms.b.values["listen_port"], timeout=HANG_GUARD) as c:
            r = c.request([(":method", "POST"), (":scheme", "http"), (":path", "/test.v1.Echo/Unary"),
                           (":authority", "localhost"), ("content-type", "application/grpc"), ("te", "trailers")],
                          body=b"\0\0\0\0\0")
        assert r.headers is None, r
    except (ConnectionResetError, BrokenPipeError):
        pass
    wait_until(lambda: counter(ms.b, "meshd_listener_tls_plaintext_refused_total", listener="inbound") == 1,
               timeout=HANG_GUARD, what="B counting the plaintext refusal")
    assert ms.app.calls() == []


def test_rbac_allows_frontend_unary_only(mesh, pki):
    ms = mesh(rbac=RBAC_FRONTEND_UNARY.format(id=pki.frontend.spiffe_id))
    pb = ms.pb
    s = ms.stub()
    assert grpc_outcome(lambda: s.Unary(pb.EchoRequest(id="ok"), timeout=HANG_GUARD)) == (grpc.StatusCode.OK, None)
    assert grpc_outcome(lambda: list(s.ServerStream(pb.EchoRequest(id="ss", repeat=2), timeout=HANG_GUARD))) == (
        grpc.StatusCode.PERMISSION_DENIED, DENIED)
    assert grpc_outcome(lambda: s.Unary(pb.EchoRequest(id="ok2"), timeout=HANG_GUARD)) == (grpc.StatusCode.OK, None)
    assert [c["id"] for c in ms.app.calls() if c["id"]] == ["ok", "ok2"]
    st = ms.b.stats()
    assert st.get("meshd_rbac_allowed_total", scope="listener", owner="inbound", policy="frontend-unary") == 2
    assert st.get("meshd_rbac_denied_total", scope="listener", owner="inbound", policy="") == 1


def test_rbac_denies_another_identity(mesh, pki):
    ms = mesh(rbac=RBAC_FRONTEND_UNARY.format(id=pki.frontend.spiffe_id))
    intruder = pki.ca.workload("intruder")
    a2 = ms.outbound(intruder)
    s = ms.stub(a2)
    assert grpc_outcome(lambda: s.Unary(ms.pb.EchoRequest(id="intruder"), timeout=HANG_GUARD)) == (
        grpc.StatusCode.PERMISSION_DENIED, DENIED)
    assert ms.app.calls("intruder") == []
    # frontend, through the first sidecar, still may.
    assert ms.stub().Unary(ms.pb.EchoRequest(id="friend"), timeout=HANG_GUARD).id == "friend"
    lines = wait_until(lambda: log_events(ms.b, "rbac_denied"), timeout=HANG_GUARD, what="B's rbac_denied line")
    assert any(intruder.spiffe_id in l for l in lines), lines
