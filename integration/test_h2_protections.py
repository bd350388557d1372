# SPDX-License-Identifier: Apache-2.0
"""Downstream HTTP/2 protections (README "HTTP/2 and gRPC behaviour",
Protections): a client that floods meshd with RST_STREAM (rapid reset),
PINGs, SETTINGS or CONTINUATION frames loses its connection, the violation
is answered with GOAWAY and counted in meshd_listener_http2_protocol_error_total,
and meshd goes on serving other connections. Plus the listener's
SETTINGS_MAX_CONCURRENT_STREAMS: never more streams than announced reach the
upstream.

The floods are raw frames (env.clients.RawH2): python3-h2 will not send
most of them. The flooding client writes without reading, as an attacker
would. (Header lists over max_header_list_size: test_h2_errors.py.)"""
import pytest

from env.clients import H2_ERRORS, H2_PREFACE, RawH2, h2_get, wait_until

pytestmark = pytest.mark.proxy_only

HANG_GUARD = 20.0
LISTENER = "h2_lim"
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, REFUSED_STREAM, CANCEL, ENHANCE_YOUR_CALM = 0, 1, 2, 7, 8, 11



def _req(path, authority="localhost"):
    return [(":method", "GET"), (":scheme", "http"), (":path", path), (":authority", authority)]


def _errors(m):
    return m.stat("meshd_listener_http2_protocol_error_total", listener=LISTENER) or 0


def _still_serving(m):
    """A normal request on a fresh connection succeeds."""
    r = h2_get(m.listen_port, "/after", timeout=HANG_GUARD)
    assert r.status == 200 and bytes(r.data) == b"hello from the h2 backend\n", r


def _goaway_then_end(c):
    """Read until meshd's GOAWAY and the end of the connection. Returns
    (GOAWAY frame or None, "eof" | "rst")."""
    g = c.read_until(lambda f: f.type == RawH2.GOAWAY, timeout=HANG_GUARD)
    how = c.read_to_end(timeout=HANG_GUARD)
    print(f"GOAWAY: {g!r}; connection end: {how}")
    return g, how


def _assert_goaway_counted(c, m, before, g, codes=None):
    assert g is not None, (
        f"meshd closed the connection ({c.eof}) without a GOAWAY; frames seen (PINGs left out): "
        f"{[f for f in c.frames if f.type != RawH2.PING][-5:]}\n{m.log_tail(5)}"
    )
    assert g.error_code != NO_ERROR, f"GOAWAY without an error code: {g!r}"
    if codes:
        assert g.error_code in codes, (
            f"GOAWAY {H2_ERRORS.get(g.error_code, g.error_code)}; expected one of "
            f"{[H2_ERRORS[x] for x in codes]}"
        )
    wait_until(lambda: _errors(m) > before, timeout=HANG_GUARD,
               what="meshd_listener_http2_protocol_error_total to go up")


# -- rapid reset ----------------------------------------------------------------------


def test_rapid_reset_gets_goaway_and_is_counted(h2_limits):
    """CVE-2023-44487: 2000 HEADERS + RST_STREAM(CANCEL) pairs in one burst
    exceed the reset rate limit (1000 burst, 33/s): GOAWAY with an error
    (nghttp2 sends INTERNAL_ERROR) and the last stream id where it tripped."""
    b, m = h2_limits()
    _still_serving(m)
    before = _errors(m)
    last_sent = 3999
    with RawH2(m.listen_port, timeout=HANG_GUARD) as c:
        burst = b"".join(
            c.headers(sid, _req(f"/rr?sid={sid}"), end_stream=True) + c.rst_stream(sid, CANCEL)
            for sid in range(1, last_sent + 1, 2)
        )
        c.send_nowait(burst)
        g, _ = _goaway_then_end(c)
        _assert_goaway_counted(c, m, before, g, codes=(ENHANCE_YOUR_CALM, INTERNAL_ERROR, PROTOCOL_ERROR))
        assert g.last_stream_id < last_sent, f"the limit never tripped: {g!r}"
    reached = [int(s["path"].rsplit("=", 1)[1]) for s in b.streams_for("/rr")]
    print(f"rapid-reset streams that reached the upstream: {len(reached)}")
    # RFC 9113 §6.8: streams above the GOAWAY's last id were not acted on.
    assert all(sid <= g.last_stream_id for sid in reached), (g, reached)
    _still_serving(m)


# -- PING flood -----------------------------------------------------------------------


def _ping_flood(c):
    # 10000 PINGs, not one ACK read: more than 1000 ACKs queue up in meshd.
    c.send_nowait(b"".join(c.ping(i.to_bytes(8, "big")) for i in range(10000)))


def test_ping_flood_closes_connection(h2_limits):
    b, m = h2_limits()
    with RawH2(m.listen_port, timeout=HANG_GUARD) as c:
        _ping_flood(c)
        c.read_to_end(timeout=HANG_GUARD)
        acks = sum(1 for f in c.frames if f.type == RawH2.PING and f.flags & RawH2.ACK)
        assert acks <= 1100, f"{acks} PING ACKs: meshd went on answering the flood"
    _still_serving(m)


def test_ping_flood_gets_goaway_and_is_counted(h2_limits):
    b, m = h2_limits()
    before = _errors(m)
    with RawH2(m.listen_port, timeout=HANG_GUARD) as c:
        _ping_flood(c)
        g, _ = _goaway_then_end(c)
        # The brief allows a bare close for a PING flood, but it must be counted.
        wait_until(lambda: _errors(m) > before, timeout=2.0,
                   what="meshd_listener_http2_protocol_error_total to count the PING flood")
        _assert_goaway_counted(c, m, before, g)
    _still_serving(m)


# -- SETTINGS -------------------------------------------------------------------------


def test_settings_with_too_many_entries_gets_goaway_and_is_counted(h2_limits):
    """One SETTINGS frame of 100 entries (the limit is 32): ENHANCE_YOUR_CALM."""
    b, m = h2_limits()
    before = _errors(m)
    with RawH2(m.listen_port, timeout=HANG_GUARD, preface=False) as c:
        c.send(H2_PREFACE + c.settings([(0x2, 0)] * 100))
        g, _ = _goaway_then_end(c)
        _assert_goaway_counted(c, m, before, g, codes=(ENHANCE_YOUR_CALM,))
    _still_serving(m)


def _settings_flood(c):
    # 10000 SETTINGS frames, not one ACK read.
    c.send_nowait(b"".join(c.settings([(0x4, 65535)]) for _ in range(10000)))


def test_settings_flood_closes_connection(h2_limits):
    b, m = h2_limits()
    with RawH2(m.listen_port, timeout=HANG_GUARD) as c:
        _settings_flood(c)
        c.read_to_end(timeout=HANG_GUARD)
        acks = sum(1 for f in c.frames if f.type == RawH2.SETTINGS and f.flags & RawH2.ACK)
        assert acks <= 1100, f"{acks} SETTINGS ACKs: meshd went on answering the flood"
    _still_serving(m)


def test_settings_flood_gets_goaway_and_is_counted(h2_limits):
    b, m = h2_limits()
    before = _errors(m)
    with RawH2(m.listen_port, timeout=HANG_GUARD) as c:
        _settings_flood(c)
        g, _ = _goaway_then_end(c)
        _assert_goaway_counted(c, m, before, g)
    _still_serving(m)


# -- CONTINUATION flood ---------------------------------------------------------------


def _continuation_flood(c):
    """HEADERS without END_HEADERS, then 100 CONTINUATION frames, each one
    more header field (the limit is 8 per block; CVE-2024-28182)."""
    data = c.headers(1, _req("/cont"), end_stream=True, end_headers=False)
    for i in range(100):
        data += c.continuation(1, c.header_block([(f"x-c{i}", "v" * 16)]), end_headers=False)
    c.send_nowait(data)


def test_continuation_flood_closes_connection(h2_limits):
    b, m = h2_limits()
    with RawH2(m.listen_port, timeout=HANG_GUARD) as c:
        _continuation_flood(c)
        c.read_to_end(timeout=HANG_GUARD)
        assert not [f for f in c.frames if f.type == RawH2.HEADERS], "the flooded request was answered"
    assert b.streams_for("/cont") == [], "the flooded request reached the upstream"
    _still_serving(m)


def test_continuation_flood_gets_goaway_and_is_counted(h2_limits):
    b, m = h2_limits()
    before = _errors(m)
    with RawH2(m.listen_port, timeout=HANG_GUARD) as c:
        _continuation_flood(c)
        g, _ = _goaway_then_end(c)
        _assert_goaway_counted(c, m, before, g)
    _still_serving(m)


# -- SETTINGS_MAX_CONCURRENT_STREAMS --------------------------------------------------


def _held(sid):
    return _req(f"/held?wait=g&i={sid}")


def test_max_concurrent_streams_refuses_extra_streams_sent_before_settings(h2_limits):
    """Listener max_concurrent_streams 5. A client sends 10 requests right
    behind its preface, before it could see meshd's SETTINGS (the upstream
    holds every request). RFC 9113 §5.1.2: a stream beyond the advertised
    limit is a stream error, PROTOCOL_ERROR or REFUSED_STREAM; REFUSED_STREAM
    (§8.7) tells the client it was not processed and may be retried. meshd
    forwards the first 5 and refuses streams 11..19; the connection lives
    on and the 5 are answered."""
    b, m = h2_limits(listener_max_streams=5)
    with RawH2(m.listen_port, timeout=HANG_GUARD) as c:
        sids = list(range(1, 21, 2))
        c.send(b"".join(c.headers(sid, _held(sid)) for sid in sids))
        resets = {}
        for _ in range(100):
            if len(resets) >= 5:
                break
            f = c.read_until(lambda f: f.type == RawH2.RST_STREAM and f.stream not in resets, timeout=HANG_GUARD)
            assert f is not None, f"connection ended ({c.eof}); frames: {c.frames}"
            resets[f.stream] = f.error_code
        assert resets == {sid: REFUSED_STREAM for sid in sids[5:]}, {s: H2_ERRORS[e] for s, e in resets.items()}
        wait_until(lambda: len(b.streams) >= 5, timeout=HANG_GUARD, what="5 streams at the upstream")
        # All 5 admitted streams are open at the upstream at once; no 6th came.
        assert sorted(int(s["path"].rsplit("=", 1)[1]) for s in b.streams) == sids[:5]
        assert sum(cs["max_open"] for cs in b.conn_stats().values()) <= 5
        b.release("g")
        answered = {}
        for _ in range(100):
            if len(answered) >= 5:
                break
            f = c.read_until(lambda f: f.type == RawH2.HEADERS and f.stream not in answered, timeout=HANG_GUARD)
            assert f is not None, f"connection ended ({c.eof}); frames: {c.frames}"
            answered[f.stream] = dict(f.headers)[":status"]
        assert answered == {sid: "200" for sid in sids[:5]}
        assert not c.goaways(), c.goaways()
    assert len(b.streams) == 5, "a refused stream reached the upstream"
    _still_serving(m)


def test_max_concurrent_streams_exceeded_after_settings_ack(h2_limits):
    """The same 10 requests from a client that has acknowledged meshd's
    SETTINGS (it knows the limit and breaks it on purpose). RFC 9113 §5.1.2
    asks for a stream error (PROTOCOL_ERROR or REFUSED_STREAM), and §5.4
    lets an endpoint treat a stream error as a connection error. meshd
    (nghttp2) sends GOAWAY(PROTOCOL_ERROR): allowed, and then it must be
    counted. Either way, never more than 5 streams reach the upstream."""
    b, m = h2_limits(listener_max_streams=5)
    before = _errors(m)
    with RawH2(m.listen_port, timeout=HANG_GUARD) as c:
        settings = c.read_until(lambda f: f.type == RawH2.SETTINGS and not f.flags & RawH2.ACK, timeout=HANG_GUARD)
        assert settings is not None
        c.send(c.ping(b"syncsync"))  # our SETTINGS ACK went out before this PING
        assert c.read_until(lambda f: f.type == RawH2.PING and f.flags & RawH2.ACK, timeout=HANG_GUARD)
        sids = list(range(1, 21, 2))
        c.send(b"".join(c.headers(sid, _held(sid)) for sid in sids))
        f = c.read_until(
            lambda f: f.type == RawH2.GOAWAY or (f.type == RawH2.RST_STREAM and f.stream in sids[5:]),
            timeout=HANG_GUARD,
        )
        print(f"first reaction: {f!r}")
        assert f is not None, f"connection ended ({c.eof}) without GOAWAY or RST_STREAM; frames: {c.frames}"
        if f.type == RawH2.GOAWAY:
            assert f.error_code == PROTOCOL_ERROR, f
            assert f.last_stream_id <= sids[4], f"GOAWAY admits a stream beyond the limit: {f!r}"
            wait_until(lambda: _errors(m) > before, timeout=HANG_GUARD,
                       what="meshd_listener_http2_protocol_error_total to go up")
            c.read_to_end(timeout=HANG_GUARD)
        else:
            resets = {}
            for _ in range(100):
                if len(resets) >= 5:
                    break
                r = c.read_until(lambda f: f.type == RawH2.RST_STREAM and f.stream not in resets, timeout=HANG_GUARD)
                assert r is not None, c.frames
                resets[r.stream] = r.error_code
            assert set(resets) == set(sids[5:]) and set(resets.values()) <= {REFUSED_STREAM, PROTOCOL_ERROR}
    assert len(b.streams) <= 5 and sum(cs["max_open"] for cs in b.conn_stats().values()) <= 5, b.streams
    b.release("g")
    _still_serving(m)
