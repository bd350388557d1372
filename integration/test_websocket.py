# SPDX-License-Identifier: Apache-2.0
"""Protocol upgrades through meshd (bundles/ws_basic, env/ws_upgrade):

  - WebSocket (python3-websockets client) through the HTTP1 and the AUTO
    listener to a WebSocket upstream: text, binary, ping/pong, many messages
    in order, a 10 MiB message, a message sent right after the 101, close
    handshakes started by either side; keys, accept and extensions pass
    unchanged;
  - the tunnel as a byte pipe (raw sockets, a raw upstream): bytes in the same
    write as the 101, half-close both ways, reset both ways, backpressure both
    ways, a non-websocket token allowed by upgrade_types (case-insensitively);
  - what is not tunnelled: refuse_upgrades (403), a token the route does not
    allow (403), an HTTP2 cluster (501), "Upgrade: h2c" (served as a plain
    request), an upstream that answers other than 101 (passed on; the
    connection stays usable);
  - timeouts: the route timeout stops at the 101 (still applies before it),
    the stream idle timeout still closes an idle tunnel;
  - counters meshd_listener_http_upgrade_total and
    meshd_listener_http_rq_upgrade_refused_total;
  - HTTP/2 downstream: SETTINGS_ENABLE_CONNECT_PROTOCOL, RFC 8441 extended
    CONNECT (python3-h2) bridged to an HTTP/1.1 upgrade, WebSocket frames by
    hand in DATA frames, END_STREAM <-> FIN, several tunnels and plain
    requests on one connection, refusals as h2 responses.
The test_helpers_* tests run the helpers against the upstreams directly
(no meshd), so that a failure elsewhere is meshd's."""
import asyncio
import base64
import contextlib
import hashlib
import json
import random
import socket
import struct

import pytest

from env.backends import det_chunks, det_digest
from env.clients import BackgroundSender, fill_until_blocked, wait_stalled, wait_until
from env.h1 import H1Conn, request_bytes
from env.ws_upgrade import (  # noqa: F401 - ws_service is a fixture
    GREETING,
    MAX_MESSAGE,
    OP_BINARY,
    OP_CLOSE,
    OP_TEXT,
    SAMPLE_ACCEPT,
    SAMPLE_KEY,
    TRAILER,
    WS_GUARD,
    H2ConnectClient,
    RawUpgradeBackend,
    WsFrames,
    WsUpstream,
    accept_for,
    header_tokens,
    header_values,
    raw_upgrade,
    run,
    ws_close_payload,
    ws_frame,
    ws_service,
)

UPGRADES = "meshd_listener_http_upgrade_total"
REFUSED = "meshd_listener_http_rq_upgrade_refused_total"
ENABLE_CONNECT_PROTOCOL = 0x8  # RFC 8441 §3
H1_LISTENERS = ["h1", "auto"]
H2_LISTENERS = ["h2c", "auto"]
proxy = pytest.mark.proxy_only


def ws_connect(url, **kw):
    import websockets

    kw.setdefault("open_timeout", WS_GUARD)
    kw.setdefault("close_timeout", 2)
    kw.setdefault("ping_interval", None)
    kw.setdefault("max_size", MAX_MESSAGE)
    return websockets.connect(url, **kw)


@contextlib.asynccontextmanager
async def ws_open(url, **kw):
    """A python3-websockets client connection: closed with the close
    handshake when the block ends normally, aborted at once when it fails or
    is cancelled by run()'s hang guard (no close handshake to wait out)."""
    ws = await ws_connect(url, **kw)
    try:
        yield ws
    except BaseException:
        ws.transport.abort()
        raise
    await ws.close()


def _lower(items):
    return [(k.lower(), v) for k, v in items]


def _check_ws_request(rec, key=None):
    """What a WebSocket upstream must see of an upgrade request."""
    h = rec["headers"]
    assert header_tokens(h, "upgrade") == ["websocket"], h
    assert "upgrade" in header_tokens(h, "connection"), h
    assert header_values(h, "sec-websocket-version") == ["13"], h
    keys = header_values(h, "sec-websocket-key")
    assert len(keys) == 1, h
    if key is not None:
        assert keys[0] == key, f"Sec-WebSocket-Key changed on the way: sent {key!r}, upstream saw {keys[0]!r}"
    assert len(base64.b64decode(keys[0], validate=True)) == 16, f"not a 16-byte base64 key: {keys[0]!r}"
    assert not [k for k, _ in h if k.startswith(":")], f"pseudo-header on the HTTP/1.1 upstream: {h}"
    return keys[0]


def _check_101(headers, accept):
    assert header_tokens(headers, "upgrade") == ["websocket"], headers
    assert "upgrade" in header_tokens(headers, "connection"), headers
    assert header_values(headers, "sec-websocket-accept") == [accept], headers


# -- the helpers alone (no meshd) ---------------------------------------------------------


def test_helpers_ws_upstream_direct():
    b = WsUpstream().start()
    try:
        base = f"ws://127.0.0.1:{b.port}"

        async def go():
            async with ws_open(base + "/echo") as ws:
                await ws.send("text")
                assert await ws.recv() == "text"
                await ws.send(b"\x00bin")
                assert await ws.recv() == b"\x00bin"
                await asyncio.wait_for(await ws.ping(b"p"), WS_GUARD)
                key = ws.request_headers["Sec-WebSocket-Key"]
                assert ws.response_headers["Sec-WebSocket-Accept"] == accept_for(key)
            async with ws_open(base + "/hello") as ws:
                assert await ws.recv() == "hello"
            async with ws_open(base + "/close-me") as ws:
                await ws.send("x")
                try:
                    await ws.recv()
                except Exception:  # noqa: BLE001 - ConnectionClosed expected
                    pass
                return ws.close_code, ws.close_reason

        assert run(go()) == (4001, "bye")
        assert b.wait_close("/echo")["code"] == 1000
        assert b.opened == 3 and b.tcp_connections == 3
        t, r = raw_upgrade(b.port, "/not-ws")
        assert t is None and r.status == 403 and r.body == b"backend says no\n", r
        r.conn.close()
        with H1Conn(b.port) as c:
            c.send(request_bytes("GET", "/plain", headers=["X-Test: 1"]))
            r = c.read_response()
            assert r.status == 200 and json.loads(r.body)["headers"], r
        t, _ = raw_upgrade(b.port, "/echo")
        with t:
            _check_101(t.headers, SAMPLE_ACCEPT)
            t.send(ws_frame(OP_TEXT, "framed"))
            p = WsFrames()
            frames = []
            for _ in range(100):
                if frames:
                    break
                frames += p.feed(t.sock.recv(65536))
            assert frames[0][1:] == (OP_TEXT, b"framed", False), frames
        _check_ws_request(b.requests_for("/echo")[-1], SAMPLE_KEY)
    finally:
        b.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", b.port), timeout=2).close()


def test_helpers_raw_upstream_direct():
    b = RawUpgradeBackend().start()
    try:
        t, _ = raw_upgrade(b.port, "/greet")
        with t:
            _check_101(t.headers, SAMPLE_ACCEPT)
            assert t.recv_exact(len(GREETING)) == GREETING
            t.send(b"abc")
            t.shutdown_wr()
            assert t.read_to_end() == ("eof", b"abc" + TRAILER)
        t, _ = raw_upgrade(b.port, "/source?n=100000")
        with t:
            assert t.recv_hash(100000) == det_digest(100000, 7)
            assert t.read_to_end()[0] == "eof"
            t.send(b"late")
            t.shutdown_wr()
        assert b.wait_event("after_fin", "/source")["data"] == b"late"
        with H1Conn(b.port) as c:
            _, r = raw_upgrade(None, "/deny", conn=c)
            assert r.status == 426 and r.header("x-backend") == "raw", r
            t, _ = raw_upgrade(None, "/reset", conn=c)
            t.send(b"go")
            assert t.read_to_end()[0] == "rst"
    finally:
        b.stop()


# -- WebSocket with python3-websockets ----------------------------------------------------


@proxy
@pytest.mark.parametrize("listener", H1_LISTENERS)
def test_ws_messages(ws_service, listener):
    svc = ws_service()
    msgs = [f"m{i:03d}" if i % 2 else b"b%03d" % i for i in range(50)]

    async def go():
        async with ws_open(svc.url("/ws/echo", listener)) as ws:
            await ws.send("héllo ✓")
            assert await ws.recv() == "héllo ✓"
            await ws.send(b"\x00\x01binary\xff")
            assert await ws.recv() == b"\x00\x01binary\xff"
            await asyncio.wait_for(await ws.ping(b"ping-1"), WS_GUARD)  # the pong
            for m in msgs:
                await ws.send(m)
            got = [await ws.recv() for _ in msgs]
            assert got == msgs, "messages lost, changed or reordered"
            return _lower(ws.request_headers.raw_items()), _lower(ws.response_headers.raw_items())

    req, resp = run(go())
    recs = svc.ws.requests_for("/echo")
    assert len(recs) == 1, recs
    key = header_values(req, "sec-websocket-key")[0]
    _check_ws_request(recs[0], key)
    _check_101(resp, accept_for(key))
    # Extension negotiation is end to end: the offer reaches the upstream and
    # its answer reaches the client.
    assert "permessage-deflate" in " ".join(header_values(recs[0]["headers"], "sec-websocket-extensions"))
    assert "permessage-deflate" in " ".join(header_values(resp, "sec-websocket-extensions")), resp
    svc.wait_stat(UPGRADES, listener, 1)
    assert svc.stat(REFUSED, listener) == 0


@proxy
@pytest.mark.parametrize("listener", H1_LISTENERS)
def test_ws_10mib_message(ws_service, listener):
    svc = ws_service()
    big = random.Random(10).randbytes(10 * 1024 * 1024)

    async def go():
        async with ws_open(svc.url("/ws/echo", listener), compression=None) as ws:
            await ws.send(big)
            got = await ws.recv()
            await ws.send("after")
            assert await ws.recv() == "after"
            return got

    got = run(go())
    assert isinstance(got, bytes) and len(got) == len(big), len(got)
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(big).hexdigest(), "10 MiB message changed"


@proxy
@pytest.mark.parametrize("listener", H1_LISTENERS)
def test_ws_message_right_after_101(ws_service, listener):
    svc = ws_service()

    async def go():
        async with ws_open(svc.url("/ws/hello", listener)) as ws:
            first = await ws.recv()
            await ws.send("then")
            return first, await ws.recv()

    assert run(go()) == ("hello", "then")


@proxy
@pytest.mark.parametrize("listener", H1_LISTENERS)
def test_ws_close_by_client(ws_service, listener):
    svc = ws_service()

    async def go():
        ws = await ws_connect(svc.url("/ws/echo", listener))
        await ws.send("x")
        assert await ws.recv() == "x"
        await ws.close(1000, "done")
        return ws.close_code

    assert run(go()) == 1000
    c = svc.ws.wait_close("/echo")
    assert (c["code"], c["reason"]) == (1000, "done"), c


@proxy
@pytest.mark.parametrize("listener", H1_LISTENERS)
def test_ws_close_by_server(ws_service, listener):
    import websockets

    svc = ws_service()

    async def go():
        async with ws_open(svc.url("/ws/close-me", listener)) as ws:
            await ws.send("first")
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
            return ws.close_code, ws.close_reason

    assert run(go()) == (4001, "bye")
    assert svc.ws.wait_close("/close-me")["code"] == 4001


# -- the tunnel as a byte pipe (raw upstream) ----------------------------------------------


@proxy
@pytest.mark.parametrize("listener", H1_LISTENERS)
def test_raw_101_headers_and_bytes_in_the_same_write(ws_service, listener):
    """The upstream's 101 and its first tunnelled bytes come in one write;
    the key and accept pass unchanged; the upstream gets Connection/Upgrade."""
    svc = ws_service()
    t, r = raw_upgrade(svc.ports[listener], "/raw/greet")
    assert t is not None, f"no 101: {r!r}"
    with t:
        _check_101(t.headers, SAMPLE_ACCEPT)
        assert t.header("x-backend") == "raw"
        assert t.header("content-length") is None and t.header("transfer-encoding") is None, t.headers
        assert t.recv_exact(len(GREETING)) == GREETING
        t.send(b"ping-through-tunnel")
        assert t.recv_exact(19) == b"ping-through-tunnel"
    recs = svc.raw.requests_for("/greet")
    assert len(recs) == 1 and recs[0]["method"] == "GET" and recs[0]["version"] == "HTTP/1.1", recs
    _check_ws_request(recs[0], SAMPLE_KEY)


@proxy
def test_raw_half_close_client_first(ws_service):
    """Client FIN reaches the upstream after every byte; the upstream can
    still send afterwards; its FIN then reaches the client."""
    svc = ws_service()
    n = 1024 * 1024 + 3
    t, r = raw_upgrade(svc.port, "/raw/echo")
    assert t is not None, r
    with t:
        sender = BackgroundSender(t.sock, det_chunks(n, seed=3, chunk=64 * 1024), shut_wr=True).start()
        got_hash = t.recv_hash(n)
        sender.join(WS_GUARD)
        how, rest = t.read_to_end()
    assert got_hash == det_digest(n, 3), "echoed bytes differ"
    assert (how, rest) == ("eof", TRAILER), f"after the client's FIN: {how}, {rest[:80]!r}"
    ev = svc.raw.wait_event("eof", "/echo")
    assert ev["n"] == n and ev["sha256"] == det_digest(n, 3), ev


@proxy
def test_raw_half_close_upstream_first(ws_service):
    """Upstream FIN reaches the client after every byte; the client can
    still send afterwards, and the upstream gets it all."""
    svc = ws_service()
    n = 1024 * 1024 + 5
    t, r = raw_upgrade(svc.port, f"/raw/source?n={n}")
    assert t is not None, r
    with t:
        assert t.recv_hash(n) == det_digest(n, 7)
        how, rest = t.read_to_end()
        assert (how, rest) == ("eof", b""), (how, rest[:80])
        t.send(b"late-bytes")
        t.shutdown_wr()
        ev = svc.raw.wait_event("after_fin", "/source")
    assert (ev["how"], ev["data"]) == ("eof", b"late-bytes"), ev


@proxy
def test_raw_upstream_reset_resets_client(ws_service):
    svc = ws_service()
    t, r = raw_upgrade(svc.port, "/raw/reset")
    assert t is not None, r
    with t:
        t.send(b"go")
        svc.raw.wait_event("resetting", "/reset")
        how, _ = t.read_to_end()
    assert how == "rst", f"upstream reset the tunnel; the client saw {how}"
    with H1Conn(svc.port) as c:  # meshd goes on serving
        c.send(request_bytes("GET", "/ws/plain"))
        assert c.read_response().status == 200


@proxy
def test_raw_client_reset_resets_upstream(ws_service):
    svc = ws_service()
    t, r = raw_upgrade(svc.port, "/raw/observe")
    assert t is not None, r
    t.send(b"abc")
    svc.raw.wait_event("open", "/observe")
    t.abort()
    ev = wait_until(lambda: [e for e in list(svc.raw.events) if e["path"] == "/observe" and e["what"] in ("eof", "rst")],
                    timeout=WS_GUARD, what="the upstream to see the tunnel end")[0]
    assert ev["what"] == "rst", f"client reset the tunnel; the upstream saw {ev}"


@proxy
def test_raw_backpressure_client_to_upstream(ws_service):
    """An upstream that does not read holds the client back (meshd does not
    absorb the stream); once it reads, it gets every byte."""
    svc = ws_service()
    t, r = raw_upgrade(svc.port, "/raw/hold")
    assert t is not None, r
    with t:
        svc.raw.wait_event("holding", "/hold")
        queued = fill_until_blocked(t.sock, quiet=1.0, timeout=15.0, seed=0x5A)
        assert queued < 96 * 1024 * 1024, f"{queued} bytes absorbed before the client was held back"
        svc.raw.release()
        t.shutdown_wr()
        ev = svc.raw.wait_event("eof", "/hold")
    assert ev["n"] == queued, ev
    assert ev["sha256"] == hashlib.sha256(b"\x5a" * queued).hexdigest()


@proxy
def test_raw_backpressure_upstream_to_client(ws_service):
    """A client that does not read holds the upstream back; then it gets
    every byte, in order, and the FIN."""
    svc = ws_service()
    n = 64 * 1024 * 1024
    t, r = raw_upgrade(svc.port, f"/raw/source?n={n}")
    assert t is not None, r
    with t:
        stalled = wait_stalled(lambda: sum(svc.raw.progress.values()), quiet=1.0, timeout=15.0,
                               what="the upstream's sending")
        assert stalled < n, "the upstream sent everything to a client that read nothing"
        assert t.recv_hash(n, timeout=2 * WS_GUARD) == det_digest(n, 7)
        assert t.read_to_end() == ("eof", b"")


@proxy
def test_custom_token_case_insensitive(ws_service):
    """upgrade_types "Foo-Proto" lets "Upgrade: FOO-proto" through (any
    case) and nothing else: websocket on that route is refused."""
    svc = ws_service()
    t, r = raw_upgrade(svc.port, "/custom/echo", token="FOO-proto")
    assert t is not None, f"no 101: {r!r}"
    with t:
        assert [v.lower() for v in header_values(t.headers, "upgrade")] == ["foo-proto"], t.headers
        t.send(b"custom bytes")
        assert t.recv_exact(12) == b"custom bytes"
    rec = svc.raw.requests_for("/echo")
    assert len(rec) == 1 and header_tokens(rec[0]["headers"], "upgrade") == ["foo-proto"], rec
    assert "upgrade" in header_tokens(rec[0]["headers"], "connection"), rec
    t, r = raw_upgrade(svc.port, "/custom/echo")  # websocket
    assert t is None and r.status == 403 and r.header("x-backend") is None, r
    r.conn.close()
    assert len(svc.raw.requests_for("/echo")) == 1, "a refused upgrade reached the upstream"
    svc.wait_stat(UPGRADES, "h1", 1)
    svc.wait_stat(REFUSED, "h1", 1)


@proxy
def test_first_offered_token_the_route_allows_is_chosen(ws_service):
    """RFC 9110 §7.8: "Upgrade: foo, h2c, WebSocket" on a websocket route goes
    upstream as "websocket" alone (foo is not allowed there, h2c never is)."""
    svc = ws_service()
    t, r = raw_upgrade(svc.port, "/raw/echo", token="foo, h2c, WebSocket",
                       extra=[f"Sec-WebSocket-Key: {SAMPLE_KEY}", "Sec-WebSocket-Version: 13"])
    assert t is not None, f"no 101: {r!r}"
    with t:
        assert [v.lower() for v in header_values(t.headers, "upgrade")] == ["websocket"], t.headers
        t.send(b"chosen")
        assert t.recv_exact(6) == b"chosen"
    rec = svc.raw.requests_for("/echo")
    assert len(rec) == 1 and header_tokens(rec[0]["headers"], "upgrade") == ["websocket"], rec
    # none of the offered tokens allowed: refused, the offer named in the reason
    t, r = raw_upgrade(svc.port, "/raw/echo", token="foo, h2c, bar")
    assert t is None and r.status == 403 and b"foo,bar" in r.body, r
    r.conn.close()


# -- what is not tunnelled ---------------------------------------------------------------


@proxy
@pytest.mark.parametrize(
    "path,status,then",
    [
        ("/noupgrade/echo", 403, "/noupgrade/plain"),
        ("/other-token/echo", 403, "/other-token/plain"),
        ("/h2up/echo", 501, "/ws/plain"),
    ],
    ids=["refuse_upgrades-403", "token-not-allowed-403", "http2-cluster-501"],
)
def test_meshd_refuses_upgrade(ws_service, path, status, then):
    svc = ws_service()
    with H1Conn(svc.port) as c:
        t, r = raw_upgrade(None, path, conn=c)
        assert t is None, "meshd tunnelled an upgrade it should refuse"
        assert r.status == status and r.header("x-backend") is None, r
        assert r.body, f"a local reply should carry a reason: {r!r}"
        assert r.header("upgrade") is None, r
        if r.closes:
            assert c.expect_closed() in ("eof", "rst")
        else:  # the connection stays usable; a plain request on the same route is served
            c.send(request_bytes("GET", then))
            n = c.read_response()
            assert n.status == 200 and n.header("x-backend") == "ws", n
    assert svc.ws.requests_for("/echo") == [], "a refused upgrade reached the upstream"
    svc.wait_stat(REFUSED, "h1", 1)
    assert svc.stat(UPGRADES, "h1") == 0


@proxy
def test_upgrade_h2c_is_served_as_plain_request(ws_service):
    svc = ws_service()
    with H1Conn(svc.port) as c:
        c.send(request_bytes("GET", "/ws/plain", headers=[
            "Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c", "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"]))
        r = c.read_response()
        assert r.informational == [] and r.status == 200 and r.header("x-backend") == "ws", r
        seen = json.loads(r.body)
        assert seen["path"] == "/plain"
        assert header_values(seen["headers"], "upgrade") == [], seen["headers"]
        assert header_values(seen["headers"], "http2-settings") == [], seen["headers"]
        assert "upgrade" not in header_tokens(seen["headers"], "connection"), seen["headers"]
        c.send(request_bytes("GET", "/ws/plain"))
        assert c.read_response().status == 200
    assert svc.stat(UPGRADES, "h1") == 0 and svc.stat(REFUSED, "h1") == 0


@proxy
@pytest.mark.parametrize("path,status,backend,body", [
    ("/ws/not-ws", 403, "ws", b"backend says no\n"),
    ("/raw/deny", 426, "raw", b"raw backend wants something else\n"),
], ids=["websockets-403", "raw-426"])
def test_upstream_non_101_passed_on(ws_service, path, status, backend, body):
    """The upstream answers an upgrade with something else than 101: the
    client gets that answer; meshd counts neither a tunnel nor a refusal."""
    svc = ws_service()
    t, r = raw_upgrade(svc.port, path)
    assert t is None, "a tunnel without a 101"
    r.conn.close()
    assert r.status == status and r.header("x-backend") == backend and r.body == body, r
    assert r.informational == [], r
    assert svc.stat(REFUSED, "h1") == 0 and svc.stat(UPGRADES, "h1") == 0


@proxy
def test_connection_usable_after_upstream_declined_upgrade(ws_service):
    """After the upstream's 403 (websockets, which closes its side) or 426
    (raw, keep-alive), the client's connection serves more requests, a later
    upgrade included."""
    svc = ws_service()
    with H1Conn(svc.port) as c:
        t, r = raw_upgrade(None, "/ws/not-ws", conn=c)
        assert t is None and r.status == 403 and r.header("x-backend") == "ws", r
        assert not r.closes, f"meshd closes the client connection after the upstream's answer: {r!r}"
        c.send(request_bytes("GET", "/ws/plain"))
        r = c.read_response()
        assert r.status == 200 and r.header("x-backend") == "ws", r
        t, r = raw_upgrade(None, "/raw/deny", conn=c)
        assert t is None and r.status == 426 and r.header("x-backend") == "raw", r
        assert not r.closes, r
        t, r = raw_upgrade(None, "/raw/echo", conn=c)
        assert t is not None, f"an upgrade after other requests on the connection: {r!r}"
        t.send(b"after-keepalive")
        assert t.recv_exact(15) == b"after-keepalive"
    svc.wait_stat(UPGRADES, "h1", 1)
    assert svc.stat(REFUSED, "h1") == 0


# -- timeouts ------------------------------------------------------------------------------


@proxy
def test_route_timeout_stops_at_the_101(ws_service):
    """Route timeout 300 ms: a tunnel lives well past it, busy or idle; an
    upstream that takes longer than it to answer 101 gets a 504."""
    svc = ws_service(route_timeout_ms=300)

    async def go():
        async with ws_open(svc.url("/ws-short/echo")) as ws:
            for i in range(8):  # about 1.2 s of traffic
                await ws.send(f"tick {i}")
                assert await ws.recv() == f"tick {i}"
                await asyncio.sleep(0.15)
            await asyncio.sleep(0.8)  # idle past the route timeout
            await ws.send("still there")
            return await ws.recv()

    assert run(go()) == "still there"
    t, r = raw_upgrade(svc.port, "/raw-short/echo")
    assert t is not None, r
    with t:
        t.send(b"a")
        assert t.recv_exact(1) == b"a"
        assert t.conn.is_open(1.0), "the raw tunnel was cut"
        t.send(b"b")
        assert t.recv_exact(1) == b"b"
    t, r = raw_upgrade(svc.port, "/raw-short/slow101?ms=3000")
    assert t is None, "the 101 came after the route timeout, yet was passed on"
    assert r.status == 504 and r.header("x-backend") is None, r
    r.conn.close()


@proxy
def test_stream_idle_timeout_closes_idle_tunnel(ws_service):
    svc = ws_service(stream_idle_ms=500)
    t, r = raw_upgrade(svc.idle_port, "/raw/echo")
    assert t is not None, r
    with t:
        t.send(b"once")
        assert t.recv_exact(4) == b"once"
        how, _ = t.read_to_end(timeout=WS_GUARD)  # hang guard: the idle timeout is 500 ms
    assert how in ("eof", "rst")
    ev = wait_until(lambda: [e for e in list(svc.raw.events) if e["path"] == "/echo" and e["what"] in ("eof", "rst")],
                    timeout=WS_GUARD, what="the upstream side of the idle tunnel to end")
    assert ev
    # Stopped here, so that a sanitizer report (a leak) fails this test's call,
    # not its teardown.
    svc.meshd.stop()


# -- counters ------------------------------------------------------------------------------


@proxy
def test_upgrade_counters(ws_service):
    svc = ws_service()

    async def one(url):
        async with ws_open(url) as ws:
            await ws.send("n")
            assert await ws.recv() == "n"

    run(one(svc.url("/ws/echo")))
    run(one(svc.url("/ws/echo", "auto")))
    t, r = raw_upgrade(svc.port, "/raw/echo")
    assert t is not None, r
    t.close()
    for path in ("/noupgrade/echo", "/other-token/echo", "/h2up/echo", "/ws/not-ws"):
        t, r = raw_upgrade(svc.port, path)
        assert t is None, path
        r.conn.close()
    with H1Conn(svc.port) as c:  # h2c: neither tunnelled nor refused
        c.send(request_bytes("GET", "/ws/plain", headers=["Connection: Upgrade", "Upgrade: h2c"]))
        assert c.read_response().status == 200
    svc.wait_stat(UPGRADES, "h1", 2)
    svc.wait_stat(UPGRADES, "auto", 1)
    svc.wait_stat(REFUSED, "h1", 3)
    assert svc.stat(REFUSED, "auto") == 0
    st = svc.meshd.stats()
    for name in (UPGRADES, REFUSED):
        fam = name[: -len("_total")]
        assert st.types.get(name) == "counter" or st.types.get(fam) == "counter", (name, st.types.get(name),
                                                                                    st.types.get(fam))


# -- HTTP/2 downstream: RFC 8441 extended CONNECT -----------------------------------------------


def _frames(c, st, parser, got, n, what):
    """Pump the h2 connection until `got` (the frames parsed so far from the
    stream's DATA, by `parser`) has n frames."""

    def have():
        pos = getattr(st, "parsed", 0)
        st.parsed = len(st.data)
        got.extend(parser.feed(bytes(st.data[pos:])))
        return len(got) >= n or st.ended or st.reset is not None

    c.wait(have, what=what)
    assert len(got) >= n, f"{what}: stream ended with {got} ({st})"
    return got


def _check_h2_bridged_request(rec):
    key = _check_ws_request(rec)
    assert header_values(rec["headers"], "host"), f"no Host on the HTTP/1.1 upstream request: {rec['headers']}"
    return key


@proxy
@pytest.mark.parametrize("listener", H2_LISTENERS)
def test_h2_settings_enable_connect_protocol(ws_service, listener):
    svc = ws_service()
    with H2ConnectClient(svc.ports[listener]) as c:
        c.wait_settings()
        assert c.remote_settings.get(ENABLE_CONNECT_PROTOCOL) == 1, c.remote_settings


@proxy
@pytest.mark.parametrize("listener", H2_LISTENERS)
def test_h2_extended_connect_websocket(ws_service, listener):
    svc = ws_service()
    with H2ConnectClient(svc.ports[listener]) as c:
        c.wait_settings()
        assert c.remote_settings.get(ENABLE_CONNECT_PROTOCOL) == 1, c.remote_settings
        st = c.response(c.request("/ws/echo"))
        assert st.status == 200 and st.reset is None and not st.ended, st
        assert st.header("sec-websocket-accept") is None, st.headers
        assert st.header("upgrade") is None and st.header("connection") is None, st.headers
        binary = bytes(range(256)) * 300
        c.send(st, ws_frame(OP_TEXT, "hello over h2") + ws_frame(OP_BINARY, binary))
        p, got = WsFrames(), []
        _frames(c, st, p, got, 2, "two echoed frames")
        assert [(f[1], f[2], f[3]) for f in got[:2]] == [(OP_TEXT, b"hello over h2", False),
                                                         (OP_BINARY, binary, False)], got
        c.send(st, ws_frame(OP_CLOSE, ws_close_payload(1000, "done")))
        _frames(c, st, p, got, 3, "the close frame")
        assert got[2][1] == OP_CLOSE and struct.unpack(">H", got[2][2][:2])[0] == 1000, got[2]
        # The upstream closes its TCP connection after the close handshake: END_STREAM.
        c.wait(lambda: st.ended or st.reset is not None, what="END_STREAM after the upstream's FIN")
        assert st.ended and st.reset is None, st
        c.end(st)
    recs = svc.ws.requests_for("/echo")
    assert len(recs) == 1, recs
    _check_h2_bridged_request(recs[0])
    cl = svc.ws.wait_close("/echo")
    assert (cl["code"], cl["reason"]) == (1000, "done"), cl
    svc.wait_stat(UPGRADES, listener, 1)


@proxy
def test_h2_tunnels_and_requests_share_a_connection(ws_service):
    """Two tunnels and plain requests on one h2c connection; 1 MiB through a
    tunnel both ways (flow control); END_STREAM ends a tunnel (FIN), RST_STREAM
    aborts one; the connection goes on."""
    svc = ws_service()
    with H2ConnectClient(svc.h2c_port) as c:
        c.wait_settings()
        a = c.request("/ws/echo")
        b = c.request("/ws/hello")
        g = c.request("/ws/plain", method="GET", protocol=None, end_stream=True)
        for st in (a, b, g):
            c.response(st)
        assert a.status == 200 and b.status == 200, (a, b)
        pa, pb, ga, gb = WsFrames(), WsFrames(), [], []
        _frames(c, b, pb, gb, 1, "the greeting on tunnel b")
        assert gb[0][1:3] == (OP_TEXT, b"hello"), gb
        big = random.Random(3).randbytes(1024 * 1024)
        c.send(a, ws_frame(OP_BINARY, big))
        c.send(b, ws_frame(OP_TEXT, "to b"))
        _frames(c, b, pb, gb, 2, "the echo on tunnel b")
        _frames(c, a, pa, ga, 1, "the 1 MiB echo on tunnel a")
        assert gb[1][1:3] == (OP_TEXT, b"to b") and ga[0][1] == OP_BINARY and ga[0][2] == big
        c.wait(lambda: g.ended, what="the plain GET's end")
        assert g.status == 200 and json.loads(bytes(g.data))["path"] == "/plain", g
        assert g.header("connection") is None, f"connection-specific header in an h2 response: {g.headers}"
        # END_STREAM on a: FIN to the upstream; the server closes (1006: no
        # close frame), and its FIN ends the stream.
        c.end(a)
        c.wait(lambda: a.ended or a.reset is not None, what="tunnel a to end after END_STREAM")
        assert a.ended, a
        # RST_STREAM on b: the upstream connection goes away.
        c.conn.reset_stream(b.sid, error_code=8)
        c._flush()
        cl = svc.ws.wait_close("/hello")
        assert cl["code"] == 1006, cl
        assert svc.ws.wait_close("/echo")["code"] == 1006
        g2 = c.response(c.request("/ws/plain", method="GET", protocol=None, end_stream=True))
        assert g2.status == 200, g2
        assert c.terminated is None, c.terminated
    svc.wait_stat(UPGRADES, "h2c", 2)


@proxy
def test_h2_refusals(ws_service):
    svc = ws_service()
    with H2ConnectClient(svc.h2c_port) as c:
        c.wait_settings()
        for path, status, backend in [("/noupgrade/echo", 403, None), ("/other-token/echo", 403, None),
                                      ("/h2up/echo", 501, None), ("/ws/not-ws", 403, "ws")]:
            st = c.response(c.request(path))
            c.wait(lambda st=st: st.ended or st.reset is not None, what=f"the end of {path}")
            assert st.status == status and st.header("x-backend") == backend, (path, st)
        st = c.response(c.request("/ws/echo"))
        assert st.status == 200, st
        c.send(st, ws_frame(OP_TEXT, "ok"))
        got = _frames(c, st, WsFrames(), [], 1, "the echo after refusals")
        assert got[0][1:3] == (OP_TEXT, b"ok")
        assert c.terminated is None, c.terminated
    assert svc.ws.requests_for("/echo") and len(svc.ws.requests_for("/echo")) == 1
    svc.wait_stat(REFUSED, "h2c", 3)
    svc.wait_stat(UPGRADES, "h2c", 1)
