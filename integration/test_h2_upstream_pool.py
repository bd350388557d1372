# SPDX-License-Identifier: Apache-2.0
"""The upstream HTTP/2 pool (README "HTTP/2 and gRPC behaviour", Upstreams):
streams per connection capped by the peer's MAX_CONCURRENT_STREAMS and more
connections opened up to max_connections_per_endpoint; an upstream GOAWAY
(streams above its last id retried on a fresh connection); keepalive PINGs
closing a dead connection; idle connections closed; a downstream connection
that goes away resets every upstream stream it had.

meshd runs one worker (h2_limits' default), so one pool sees every request.
The upstream (env.h2_backend) holds requests with wait=NAME until the test
releases them: no timing is involved in which streams are open at once."""
import pytest

from env.clients import H2MultiClient, h2_get, reset_close, wait_until

pytestmark = pytest.mark.proxy_only

HANG_GUARD = 20.0
CLUSTER = "up"


def _req(path, authority="localhost"):
    return [(":method", "GET"), (":scheme", "http"), (":path", path), (":authority", authority)]


def _stat(m, name):
    return m.stat(name, cluster=CLUSTER) or 0


def _ok(r):
    return r.status == 200 and bytes(r.data) == b"hello from the h2 backend\n"


# -- the peer's MAX_CONCURRENT_STREAMS ------------------------------------------------


@pytest.mark.parametrize("max_connections", [4, 2])
def test_peer_max_concurrent_streams_spreads_over_connections(h2_limits, max_connections):
    """The upstream announces MAX_CONCURRENT_STREAMS=2 and holds every
    request; 6 requests at once through meshd. All succeed; the upstream
    sees more than one connection, at most max_connections_per_endpoint,
    and never more than 2 streams open on one. A stream the upstream had to
    refuse because meshd sent it before it could know the limit (REFUSED_STREAM
    before our SETTINGS were acknowledged, RFC 9113 §5.1.2) is retried; one
    sent beyond the known limit (PROTOCOL_ERROR) is a meshd bug."""
    b, m = h2_limits(backend_kw={"max_concurrent_streams": 2}, max_connections=max_connections)
    n = 6
    with H2MultiClient(m.listen_port, timeout=HANG_GUARD) as c:
        sids = [c.start(_req(f"/p?wait=go&i={i}"), flush=False) for i in range(n)]
        c.flush()  # one write: meshd gets all 6 at once
        # Everything the pool can hold at once is open at the upstream.
        in_flight = min(n, 2 * max_connections)
        c.wait(lambda: b.open_streams() >= in_flight, HANG_GUARD,
               what=f"{in_flight} streams open at the upstream")
        b.release("go")
        c.wait(lambda: all(c.done(s) for s in sids), HANG_GUARD, what="every response")
        bad = {s: c.responses[s] for s in sids if not _ok(c.responses[s])}
        assert not bad, bad
    conns = b.conn_stats()
    print({cid: {k: cs[k] for k in ("streams", "max_open", "refused_early", "violations")} for cid, cs in conns.items()})
    print("refused retries:", _stat(m, "meshd_cluster_upstream_rq_refused_retry_total"))
    assert 2 <= len(conns) <= max_connections, f"{len(conns)} connections (max_connections_per_endpoint {max_connections})"
    assert all(cs["max_open"] <= 2 for cs in conns.values()), conns
    assert sum(cs["violations"] for cs in conns.values()) == 0, f"meshd exceeded a known stream limit: {conns}"
    answered = [s for s in b.streams if s["state"] == "answered"]
    assert len(answered) == n, b.streams




def test_burst_beyond_peer_limit_waits_instead_of_failing(h2_limits):
    """12 requests at once (one write) to an upstream that allows 2 streams
    per connection and holds every request; the pool may open 8 connections
    (the default), so 16 stream slots: all 12 fit in flight at once, and
    every request must succeed."""
    b, m = h2_limits(backend_kw={"max_concurrent_streams": 2})
    n = 12
    with H2MultiClient(m.listen_port, timeout=HANG_GUARD) as c:
        sids = [c.start(_req(f"/burst?wait=go&i={i}"), flush=False) for i in range(n)]
        c.flush()
        # Until each request is either held at the upstream or answered by meshd.
        c.wait(lambda: b.open_streams() + sum(c.done(s) for s in sids) >= n,
               HANG_GUARD, what="every request at the upstream or answered")
        b.release("go")
        c.wait(lambda: all(c.done(s) for s in sids), HANG_GUARD, what="every response")
        print("refused retries:", _stat(m, "meshd_cluster_upstream_rq_refused_retry_total"))
        print({cid: {k: cs[k] for k in ("streams", "max_open", "refused_early", "violations")} for cid, cs in b.conn_stats().items()})
        bad = {s: (c.responses[s].status, bytes(c.responses[s].data)) for s in sids if not _ok(c.responses[s])}
        assert not bad, f"{len(bad)} of {n} requests failed: {bad}"
    assert sum(cs["violations"] for cs in b.conn_stats().values()) == 0, b.conn_stats()


# -- GOAWAY from the upstream ---------------------------------------------------------


def test_upstream_goaway_retries_refused_streams_on_new_connection(h2_limits):
    """Three requests in flight on one upstream connection (streams 1, 3, 5);
    the upstream sends GOAWAY(last_stream_id=3, NO_ERROR). RFC 9113 §6.8:
    streams 1 and 3 go on and finish normally; stream 5 was never processed
    (§8.7), so meshd sends it again on a fresh connection (it had no body),
    and counts meshd_cluster_upstream_rq_refused_retry_total. Requests after
    the GOAWAY never go to the old connection, which meshd closes once its
    streams are done."""
    b, m = h2_limits()
    retries0 = _stat(m, "meshd_cluster_upstream_rq_refused_retry_total")
    with H2MultiClient(m.listen_port, timeout=HANG_GUARD) as c:
        sids = [c.start(_req(f"/g?wait=go&i={i}"), flush=False) for i in range(3)]
        c.flush()
        c.wait(lambda: len(b.streams) >= 3, HANG_GUARD, what="3 streams at the upstream")
        assert {s["conn"] for s in b.streams} == {1} and [s["stream"] for s in b.streams] == [1, 3, 5], b.streams
        b.goaway(1, last_stream_id=3)
        # Stream 5 comes again, on another connection.
        c.wait(lambda: len(b.streams) >= 4, HANG_GUARD, what="the refused stream to be sent again")
        again = b.streams[3]
        assert again["path"] == "/g?wait=go&i=2" and again["conn"] != 1, b.streams
        assert b.streams[2]["state"] == "refused_by_goaway", b.streams
        wait_until(lambda: _stat(m, "meshd_cluster_upstream_rq_refused_retry_total") == retries0 + 1,
                   timeout=HANG_GUARD, what="meshd_cluster_upstream_rq_refused_retry_total + 1")
        # A new request after the GOAWAY goes to a new connection.
        new = c.start(_req("/g/new"))
        c.wait(lambda: c.done(new), HANG_GUARD, what="the new request's response")
        assert _ok(c.responses[new]), c.responses[new]
        assert [s["conn"] for s in b.streams_for("/g/new")] != [1], b.streams
        # The streams at or below the last id finish normally; so does the retried one.
        b.release("go")
        c.wait(lambda: all(c.done(s) for s in sids), HANG_GUARD, what="the three responses")
        for s in sids:
            assert _ok(c.responses[s]), c.responses[s]
        assert c.goaway is None, f"the client's connection got GOAWAY {c.goaway}"
    answered = [(s["conn"], s["stream"]) for s in b.streams if s["state"] == "answered"]
    assert (1, 1) in answered and (1, 3) in answered, b.streams
    assert b.conns[1]["after_goaway"] == 0, "meshd opened a stream on the connection after its GOAWAY"
    wait_until(lambda: b.conns[1]["closed"], timeout=HANG_GUARD,
               what="meshd to close the GOAWAY'd connection once its streams were done")


def test_upstream_goaway_refused_stream_with_body_is_not_retried(h2_limits):
    """README: a refused stream is sent again only when no body byte had
    been taken. A POST whose body went upstream before the GOAWAY (last id
    below it) is not retried: the client gets 503, never a hang."""
    b, m = h2_limits()
    retries0 = _stat(m, "meshd_cluster_upstream_rq_refused_retry_total")
    with H2MultiClient(m.listen_port, timeout=HANG_GUARD) as c:
        post = [(":method", "POST"), (":scheme", "http"), (":path", "/gb?wait=go"), (":authority", "localhost")]
        sid = c.start(post, body=b"x" * 1000)
        c.wait(lambda: b.streams and b.streams[0]["request_ended"], HANG_GUARD, what="the POST at the upstream")
        b.goaway(1, last_stream_id=0)
        c.wait(lambda: c.done(sid), HANG_GUARD, what="the POST's response")
        r = c.responses[sid]
        assert r.status == 503, r
    assert len(b.streams) == 1, "the POST was sent again"
    assert _stat(m, "meshd_cluster_upstream_rq_refused_retry_total") == retries0


# -- keepalive ------------------------------------------------------------------------


def test_keepalive_closes_connection_whose_pings_go_unanswered(h2_limits):
    """keepalive_interval_ms 1000: meshd PINGs its pooled connection every
    second; while the upstream answers, the connection stays. Once it stops
    answering, meshd closes that connection (the upstream sees the close
    within a few intervals), http2_cx_active returns to 0, and the next
    request opens a new connection and succeeds."""
    b, m = h2_limits(keepalive_ms=1000)
    assert _ok(h2_get(m.listen_port, "/k1", timeout=HANG_GUARD))
    wait_until(lambda: b.conns[1]["pings"] >= 2, timeout=HANG_GUARD, what="2 keepalive PINGs")
    assert not b.conns[1]["closed"], "meshd closed a connection that answers its PINGs"
    assert _stat(m, "meshd_cluster_upstream_http2_cx_active") == 1
    b.answer_pings = False
    wait_until(lambda: b.conns[1]["closed"], timeout=HANG_GUARD,
               what="meshd to close the connection whose PINGs go unanswered")
    assert b.conns[1]["pings_unanswered"] >= 1
    print("close seen by the upstream:", b.conns[1]["close"])
    wait_until(lambda: _stat(m, "meshd_cluster_upstream_http2_cx_active") == 0, timeout=HANG_GUARD,
               what="meshd_cluster_upstream_http2_cx_active == 0")
    b.answer_pings = True
    assert _ok(h2_get(m.listen_port, "/k2", timeout=HANG_GUARD))
    assert [s["conn"] for s in b.streams_for("/k2")] == [2], b.streams
    assert "event=h2_upstream_keepalive_timeout" in m.log()


# -- idle close -----------------------------------------------------------------------


def _idle_close(b, m, guard):
    assert _ok(h2_get(m.listen_port, "/i", timeout=HANG_GUARD))
    assert _stat(m, "meshd_cluster_upstream_http2_cx_active") == 1
    wait_until(lambda: b.conns[1]["closed"], timeout=guard, what="meshd to close the idle pooled connection")
    assert b.conns[1]["goaway_received"] == 0, f"no GOAWAY(NO_ERROR) before the close: {b.conns[1]}"
    wait_until(lambda: _stat(m, "meshd_cluster_upstream_http2_cx_active") == 0, timeout=HANG_GUARD,
               what="meshd_cluster_upstream_http2_cx_active == 0")
    assert _ok(h2_get(m.listen_port, "/i2", timeout=HANG_GUARD))
    assert [s["conn"] for s in b.streams_for("/i2")] == [2], b.streams


def test_idle_pooled_connection_closed(h2_limits):
    """idle_timeout_ms 1000, keepalive_interval_ms 2000: once traffic stops
    the pooled connection is closed (GOAWAY, then close) at the next tick,
    and http2_cx_active returns to 0."""
    b, m = h2_limits(pool_idle_ms=1000, keepalive_ms=2000)
    _idle_close(b, m, guard=HANG_GUARD)




def test_idle_pooled_connection_closed_despite_keepalive_pings(h2_limits):
    """idle_timeout_ms 1500 with keepalive_interval_ms 1000: the PINGs meshd
    sends to check the connection are not traffic; 1.5 s without streams
    and the connection is closed at the next tick (2 s). Hang guard: 8 s."""
    b, m = h2_limits(pool_idle_ms=1500, keepalive_ms=1000)
    _idle_close(b, m, guard=8.0)


# -- downstream gone ------------------------------------------------------------------


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_downstream_close_resets_every_upstream_stream(h2_limits, how):
    """10 streams in flight (held by the upstream) when the client's TCP
    connection goes away (close, or reset): every one of the 10 upstream
    streams is reset (RST_STREAM CANCEL), none is left open."""
    b, m = h2_limits()
    c = H2MultiClient(m.listen_port, timeout=HANG_GUARD)
    try:
        for i in range(10):
            c.start(_req(f"/d?wait=never&i={i}"), flush=False)
        c.flush()
        c.wait(lambda: sum(1 for s in b.streams if s["state"] == "open") >= 10, HANG_GUARD,
               what="10 streams open at the upstream")
    finally:
        if how == "rst":
            reset_close(c.sock)
        else:
            c.sock.close()
    wait_until(lambda: all(s["state"] != "open" for s in b.streams), timeout=HANG_GUARD,
               what="every upstream stream to end")
    assert [s["reset_by_peer"] for s in b.streams] == [8] * 10, b.streams
    assert not b.conns[1]["closed"], "the pooled upstream connection was closed with the downstream one"
    wait_until(lambda: _stat(m, "meshd_cluster_upstream_rq_active") == 0, timeout=HANG_GUARD,
               what="meshd_cluster_upstream_rq_active == 0")
