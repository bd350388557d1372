# SPDX-License-Identifier: Apache-2.0
"""RBAC (rbac.proto) over plaintext h2c and HTTP/1.1: the listener's ALLOW
rules decide before routing, the route's DENY rule after it; refusals are a
trailers-only PERMISSION_DENIED for gRPC and 403 for HTTP, both saying
"RBAC: access denied", logged (event=rbac_denied) and counted per policy in
meshd_rbac_{allowed,denied}_total. A plaintext client has no identity: it is
`unauthenticated`, never `authenticated` nor any SPIFFE ID."""
import grpc
import pytest

from env.clients import H2Client, grpc_frame, grpc_outcome, grpc_request_headers, h2_get, wait_until
from env.h1 import H1Conn

CALL_TIMEOUT = 20
DENIED = "RBAC: access denied"

pytestmark = pytest.mark.proxy_only


@pytest.fixture
def rbac(grpc_backend, h2_backend, meshd, echo_stubs):
    """(Meshd, Echo stub factory, pb, H2Backend) for bundles/rbac."""
    g = grpc_backend()
    h = h2_backend()
    m = meshd("rbac", grpc_port=g.port, h2_port=h.port)
    pb, pbg, _ = echo_stubs
    channels = []

    def stub():
        from env.clients import grpc_channel

        ch = grpc_channel(m.listen_port)
        channels.append(ch)
        return pbg.EchoStub(ch)

    yield m, stub, pb, h
    for ch in channels:
        ch.close()


def _counter(m, name, scope, owner, policy):
    return m.stats().get(name, scope=scope, owner=owner, policy=policy)


def test_grpc_method_level(rbac):
    m, stub, pb, _ = rbac
    s = stub()
    r = s.Unary(pb.EchoRequest(id="ok", payload=b"x"), timeout=CALL_TIMEOUT)
    assert r.id == "ok"
    # ServerStream needs `authenticated`; a plaintext client is not
    call = s.ServerStream(pb.EchoRequest(id="ss", repeat=2), timeout=CALL_TIMEOUT)
    assert grpc_outcome(lambda: list(call)) == (grpc.StatusCode.PERMISSION_DENIED, DENIED)
    assert grpc_outcome(lambda: s.ClientStream(iter([pb.EchoRequest(id="cs")]), timeout=CALL_TIMEOUT)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        DENIED,
    )
    # a denial ends only that call: the channel goes on
    assert grpc_outcome(lambda: s.Unary(pb.EchoRequest(id="ok2"), timeout=CALL_TIMEOUT)) == (grpc.StatusCode.OK, None)


def test_unrouted_service_refused_before_routing(rbac):
    """The listener decides before routing: PERMISSION_DENIED, not UNIMPLEMENTED."""
    m, _, _, _ = rbac
    with H2Client(m.listen_port) as c:
        r = c.request(grpc_request_headers("/test.v1.Unrouted/Ping"), body=grpc_frame(b""))
    assert r.grpc_field("grpc-status") == "7", r
    assert _counter(m, "meshd_rbac_denied_total", "listener", "rbac_in", "") == 1


def test_denial_is_trailers_only_on_the_wire(rbac):
    m, _, pb, _ = rbac
    req = pb.EchoRequest(id="raw", repeat=2)
    with H2Client(m.listen_port) as c:
        r = c.request(grpc_request_headers("/test.v1.Echo/ServerStream"), body=grpc_frame(req.SerializeToString()))
    assert r.ended and r.reset is None, r
    assert r.trailers_only, r
    assert r.header(":status") == "200"
    assert r.header("content-type") == "application/grpc"
    assert r.grpc_field("grpc-status") == "7"
    assert r.grpc_field("grpc-message") == DENIED


def test_header_rule_h2(rbac):
    m, _, _, h = rbac
    r = h2_get(m.listen_port, "/h/x", headers=[("x-role", "ops")])
    assert r.status == 200, r
    for hdrs in ([], [("x-role", "dev")], [("x-role", "OPS")]):
        r = h2_get(m.listen_port, "/h/x", headers=hdrs)
        assert r.status == 403, (hdrs, r)
        assert bytes(r.data) == (DENIED + "\n").encode()
    # the right header on another path: no policy covers it
    assert h2_get(m.listen_port, "/other", headers=[("x-role", "ops")]).status == 403
    assert len(h.requests_for("/h/")) == 1 and not h.requests_for("/other")


def test_http1_client_gets_403(rbac):
    m, _, _, h = rbac
    with H1Conn(m.listen_port) as c:
        c.send(b"GET /h/y HTTP/1.1\r\nHost: a\r\n\r\n")
        r = c.read_response()
        assert r.status == 403, r
        assert r.body == (DENIED + "\n").encode()
        # keep-alive: the connection serves the next request
        c.send(b"GET /h/y HTTP/1.1\r\nHost: a\r\nX-Role: ops\r\n\r\n")
        r = c.read_response()
        assert r.status == 200, r
    assert len(h.requests_for("/h/y")) == 1


def test_route_level_deny_after_listener_allow(rbac):
    m, stub, pb, _ = rbac
    s = stub()
    got = grpc_outcome(lambda: s.Unary(pb.EchoRequest(id="dbg"), metadata=(("x-debug", "1"),), timeout=CALL_TIMEOUT))
    assert got == (grpc.StatusCode.PERMISSION_DENIED, DENIED)
    s.Unary(pb.EchoRequest(id="fine"), timeout=CALL_TIMEOUT)
    st = m.stats()
    # the listener allowed both; the route refused one and let the other pass
    assert st.get("meshd_rbac_allowed_total", scope="listener", owner="rbac_in", policy="echo-unary") == 2
    assert st.get("meshd_rbac_denied_total", scope="route", owner="echo", policy="no-debug") == 1
    assert st.get("meshd_rbac_allowed_total", scope="route", owner="echo", policy="") == 1
    log = wait_until(lambda: [l for l in m.log().splitlines() if "event=rbac_denied" in l], what="rbac_denied log")
    assert any(
        "listener=rbac_in" in l and "route=echo" in l and "scope=route" in l and "policy=no-debug" in l and "peer=-" in l
        for l in log
    ), log
    access = wait_until(
        lambda: [l for l in m.log().splitlines() if "event=http_access" in l and "rbac_denied=route" in l],
        what="access log line of the denied call",
    )
    assert "grpc_status=7" in access[0], access


def test_plaintext_principals(rbac):
    """unauthenticated matches a plaintext client; authenticated, spiffe_id,
    spiffe_id_prefix and trust_domain do not (policy spiffe-any allows every
    request to such a peer, yet nothing is allowed through it)."""
    m, stub, pb, _ = rbac
    s = stub()
    s.Unary(pb.EchoRequest(id="u"), timeout=CALL_TIMEOUT)
    call = s.ServerStream(pb.EchoRequest(id="s", repeat=1), timeout=CALL_TIMEOUT)
    assert grpc_outcome(lambda: list(call))[0] == grpc.StatusCode.PERMISSION_DENIED
    bidi = s.BidiStream(iter([pb.EchoRequest(id="b")]), timeout=CALL_TIMEOUT)
    assert grpc_outcome(lambda: list(bidi))[0] == grpc.StatusCode.PERMISSION_DENIED
    st = m.stats()
    for policy in ("authn-stream", "spiffe-any"):
        for name in ("meshd_rbac_allowed_total", "meshd_rbac_denied_total"):
            assert st.get(name, scope="listener", owner="rbac_in", policy=policy) == 0, (name, policy)
    assert st.get("meshd_rbac_allowed_total", scope="listener", owner="rbac_in", policy="echo-unary") == 1
    assert st.get("meshd_rbac_denied_total", scope="listener", owner="rbac_in", policy="") == 2


def test_metrics_per_policy(rbac):
    m, stub, pb, _ = rbac
    s = stub()
    for i in range(3):
        s.Unary(pb.EchoRequest(id=f"u{i}"), timeout=CALL_TIMEOUT)
    for _ in range(2):
        assert h2_get(m.listen_port, "/h/z", headers=[("x-role", "ops")]).status == 200
    assert h2_get(m.listen_port, "/h/z").status == 403
    st = m.stats()  # strict parse: well-formed, no repeated series
    assert st.types.get("meshd_rbac_allowed_total") == "counter"
    assert st.types.get("meshd_rbac_denied_total") == "counter"
    want_allowed = {
        ("listener", "rbac_in", "echo-unary"): 3,
        ("listener", "rbac_in", "ops-header"): 2,
        ("listener", "rbac_in", "authn-stream"): 0,
        ("listener", "rbac_in", "spiffe-any"): 0,
        ("listener", "rbac_in", ""): 0,
        ("route", "echo", "no-debug"): 0,
        ("route", "echo", ""): 3,
    }
    got = {
        (d["scope"], d["owner"], d["policy"]): v
        for d, v in ((dict(k), v) for k, v in st.series("meshd_rbac_allowed_total").items())
    }
    assert got == want_allowed
    denied = {
        (d["scope"], d["owner"], d["policy"]): v
        for d, v in ((dict(k), v) for k, v in st.series("meshd_rbac_denied_total").items())
    }
    assert denied[("listener", "rbac_in", "")] == 1
    assert sum(denied.values()) == 1
