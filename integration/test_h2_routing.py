# SPDX-License-Identifier: Apache-2.0
"""Route selection (route.proto) seen from the upstream: the virtual host by
:authority (port removed, case-insensitive; exact, then the longest
"*.suffix", then the longest "prefix.*", then "*"), then the first route
whose path / prefix / gRPC service+method and header matchers hold."""
import pytest

from env.clients import H2Client, grpc_request_headers, wait_until

HANG_GUARD = 20.0

pytestmark = pytest.mark.proxy_only


def _route(h2_backend, through):
    b = h2_backend()
    return b, through("h2_routing", b.port, upstream_port=b.port)


def _tag(b, port, headers, body=b""):
    """Send one request; return the upstream's (x-vh, x-rt) for it."""
    n = len(b.requests)
    with H2Client(port) as c:
        r = c.request(headers, body=body, timeout=HANG_GUARD)
    assert r.status == 200, r
    rec = wait_until(lambda: b.requests[n:], what="the request at the upstream")[0]
    h = dict(rec["headers"])
    return h.get("x-vh"), h.get("x-rt")


def _get(path, authority="127.0.0.1", extra=()):
    return [(":method", "GET"), (":scheme", "http"), (":path", path), (":authority", authority)] + list(extra)


@pytest.mark.parametrize(
    "authority,vh",
    [
        ("api.example.com", "exact"),
        ("API.Example.COM:8080", "exact"),
        ("www.example.com", "suffix"),
        ("a.b.example.com", "suffix"),
        ("x.api2.example.com", "longsuffix"),
        ("api.example.org", "prefix"),
        ("api.other", "prefix"),
        ("example.com", None),
        ("unknown.test", None),
    ],
)
def test_virtual_host_choice(h2_backend, through, authority, vh):
    b, port = _route(h2_backend, through)
    got_vh, got_rt = _tag(b, port, _get("/x", authority))
    assert got_vh == vh, f":authority {authority}: virtual host {got_vh!r}, expected {vh!r}"
    if vh is None:
        assert got_rt == "catch-all"


@pytest.mark.parametrize(
    "path,rt",
    [("/exact", "path-exact"), ("/exact?q=1", "path-exact"), ("/exact/more", "catch-all"), ("/exactly", "catch-all")],
)
def test_path_exact_vs_prefix(h2_backend, through, path, rt):
    b, port = _route(h2_backend, through)
    assert _tag(b, port, _get(path))[1] == rt


@pytest.mark.parametrize(
    "headers,rt",
    [
        ([("x-flavor", "blue")], "hdr-blue"),
        ([("x-flavor", "red")], "hdr-present"),
        ([("x-flavor", "")], "hdr-present"),
        ([], "hdr-absent"),
        ([("x-flavor", "red"), ("x-flavor", "blue")], "hdr-blue"),
        ([("x-flavour", "blue")], "hdr-absent"),
    ],
    ids=["exact", "other-value", "empty-value", "absent", "any-of-values", "other-name"],
)
def test_header_matchers(h2_backend, through, headers, rt):
    b, port = _route(h2_backend, through)
    assert _tag(b, port, _get("/hdr/x", extra=headers))[1] == rt


@pytest.mark.parametrize(
    "path,content_type,rt",
    [
        ("/test.v1.Echo/Unary", "application/grpc", "grpc-unary"),
        ("/test.v1.Echo/Unary", "application/grpc+proto", "grpc-unary"),
        ("/test.v1.Echo/ServerStream", "application/grpc", "grpc-any"),
        ("/test.v1.EchoX/Unary", "application/grpc", "catch-all"),
        ("/test.v1.Echo/Unary", "application/json", "catch-all"),
    ],
)
def test_grpc_service_and_method_match(h2_backend, through, path, content_type, rt):
    b, port = _route(h2_backend, through)
    headers = [h for h in grpc_request_headers(path) if h[0] != "content-type"] + [("content-type", content_type)]
    assert _tag(b, port, headers, body=b"\0\0\0\0\0")[1] == rt
