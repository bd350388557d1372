# SPDX-License-Identifier: Apache-2.0
"""Plain HTTP/2 answers meshd makes itself: no route (path or host) -> 404,
upstream down -> 503, route timeout -> 504 with the upstream stream reset,
headers too large -> 431;
an upstream RST_STREAM reaches the client as a reset. Each ends only its own
stream."""
import time

import pytest

from env.clients import H2Client, wait_until
from env.curl import curl_h2

HANG_GUARD = 20.0

pytestmark = pytest.mark.proxy_only


def _req(path, authority="127.0.0.1"):
    return [(":method", "GET"), (":scheme", "http"), (":path", path), (":authority", authority)]


def test_no_route_for_path_is_404(h2_service, workdir):
    b, port = h2_service()
    r = curl_h2(port, "/nothing/here", workdir)
    assert r.rc == 0 and r.status == 404, r
    assert r.header("x-backend") is None
    assert b.requests == [], "a request without a route reached the upstream"


def test_no_virtual_host_is_404(h2_service, workdir):
    b, port = h2_service()
    r = curl_h2(port, "/plain/x", workdir, headers=["Host: unknown.example"])
    assert r.rc == 0 and r.status == 404, r
    assert b.requests == []


def test_upstream_down_is_503(h2_service, workdir):
    b, port = h2_service()
    r = curl_h2(port, "/down/x", workdir, max_time=HANG_GUARD)
    assert r.rc == 0 and r.status == 503, r


def test_upstream_reset_before_response_reaches_client(h2_service):
    """README: RST_STREAM travels with its error code (no 503 is made up)."""
    b, port = h2_service()
    with H2Client(port) as c:
        r = c.request(_req("/plain/r?reset=1&reset_code=8"), timeout=HANG_GUARD)
        assert r.events == ["reset"] and r.reset == 8, r
        # The connection carries on.
        assert c.request(_req("/plain/ok"), timeout=HANG_GUARD).status == 200


def test_upstream_reset_mid_response_resets_client_stream(h2_service):
    """Headers and 16 KiB of the body went out, 300 ms later the upstream
    resets: the client gets what was sent, then a reset, not a clean end of a
    truncated body."""
    b, port = h2_service()
    with H2Client(port) as c:
        r = c.request(_req("/plain/r?reset=after-headers&reset_delay_ms=300&size=100000"), timeout=HANG_GUARD)
    assert r.status == 200 and len(r.data) == 16384, r
    assert r.reset is not None and not r.ended, f"the truncated response ended cleanly: {r!r}"


def test_upstream_reset_right_after_response_start(h2_service):
    """Headers, part of the body and the reset reach meshd in one burst: the
    client's stream must not end cleanly."""
    b, port = h2_service()
    with H2Client(port) as c:
        r = c.request(_req("/plain/r?reset=after-headers&size=100000"), timeout=HANG_GUARD)
    assert r.reset is not None and not r.ended, f"the truncated response ended cleanly: {r!r}"


def test_route_timeout_is_504_and_resets_upstream(h2_service, workdir):
    b, port = h2_service(route_timeout_ms=1000)
    t0 = time.monotonic()
    r = curl_h2(port, "/slow/x?delay_ms=60000", workdir, max_time=HANG_GUARD)
    assert time.monotonic() - t0 < HANG_GUARD
    assert r.rc == 0 and r.status == 504, r
    rec = wait_until(lambda: b.requests_for("/slow/"), what="the request at the upstream")[0]
    wait_until(lambda: rec["reset_by_peer"] is not None, timeout=HANG_GUARD, what="RST_STREAM on the upstream stream")


def test_route_timeout_not_hit_by_a_fast_answer(h2_service, workdir):
    b, port = h2_service(route_timeout_ms=10000)
    r = curl_h2(port, "/slow/x?delay_ms=200", workdir, max_time=HANG_GUARD)
    assert r.rc == 0 and r.status == 200 and r.header("x-backend") == "h2", r


def test_local_replies_end_only_their_stream(h2_service):
    b, port = h2_service(route_timeout_ms=1000)
    with H2Client(port) as c:
        got = [
            c.request(_req("/nothing"), timeout=HANG_GUARD).status,
            c.request(_req("/down/x"), timeout=HANG_GUARD).status,
            c.request(_req("/slow/x?delay_ms=60000"), timeout=HANG_GUARD).status,
            c.request(_req("/plain/x"), timeout=HANG_GUARD).status,
        ]
        assert c.closed is None, f"GOAWAY {c.closed}"
    assert got == [404, 503, 504, 200]


def test_header_list_too_large_is_431(h2_service):
    """README: headers over max_header_list_size (default 64 KiB) -> 431."""
    b, port = h2_service()
    with H2Client(port) as c:
        r = c.request(_req("/plain/big-headers") + [("x-big", "b" * (70 * 1024))], timeout=HANG_GUARD)
        assert r.status == 431, r
        assert c.request(_req("/plain/ok"), timeout=HANG_GUARD).status == 200
    assert [q["path"] for q in b.requests] == ["/plain/ok"]
