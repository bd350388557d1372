# SPDX-License-Identifier: Apache-2.0
"""Header handling of HTTP/2 requests through meshd, checked on what the
upstream really received (and the client really got back):
  - x-request-id added when absent (unique), kept when present;
  - x-forwarded-for added with the client's address;
  - connection-specific (hop-by-hop) headers never cross, either way
    (RFC 9113 §8.2.2 makes them malformed in HTTP/2: meshd may reject such a
    request or response, or drop the header, but never forward it);
  - a route's request/response header additions (replacing) and removals;
  - prefix_rewrite; :authority kept; virtual host matching on :authority
    ignores case and port."""
import re

import pytest

from env.clients import H2Client, wait_until

HANG_GUARD = 20.0

pytestmark = pytest.mark.proxy_only


def _req(path, authority="127.0.0.1", method="GET"):
    return [(":method", method), (":scheme", "http"), (":path", path), (":authority", authority)]


def _send(port, path, headers=(), authority="127.0.0.1", validate=True):
    with H2Client(port, validate=validate) as c:
        return c.request(_req(path, authority) + list(headers), timeout=HANG_GUARD)


def _one(b, path):
    """The single upstream record for `path` (exact :path)."""
    recs = wait_until(lambda: [r for r in b.requests if r["path"] == path], what=f"{path} at the upstream")
    assert len(recs) == 1, recs
    return recs[0]


def _values(rec, name):
    return [v for k, v in rec["headers"] if k == name]


# -- x-request-id / x-forwarded-for -------------------------------------------------


UUID4_RE = re.compile(r"\A[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\Z")


def test_request_id_added_when_absent_and_unique(h2_service):
    """README: a UUID v4 when absent."""
    b, port = h2_service()
    ids = []
    for i in range(5):
        r = _send(port, f"/plain/rid{i}")
        assert r.status == 200, r
        vals = _values(_one(b, f"/plain/rid{i}"), "x-request-id")
        assert len(vals) == 1 and UUID4_RE.match(vals[0]), f"upstream x-request-id: {vals}"
        ids.append(vals[0])
    assert len(set(ids)) == 5, f"x-request-id not unique: {ids}"


def test_request_id_kept_when_present(h2_service):
    b, port = h2_service()
    rid = "client-chosen-id-0123456789abcdef"
    assert _send(port, "/plain/rid", [("x-request-id", rid)]).status == 200
    assert _values(_one(b, "/plain/rid"), "x-request-id") == [rid]


def test_forwarded_for_added(h2_service):
    b, port = h2_service()
    assert _send(port, "/plain/xff").status == 200
    vals = _values(_one(b, "/plain/xff"), "x-forwarded-for")
    assert len(vals) == 1, vals
    assert [p.strip() for p in vals[0].split(",")] == ["127.0.0.1"], vals


def test_forwarded_for_appended_to_clients(h2_service):
    b, port = h2_service()
    assert _send(port, "/plain/xff2", [("x-forwarded-for", "203.0.113.7")]).status == 200
    vals = _values(_one(b, "/plain/xff2"), "x-forwarded-for")
    hops = [p.strip() for v in vals for p in v.split(",")]
    assert hops == ["203.0.113.7", "127.0.0.1"], vals


# -- connection-specific headers ------------------------------------------------------

HOP_BY_HOP = [
    ("connection", "keep-alive"),
    ("keep-alive", "timeout=5"),
    ("proxy-connection", "keep-alive"),
    ("transfer-encoding", "chunked"),
    ("upgrade", "websocket"),
    ("te", "gzip"),
]


@pytest.mark.parametrize("name,value", HOP_BY_HOP, ids=[h[0] for h in HOP_BY_HOP])
def test_hop_by_hop_request_header_never_forwarded(h2_service, name, value):
    b, port = h2_service()
    r = _send(port, "/plain/hop", [(name, value), ("x-marker", "m")], validate=False)
    # Either rejected (RST_STREAM / 400) or forwarded without the header.
    assert r.reset is not None or r.status is not None, r
    # A clean request after it, so the upstream has seen everything before.
    assert _send(port, "/plain/after").status == 200
    _one(b, "/plain/after")
    leaked = [rec for rec in b.requests if name in {k for k, _ in rec["headers"]}]
    assert not leaked, f"{name} reached the upstream: {leaked}"
    if r.status is not None and r.status == 200:
        assert _values(_one(b, "/plain/hop"), "x-marker") == ["m"]


def test_te_trailers_is_allowed(h2_service):
    """te: trailers is the one TE value HTTP/2 allows (gRPC needs it)."""
    b, port = h2_service()
    assert _send(port, "/plain/te", [("te", "trailers")]).status == 200


@pytest.mark.parametrize("name,value", HOP_BY_HOP[:5], ids=[h[0] for h in HOP_BY_HOP[:5]])
def test_hop_by_hop_response_header_never_forwarded(h2_service, name, value):
    b, port = h2_service()
    with H2Client(port) as c:
        r = c.request(_req(f"/plain/resp?resp_header={name}:{value}"), timeout=HANG_GUARD)
    assert r.reset is not None or r.status is not None, r
    assert r.header(name) is None, f"{name} reached the client: {r!r}"


# -- route header rules ---------------------------------------------------------------


def test_route_request_headers_added_and_removed(h2_service):
    b, port = h2_service()
    r = _send(port, "/hdrs/a", [("x-added", "from-client"), ("x-secret", "s3cr3t"), ("x-keep", "yes")])
    assert r.status == 200, r
    rec = _one(b, "/hdrs/a")
    assert _values(rec, "x-added") == ["by-route"], rec["headers"]
    assert _values(rec, "x-secret") == [], rec["headers"]
    assert _values(rec, "x-keep") == ["yes"], rec["headers"]


def test_route_request_header_added_when_absent(h2_service):
    b, port = h2_service()
    assert _send(port, "/hdrs/b").status == 200
    assert _values(_one(b, "/hdrs/b"), "x-added") == ["by-route"]


def test_route_response_headers_added_and_removed(h2_service):
    b, port = h2_service()
    r = _send(port, "/hdrs/c?resp_header=x-upstream-secret:s&resp_header=x-resp-added:upstream&resp_header=x-other:o")
    assert r.status == 200, r
    assert r.header_all("x-resp-added") == ["by-route"], r.headers
    assert r.header("x-upstream-secret") is None, r.headers
    assert r.header("x-other") == "o"


def test_other_routes_untouched_by_header_rules(h2_service):
    b, port = h2_service()
    r = _send(port, "/plain/d?resp_header=x-upstream-secret:s", [("x-secret", "s3cr3t")])
    assert r.status == 200 and r.header("x-upstream-secret") == "s" and r.header("x-resp-added") is None
    rec = _one(b, "/plain/d?resp_header=x-upstream-secret:s")
    assert _values(rec, "x-secret") == ["s3cr3t"] and _values(rec, "x-added") == []


# -- path and authority ---------------------------------------------------------------


@pytest.mark.parametrize(
    "sent,upstream",
    [("/rewrite/a/b?q=1&r=%2F", "/v2/a/b?q=1&r=%2F"), ("/rewrite/", "/v2/"), ("/rewrite/x", "/v2/x")],
)
def test_prefix_rewrite(h2_service, sent, upstream):
    b, port = h2_service()
    r = _send(port, sent)
    assert r.status == 200, r
    rec = wait_until(lambda: b.requests, what="the request at the upstream")[0]
    assert rec["path"] == upstream


def test_authority_kept(h2_service):
    b, port = h2_service()
    assert _send(port, "/plain/auth", authority=f"localhost:{port}").status == 200
    assert _one(b, "/plain/auth")["authority"] == f"localhost:{port}"


@pytest.mark.parametrize("authority", ["other.example", "OTHER.Example", "other.example:8443"])
def test_virtual_host_match_ignores_case_and_port(h2_service, authority):
    b, port = h2_service()
    assert _send(port, "/vh", authority=authority).status == 200
    assert _values(_one(b, "/vh"), "x-vhost") == ["other"]
