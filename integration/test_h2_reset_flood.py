# SPDX-License-Identifier: Apache-2.0
"""Rapid reset across connections (README "HTTP/2 and gRPC behaviour",
Protections). nghttp2 closes one connection after about 1,000 reset streams;
an attacker that reconnects after each GOAWAY used to get every stream of
every connection forwarded. Streams a client abandons now cost from its
address's budget (2,000, then 100 a second), and past it its new requests
are refused with REFUSED_STREAM before routing: nothing more reaches the
upstream. The access-log lines of such requests are bounded too (1,000,
then 100 a second per worker), the rest counted and reported.

One worker (the budgets are per worker); the bounds are computed from the
time the attack took, so a slow run widens them instead of failing."""
import time

import pytest

from env.clients import RawH2, h2_get, wait_until

pytestmark = pytest.mark.proxy_only

HANG_GUARD = 30.0
LISTENER = "h2_lim"
CANCEL = 8
ADDR_BURST, ADDR_PER_S = 2000, 100
LOG_BURST, LOG_PER_S = 1000, 100
ROUNDS, PAIRS = 8, 2000


def _req(path):
    return [(":method", "GET"), (":scheme", "http"), (":path", path), (":authority", "localhost")]


def _attack(port, rounds=ROUNDS, pairs=PAIRS):
    """Connection after connection, each a burst of HEADERS + RST_STREAM
    pairs, read until meshd ends it. Returns the seconds it took."""
    t0 = time.monotonic()
    for r in range(rounds):
        with RawH2(port, timeout=HANG_GUARD) as c:
            c.send_nowait(b"".join(
                c.headers(sid, _req(f"/rr?r={r}&sid={sid}"), end_stream=True) + c.rst_stream(sid, CANCEL)
                for sid in range(1, 2 * pairs, 2)))
            c.read_until(lambda f: f.type == RawH2.GOAWAY, timeout=HANG_GUARD)
            c.read_to_end(timeout=HANG_GUARD)
    return time.monotonic() - t0


def test_reconnecting_rapid_reset_is_bounded(h2_limits):
    b, m = h2_limits()
    assert h2_get(m.listen_port, "/before", timeout=HANG_GUARD).status == 200
    took = _attack(m.listen_port)
    forwarded = m.stat("meshd_cluster_upstream_rq_total", cluster="up") - 1
    refused = m.stat("meshd_listener_http_rq_reset_flood_refused_total", listener=LISTENER) or 0
    bound = ADDR_BURST + ADDR_PER_S * took + 100
    print(f"{ROUNDS} connections in {took:.2f} s: {forwarded} requests forwarded, {refused} refused")
    assert forwarded <= bound, (
        f"{forwarded} abandoned requests reached the upstream in {took:.2f} s (bound {bound:.0f})\n"
        f"{m.log_tail(5)}")
    assert refused > 0
    assert "event=reset_flood" in m.log()
    # The refusals end once the budget refills: a well-behaved request later
    # goes through.
    wait_until(lambda: _ok(m, "/after"), timeout=HANG_GUARD, interval=0.1,
               what="the client's budget to refill")


def _ok(m, path):
    try:
        return h2_get(m.listen_port, path, timeout=HANG_GUARD).status == 200
    except Exception as e:  # refused while the budget is dry
        print(f"{path}: {e!r}")
        return False


def test_access_log_is_bounded_under_a_flood(h2_limits):
    b, m = h2_limits()
    took = _attack(m.listen_port, rounds=4)
    wait_until(lambda: (m.stat("meshd_listener_http_rq_active", listener=LISTENER) or 0) == 0,
               timeout=HANG_GUARD, what="every stream to be over")
    lines = m.log().count("event=http_access")
    dropped = m.stat("meshd_listener_access_log_dropped_total", listener=LISTENER) or 0
    bound = LOG_BURST + LOG_PER_S * took + 50
    print(f"attack of {took:.2f} s: {lines} access-log lines written, {dropped} left out")
    assert lines <= bound, f"{lines} access-log lines in {took:.2f} s (bound {bound:.0f})"
    assert dropped > 0
    # A successful request is always logged, after a line that reports how
    # many were left out (refused tries while the budget refills included).
    wait_until(lambda: _ok(m, "/logged"), timeout=HANG_GUARD, interval=0.1,
               what="the client's budget to refill")
    wait_until(lambda: 'path="/logged"' in m.log(), timeout=HANG_GUARD,
               what="the successful request's access-log line")
    dropped = m.stat("meshd_listener_access_log_dropped_total", listener=LISTENER)
    log = m.log()
    reports = [int(x.split("count=")[1].split()[0]) for x in log.splitlines()
               if "event=log_lines_dropped" in x and "of=http_access" in x]
    assert reports and sum(reports) == dropped, (reports, dropped)
