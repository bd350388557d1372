# SPDX-License-Identifier: Apache-2.0
"""Protocol upgrades (WebSocket, RFC 6455 / RFC 8441) for test_websocket.py:
two HTTP/1.1 upstreams, clients, and the fixture that puts meshd in front
(test_websocket.py); WsUpstream(echo_any_path=True) and WsClient also serve
test_detect.py.

LoopThread         an asyncio event loop in a daemon thread, driven from
                   synchronous code: call(coro) waits (bounded) for the result.
WsUpstream         a WebSocket server on python3-websockets 10.4 (asyncio, on
                   its own LoopThread), on 127.0.0.1:0.
                   WebSocket paths (after the handshake):
                     /echo       echoes text and binary messages
                     /hello      sends the text message "hello" at once, then
                                 echoes
                     /close-me   closes with 4001 "bye" after the first message
                   Plain HTTP paths (answered by the process_request hook,
                   before any upgrade check, then the connection closes):
                     /not-ws     403 "backend says no" (even with Upgrade)
                     /plain      200, a JSON body: the path and headers seen
                   Anything else: 404; or, with echo_any_path=True, a
                   WebSocket that echoes, except that the text message "who"
                   is answered with the handshake's path (query included).
                   Records every request (`requests`:
                   path, headers as seen, in order, lower-case names), TCP
                   connections (`tcp_connections`), established WebSocket
                   connections (`opened`) and how each ended (`closes`: path,
                   code, reason as the server saw them; `errors`: exceptions
                   raised by the connection handler).
WsClient           a WebSocket client for synchronous code (python3-websockets
                   on its own LoopThread): WsClient(url) does the handshake;
                   send(msg), recv() -> str | bytes, echo(msg), close().
RawUpgradeBackend  a raw HTTP/1.1 server (env.backends.TCPServer) that answers
                   upgrades itself: 101 (Upgrade: the request's token,
                   Sec-WebSocket-Accept computed from the key when there is
                   one) and then drives the bytes:
                     /echo       echoes; at EOF sends TRAILER, then closes
                     /greet      like /echo, with GREETING in the same write
                                 as the 101
                     /source?n=N sends N deterministic bytes, shuts down its
                                 write side, then records what arrives until EOF
                     /hold       reads nothing until release(), then to EOF
                     /reset      resets (RST) once b"go" arrives
                     /observe    reads until the end; records EOF or reset
                     /slow101?ms=M  answers 101 only after M ms, then echoes
                   and without an upgrade (keep-alive, any number per
                   connection): /deny -> 426, /plain -> 200 JSON. Records
                   `requests` and `events` (per tunnel: what happened).
Tunnel             the client end of an upgraded HTTP/1.1 connection (bytes
                   that came with the 101 are kept); raw_upgrade() makes one.
ws_frame, WsFrames hand-made WebSocket frames (client frames masked) and a
                   frame parser, for tunnels not driven by python3-websockets.
H2ConnectClient    python3-h2 client for RFC 8441 extended CONNECT: several
                   streams on one h2c connection, DATA both ways within the
                   flow-control windows, meshd's SETTINGS recorded.
ws_service         fixture: factory -> WsService (both upstreams, meshd from
                   bundles/ws_basic, its ports and counters).

Every socket has a timeout, every loop is bounded (iterations and time), and
nothing listens or connects anywhere but 127.0.0.1.
"""
import asyncio
import base64
import concurrent.futures
import hashlib
import itertools
import json
import logging
import os
import socket
import struct
import threading
import time
import urllib.parse

import pytest

from env.backends import TCPServer, det_chunks
from env.clients import SocketOwner, reset_close, wait_until
from env.h1 import H1Conn, request_bytes

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SAMPLE_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3
SAMPLE_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
MAX_MESSAGE = 32 * 1024 * 1024
GREETING = b"GREETING-FROM-UPSTREAM"
TRAILER = b"UPSTREAM-SAW-EOF"
WS_GUARD = 10.0  # seconds: hang guard for one step (an answer normally takes milliseconds)
BACKEND_IO_TIMEOUT = 60.0  # per socket operation inside the raw backend (hang guard)

log = logging.getLogger("ws_upgrade")


def accept_for(key):
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 §4.2.2)."""
    if isinstance(key, str):
        key = key.encode()
    return base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()


def run(coro, timeout=WS_GUARD):
    """Run an asyncio coroutine to completion on a fresh loop, bounded."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


# -- the WebSocket upstream and client (python3-websockets) -------------------------------


class LoopThread:
    """An asyncio event loop running in a daemon thread. call(coro) from any
    other thread runs the coroutine on the loop (as one task) and waits for
    its result, at most `timeout` s (then cancels it and fails); stop() stops
    the loop, joins the thread and closes the loop (idempotent)."""

    def __init__(self, name):
        self.name = name
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self):
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    def call(self, coro, timeout=WS_GUARD):
        try:
            fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        except RuntimeError:  # the loop is closed
            coro.close()
            raise
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise AssertionError(f"{self.name}: asyncio operation not done after {timeout}s") from None

    def stop(self, timeout=10.0):
        if not self._thread.is_alive():
            return
        try:
            self.loop.call_soon_threadsafe(self.loop.stop)
        except RuntimeError:
            pass  # already closed
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError(f"{self.name} thread still running {timeout}s after stop()")


WS_PATHS = ("/echo", "/hello", "/close-me")


class WsUpstream:
    """See the module docstring. start() -> self (port set); stop() closes
    the listener and every connection, stops the loop and joins the thread;
    afterwards the port refuses connections."""

    def __init__(self, name="ws", max_size=MAX_MESSAGE, echo_any_path=False):
        self.name = name
        self.max_size = max_size
        self.echo_any_path = echo_any_path
        self.port = None
        self.requests = []
        self.closes = []
        self.opened = 0
        self.tcp_connections = 0
        self.errors = []
        self._lock = threading.Lock()
        self._lt = None
        self._server = None

    # -- lifecycle -----------------------------------------------------------
    def start(self):
        self._lt = LoopThread(f"WsUpstream:{self.name}")
        try:
            self._server = self._lt.call(self._open(), 10.0)
        except BaseException as e:
            self._lt.stop()
            self._lt = None
            raise RuntimeError(f"WsUpstream failed to start: {e!r}") from e
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _open(self):
        import websockets.server

        backend = self

        class Proto(websockets.server.WebSocketServerProtocol):
            def connection_made(self, transport):
                with backend._lock:
                    backend.tcp_connections += 1
                super().connection_made(transport)

        return await websockets.server.serve(
            self._handler, "127.0.0.1", 0,
            create_protocol=Proto,
            process_request=self._process_request,
            ping_interval=None,
            max_size=self.max_size,
            close_timeout=2,
            logger=log,
        )

    async def _shutdown(self):
        self._server.close()
        try:
            await asyncio.wait_for(self._server.wait_closed(), 1.0)
        except asyncio.TimeoutError:
            # Connections still in the opening handshake (no request yet)
            # would hold wait_closed() forever: abort them.
            for ws in list(self._server.websockets):
                ws.transport.abort()
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not me]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=3.0)

    def stop(self, timeout=10.0):
        lt = self._lt
        if lt is None:
            return
        try:
            lt.call(self._shutdown(), timeout)
        except Exception as e:  # noqa: BLE001 - the loop is stopped below anyway
            log.warning("WsUpstream shutdown: %r", e)
        lt.stop(timeout)
        self._lt = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- behaviour -------------------------------------------------------------
    async def _process_request(self, path, request_headers):
        import http

        p = path.split("?", 1)[0]
        rec = {"path": path, "headers": [(k.lower(), v) for k, v in request_headers.raw_items()]}
        with self._lock:
            self.requests.append(rec)
        if p == "/not-ws":
            return http.HTTPStatus.FORBIDDEN, [("X-Backend", self.name)], b"backend says no\n"
        if p == "/plain":
            body = json.dumps(rec).encode()
            return http.HTTPStatus.OK, [("X-Backend", self.name), ("Content-Type", "application/json")], body
        if p not in WS_PATHS and not self.echo_any_path:
            return http.HTTPStatus.NOT_FOUND, [("X-Backend", self.name)], b"no such path\n"
        return None

    async def _echo(self, ws, who=None):
        """Echo every message; with `who` set, the text "who" gets `who`."""
        async for msg in ws:
            await ws.send(who if who is not None and msg == "who" else msg)

    async def _handler(self, ws):
        import websockets.exceptions

        path = ws.path.split("?", 1)[0]
        with self._lock:
            self.opened += 1
        try:
            if path == "/hello":
                await ws.send("hello")
                await self._echo(ws)
            elif path == "/close-me":
                await ws.recv()
                await ws.close(4001, "bye")
            elif path == "/echo":
                await self._echo(ws)
            else:  # any other path (echo_any_path)
                await self._echo(ws, who=ws.path)
        except websockets.exceptions.ConnectionClosed:
            pass
        except Exception as e:  # noqa: BLE001 - recorded for the test
            self.errors.append(e)
            raise
        finally:
            if ws.closed:
                with self._lock:
                    self.closes.append({"path": path, "code": ws.close_code, "reason": ws.close_reason})

    # -- for tests -------------------------------------------------------------
    def requests_for(self, path):
        with self._lock:
            return [r for r in self.requests if r["path"] == path]

    def wait_close(self, path, timeout=WS_GUARD):
        return wait_until(lambda: [c for c in list(self.closes) if c["path"] == path], timeout=timeout,
                          what=f"the ws backend to see {path} closed")[0]


class WsClient:
    """See the module docstring. The handshake is done by the constructor
    (bounded by `timeout`, like every other operation); no compression, no
    pings. close() -> (code, reason) as the client saw them; idempotent."""

    def __init__(self, url, timeout=WS_GUARD, extra_headers=None):
        self.url = url
        self.timeout = timeout
        self._lt = LoopThread("WsClient")
        try:
            self.ws = self._lt.call(self._connect(extra_headers), timeout)
        except BaseException:
            self._lt.stop()
            self._lt = None
            raise
        self.response_headers = list(self.ws.response_headers.raw_items())

    async def _connect(self, extra_headers):
        import websockets

        # Created inside the loop's thread: websockets binds to the running loop.
        return await websockets.connect(
            self.url, compression=None, ping_interval=None, close_timeout=2, open_timeout=self.timeout,
            extra_headers=extra_headers,
        )

    def send(self, msg):
        self._lt.call(self.ws.send(msg), self.timeout)

    def recv(self):
        return self._lt.call(self.ws.recv(), self.timeout)

    def echo(self, msg):
        self.send(msg)
        got = self.recv()
        assert got == msg, f"websocket echo: sent {msg[:64]!r} ({len(msg)}), got {got[:64]!r} ({len(got)})"
        return got

    def close(self, code=1000):
        if self._lt is None:
            return None
        try:
            self._lt.call(self.ws.close(code), self.timeout)
            return self.ws.close_code, self.ws.close_reason
        finally:
            self._lt.stop()
            self._lt = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def header_values(headers, name):
    """All values of `name` in a [(lower-case name, value)] list."""
    return [v for k, v in headers if k == name]


def header_tokens(headers, name):
    """The comma-separated tokens of every `name` header, lower case."""
    return [t.strip().lower() for v in header_values(headers, name) for t in v.split(",") if t.strip()]


# -- the raw upgrade upstream ---------------------------------------------------------------

PIPE_PATHS = ("/echo", "/greet", "/source", "/hold", "/reset", "/observe", "/slow101")


class RawUpgradeBackend(TCPServer):
    """See the module docstring."""

    def __init__(self, name="raw"):
        super().__init__(name=name)
        self.name = name
        self.requests = []
        self.events = []
        self.progress = {}  # conn id -> bytes sent by /source
        self._release = threading.Event()
        self._ids = itertools.count(1)

    def release(self):
        self._release.set()

    def stop(self, join_timeout=10.0):
        self._release.set()
        super().stop(join_timeout)

    def _event(self, **kw):
        with self._lock:
            self.events.append(kw)

    def wait_event(self, what, path=None, timeout=WS_GUARD):
        def find():
            with self._lock:
                return [e for e in self.events if e["what"] == what and (path is None or e["path"] == path)]

        return wait_until(find, timeout=timeout, what=f"raw backend event {what!r} on {path}")[0]

    def requests_for(self, path):
        with self._lock:
            return [r for r in self.requests if r["path"] == path]

    @staticmethod
    def _read_head(conn, buf):
        """One request head from conn (buf: bytes already read). None at a
        clean EOF before any byte."""
        for _ in range(10_000):
            i = buf.find(b"\r\n\r\n")
            if i >= 0:
                head = bytes(buf[:i])
                del buf[: i + 4]
                return head
            assert len(buf) < 256 * 1024, "request head too long"
            b = conn.recv(65536)
            if not b:
                assert not buf, f"EOF inside a request head: {bytes(buf[:200])!r}"
                return None
            buf += b
        raise AssertionError("no request head")

    def handle(self, conn):
        conn.settimeout(BACKEND_IO_TIMEOUT)
        cid = next(self._ids)
        buf = bytearray()
        for _ in range(1000):  # keep-alive: requests on this connection
            head = self._read_head(conn, buf)
            if head is None:
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ", 2)
            headers = []
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers.append((k.strip().lower(), v.strip()))
            path, _, query = target.partition("?")
            params = urllib.parse.parse_qs(query)
            rec = {"conn": cid, "method": method, "target": target, "path": path, "version": version,
                   "headers": headers}
            with self._lock:
                self.requests.append(rec)
            cl = header_values(headers, "content-length")
            assert not header_values(headers, "transfer-encoding"), f"unexpected request body framing: {headers}"
            if cl and int(cl[0]):
                need = int(cl[0])
                for _ in range(100_000):
                    if len(buf) >= need:
                        break
                    b = conn.recv(65536)
                    assert b, "EOF inside a request body"
                    buf += b
                del buf[:need]
            upgrade = header_values(headers, "upgrade")
            if path == "/plain" or (path not in PIPE_PATHS) or not upgrade:
                if path == "/deny":
                    status, body = "426 Upgrade Required", b"raw backend wants something else\n"
                elif path == "/plain":
                    status, body = "200 OK", json.dumps(rec).encode()
                else:
                    status, body = "404 Not Found", b"no such path or no upgrade\n"
                conn.sendall((f"HTTP/1.1 {status}\r\nX-Backend: {self.name}\r\nContent-Length: {len(body)}\r\n"
                              f"\r\n").encode() + body)
                continue
            resp = f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: {upgrade[0]}\r\nConnection: Upgrade\r\n"
            key = header_values(headers, "sec-websocket-key")
            if key:
                resp += f"Sec-WebSocket-Accept: {accept_for(key[0])}\r\n"
            resp += f"X-Backend: {self.name}\r\n\r\n"
            resp = resp.encode()
            getattr(self, "_pipe_" + path[1:])(conn, cid, path, params, resp, buf)
            return

    # -- tunnel behaviours (resp: the 101 to send; early: bytes after the request head)
    def _read_until_end(self, conn, h=None, keep_limit=0):
        """Read until EOF or reset: (how, n, kept bytes)."""
        n = 0
        kept = bytearray()
        for _ in range(100_000_000):
            try:
                b = conn.recv(1 << 20)
            except ConnectionResetError:
                return "rst", n, bytes(kept)
            if not b:
                return "eof", n, bytes(kept)
            n += len(b)
            if h is not None:
                h.update(b)
            if len(kept) < keep_limit:
                kept += b[: keep_limit - len(kept)]
        raise AssertionError("endless stream")

    def _echo_loop(self, conn, cid, path, early):
        h = hashlib.sha256()
        n = 0
        if early:
            conn.sendall(bytes(early))
            h.update(early)
            n += len(early)
        for _ in range(100_000_000):
            try:
                b = conn.recv(256 * 1024)
            except ConnectionResetError:
                self._event(what="rst", path=path, conn=cid, n=n)
                return
            if not b:
                break
            conn.sendall(b)
            h.update(b)
            n += len(b)
        self._event(what="eof", path=path, conn=cid, n=n, sha256=h.hexdigest())
        conn.sendall(TRAILER)
        conn.shutdown(socket.SHUT_WR)
        # Wait (bounded) for the client's close so the close is orderly.
        self._read_until_end(conn)

    def _pipe_echo(self, conn, cid, path, params, resp, early):
        conn.sendall(resp)
        self._echo_loop(conn, cid, path, early)

    def _pipe_greet(self, conn, cid, path, params, resp, early):
        conn.sendall(resp + GREETING)  # one write: the greeting follows the 101 at once
        self._echo_loop(conn, cid, path, early)

    def _pipe_source(self, conn, cid, path, params, resp, early):
        total = int(params.get("n", ["1048576"])[0])
        seed = int(params.get("seed", ["7"])[0])
        conn.sendall(resp)
        self.progress[cid] = 0
        h = hashlib.sha256()
        for c in det_chunks(total, seed, chunk=256 * 1024):
            conn.sendall(c)
            h.update(c)
            self.progress[cid] += len(c)
        self._event(what="sent", path=path, conn=cid, n=total, sha256=h.hexdigest())
        conn.shutdown(socket.SHUT_WR)
        how, n, kept = self._read_until_end(conn, keep_limit=1 << 20)
        self._event(what="after_fin", path=path, conn=cid, how=how, n=len(early) + n, data=bytes(early) + kept)

    def _pipe_hold(self, conn, cid, path, params, resp, early):
        conn.sendall(resp)
        self._event(what="holding", path=path, conn=cid)
        if not self._release.wait(BACKEND_IO_TIMEOUT):
            raise TimeoutError("raw backend /hold: no release()")
        h = hashlib.sha256(bytes(early))
        how, n, _ = self._read_until_end(conn, h)
        self._event(what=how, path=path, conn=cid, n=len(early) + n, sha256=h.hexdigest())

    def _pipe_reset(self, conn, cid, path, params, resp, early):
        conn.sendall(resp)
        got = bytearray(early)
        for _ in range(10_000):
            if b"go" in got:
                break
            b = conn.recv(65536)
            if not b:
                self._event(what="eof-before-go", path=path, conn=cid)
                return
            got += b
        self._event(what="resetting", path=path, conn=cid)
        reset_close(conn)

    def _pipe_slow101(self, conn, cid, path, params, resp, early):
        ms = int(params.get("ms", ["3000"])[0])
        self._event(what="delaying", path=path, conn=cid)
        self._stop.wait(ms / 1000.0)  # the delay under test (bounded; cut short by stop())
        try:
            conn.sendall(resp)
        except (BrokenPipeError, ConnectionResetError):
            self._event(what="gone-before-101", path=path, conn=cid)
            return
        self._echo_loop(conn, cid, path, early)

    def _pipe_observe(self, conn, cid, path, params, resp, early):
        conn.sendall(resp)
        self._event(what="open", path=path, conn=cid)
        how, n, kept = self._read_until_end(conn, keep_limit=1 << 16)
        self._event(what=how, path=path, conn=cid, n=len(early) + n, data=bytes(early) + kept)


# -- HTTP/1.1 upgrade client ------------------------------------------------------------------


def upgrade_request(path, token="websocket", key=SAMPLE_KEY, host="meshd.test", extra=(), connection="Upgrade"):
    """An upgrade request as bytes; WebSocket ones carry the key and version."""
    headers = [f"Connection: {connection}", f"Upgrade: {token}"]
    if token.lower() == "websocket":
        headers += [f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    return request_bytes("GET", path, host=host, headers=list(headers) + list(extra))


class Tunnel:
    """The client end of an HTTP/1.1 connection after a 101: `conn` is the
    H1Conn (its buffer holds the bytes that came with the 101)."""

    def __init__(self, conn, status, headers):
        self.conn = conn
        self.sock = conn.sock
        self.status = status
        self.headers = headers

    def header(self, name):
        v = header_values(self.headers, name)
        return v[0] if v else None

    def send(self, data):
        self.conn.send(data)

    def recv_exact(self, n, timeout=WS_GUARD):
        deadline = time.monotonic() + timeout
        return self.conn._exact(n, deadline, f"{n} tunnelled bytes")

    def recv_hash(self, n, timeout=WS_GUARD):
        """Read exactly n bytes without keeping them: their sha256 hex."""
        h = hashlib.sha256()
        self.conn._exact(n, time.monotonic() + timeout, f"{n} tunnelled bytes", sink=h.update)
        return h.hexdigest()

    def read_to_end(self, timeout=WS_GUARD, limit=1 << 30):
        """Everything until the peer closes: (how "eof" | "rst", bytes)."""
        deadline = time.monotonic() + timeout
        c = self.conn
        for _ in range(10_000_000):
            if len(c.buf) > limit:
                raise AssertionError(f"more than {limit} bytes")
            if not c._fill(deadline, "the tunnel to end"):
                break
        data = bytes(c.buf)
        c.buf.clear()
        return c.eof, data

    def shutdown_wr(self):
        self.sock.shutdown(socket.SHUT_WR)

    def abort(self):
        self.conn.abort()

    def close(self):
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def raw_upgrade(port, path, token="websocket", key=SAMPLE_KEY, extra=(), conn=None, timeout=WS_GUARD,
                connection="Upgrade"):
    """Send an upgrade request (on `conn`, or a new connection to `port`).
    101: returns (Tunnel, None). Anything else: (None, H1Response) with the
    whole response read, the connection in response.conn."""
    c = conn or H1Conn(port, timeout=timeout)
    c.send(upgrade_request(path, token=token, key=key, extra=extra, connection=connection))
    version, status, reason, headers, raw = c.read_head()
    if status == 101:
        return Tunnel(c, status, headers), None
    c.buf[0:0] = raw  # let the strict reader parse the whole response
    r = c.read_response()
    r.conn = c
    return None, r


# -- WebSocket frames by hand (RFC 6455 §5) ----------------------------------------------------

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


def _mask(data, key):
    n = len(data)
    if n == 0:
        return b""
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def ws_frame(opcode, payload=b"", mask=True, fin=True, key=None):
    """One frame; a client's (mask=True) is masked with `key` (random if None)."""
    if isinstance(payload, str):
        payload = payload.encode()
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack(">BB", b0, mbit | n)
    elif n < 65536:
        head = struct.pack(">BBH", b0, mbit | 126, n)
    else:
        head = struct.pack(">BBQ", b0, mbit | 127, n)
    if not mask:
        return head + payload
    key = key or os.urandom(4)
    return head + key + _mask(payload, key)


def ws_close_payload(code, reason=""):
    return struct.pack(">H", code) + reason.encode()


class WsFrames:
    """Incremental frame parser: feed(bytes) -> complete frames as
    (fin, opcode, payload, masked) with payloads unmasked."""

    def __init__(self):
        self.buf = bytearray()

    def feed(self, data):
        self.buf += data
        out = []
        for _ in range(1_000_000):
            b = self.buf
            if len(b) < 2:
                break
            fin, op = bool(b[0] & 0x80), b[0] & 0x0F
            masked, n = bool(b[1] & 0x80), b[1] & 0x7F
            pos = 2
            if n == 126:
                if len(b) < 4:
                    break
                n = struct.unpack(">H", b[2:4])[0]
                pos = 4
            elif n == 127:
                if len(b) < 10:
                    break
                n = struct.unpack(">Q", b[2:10])[0]
                pos = 10
            key = None
            if masked:
                if len(b) < pos + 4:
                    break
                key = bytes(b[pos : pos + 4])
                pos += 4
            if len(b) < pos + n:
                break
            payload = bytes(b[pos : pos + n])
            del b[: pos + n]
            if masked:
                payload = _mask(payload, key)
            out.append((fin, op, payload, masked))
        return out


# -- HTTP/2 extended CONNECT client (RFC 8441) -------------------------------------------------


class H2Stream:
    def __init__(self, sid):
        self.sid = sid
        self.headers = None  # [(name, value)] of the final response
        self.informational = []
        self.data = bytearray()
        self.ended = False  # END_STREAM received
        self.reset = None  # RST_STREAM error code received
        self.trailers = None

    def header(self, name):
        if self.headers is None:
            return None
        v = [x for k, x in self.headers if k == name]
        return v[0] if v else None

    @property
    def status(self):
        s = self.header(":status")
        return None if s is None else int(s)

    def __repr__(self):
        return (f"H2Stream(sid={self.sid}, headers={self.headers}, data={bytes(self.data[:120])!r}"
                f"{'...' if len(self.data) > 120 else ''} ({len(self.data)} B), ended={self.ended}, "
                f"reset={self.reset}, trailers={self.trailers})")


class H2ConnectClient(SocketOwner):
    """One h2c connection (python3-h2, client side, outbound header checks
    off so that :protocol goes out). remote_settings: what meshd's SETTINGS
    frames said ({code: value}); streams: {sid: H2Stream}."""

    CONN_WINDOW = 16 * 1024 * 1024

    def __init__(self, port, timeout=WS_GUARD):
        from env.clients import h2_client_session

        self.timeout = timeout
        self.sock, self.conn = h2_client_session(port, "127.0.0.1", timeout, False, self.CONN_WINDOW)
        self.remote_settings = {}
        self.settings_frames = 0
        self.streams = {}
        self.terminated = None
        self.eof = False


    def _flush(self):
        out = self.conn.data_to_send()
        if out:
            self.sock.settimeout(self.timeout)
            self.sock.sendall(out)

    def _pump(self, deadline):
        """Read once (until deadline) and handle the events; False at EOF."""
        import h2.events

        if self.eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            return True
        self.sock.settimeout(left)
        try:
            b = self.sock.recv(1 << 20)
        except socket.timeout:
            return True
        except ConnectionResetError:
            self.eof = True
            return False
        if not b:
            self.eof = True
            return False
        for ev in self.conn.receive_data(b):
            if isinstance(ev, h2.events.RemoteSettingsChanged):
                self.settings_frames += 1
                for code, ch in ev.changed_settings.items():
                    self.remote_settings[int(code)] = ch.new_value
            elif isinstance(ev, h2.events.ResponseReceived):
                self.streams[ev.stream_id].headers = [(_s(k), _s(v)) for k, v in ev.headers]
            elif isinstance(ev, h2.events.InformationalResponseReceived):
                self.streams[ev.stream_id].informational.append([(_s(k), _s(v)) for k, v in ev.headers])
            elif isinstance(ev, h2.events.TrailersReceived):
                self.streams[ev.stream_id].trailers = [(_s(k), _s(v)) for k, v in ev.headers]
            elif isinstance(ev, h2.events.DataReceived):
                self.streams[ev.stream_id].data += ev.data
                if ev.flow_controlled_length:
                    try:
                        self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    except Exception:  # noqa: BLE001 - stream already closed: connection window only
                        pass
            elif isinstance(ev, h2.events.StreamEnded):
                self.streams[ev.stream_id].ended = True
            elif isinstance(ev, h2.events.StreamReset):
                if ev.stream_id in self.streams:
                    self.streams[ev.stream_id].reset = int(ev.error_code)
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.terminated = ev
        self._flush()
        return True

    def wait(self, pred, timeout=None, what="condition"):
        """Pump until pred() is truthy; fails on timeout or connection end."""
        deadline = time.monotonic() + (timeout or self.timeout)
        for _ in range(1_000_000):
            v = pred()
            if v:
                return v
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out waiting for {what}; streams: {self.streams}")
            if not self._pump(deadline):
                v = pred()
                if v:
                    return v
                raise AssertionError(f"connection ended while waiting for {what}; "
                                     f"terminated={self.terminated}; streams: {self.streams}")
        raise AssertionError(f"no {what}")

    def wait_settings(self):
        return self.wait(lambda: self.settings_frames > 0, what="meshd's SETTINGS")

    def request(self, path, method="CONNECT", protocol="websocket", authority="meshd.test", extra=(),
                end_stream=False):
        """Open a stream: an extended CONNECT (protocol set) or any request."""
        headers = [(":method", method)]
        if protocol is not None:
            headers.append((":protocol", protocol))
        headers += [(":scheme", "http"), (":path", path), (":authority", authority)]
        if protocol == "websocket":
            headers.append(("sec-websocket-version", "13"))
        headers += list(extra)
        sid = self.conn.get_next_available_stream_id()
        self.streams[sid] = H2Stream(sid)
        self.conn.send_headers(sid, headers, end_stream=end_stream)
        self._flush()
        return self.streams[sid]

    def response(self, st, timeout=None):
        self.wait(lambda: st.headers is not None or st.reset is not None or st.ended, timeout,
                  what=f"the response on stream {st.sid}")
        return st

    def send(self, st, data, end_stream=False, timeout=None):
        """DATA on the stream, within the flow-control windows."""
        deadline = time.monotonic() + (timeout or self.timeout)
        view = memoryview(bytes(data))
        for _ in range(10_000_000):
            if not view:
                break
            assert st.reset is None, f"stream reset while sending: {st}"
            win = min(self.conn.local_flow_control_window(st.sid), self.conn.max_outbound_frame_size)
            if win <= 0:
                if time.monotonic() >= deadline:
                    raise AssertionError(f"no flow-control window for {timeout or self.timeout}s: {st}")
                if not self._pump(deadline):
                    raise AssertionError(f"connection ended while sending: {st}")
                continue
            n = min(win, len(view))
            self.conn.send_data(st.sid, bytes(view[:n]))
            view = view[n:]
            self._flush()
        if end_stream:
            self.conn.end_stream(st.sid)
            self._flush()

    def end(self, st):
        self.conn.end_stream(st.sid)
        self._flush()


def _s(v):
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else v


# -- fixture -----------------------------------------------------------------------------------


class WsService:
    """ws: the WsUpstream; raw: the RawUpgradeBackend; meshd: the Meshd.
    Ports: port (HTTP1 listener ws_h1), auto_port (AUTO, ws_auto), h2c_port
    (H2C, ws_h2c), idle_port (HTTP1 with stream_idle_timeout_ms, ws_idle)."""

    LISTENERS = {"h1": "ws_h1", "auto": "ws_auto", "h2c": "ws_h2c", "idle": "ws_idle"}

    def __init__(self, ws, raw, meshd):
        self.ws = ws
        self.raw = raw
        self.meshd = meshd
        v = meshd.values
        self.ports = {"h1": v["listen_port"], "auto": v["auto_port"], "h2c": v["h2c_port"], "idle": v["idle_port"]}
        self.port = self.ports["h1"]
        self.auto_port = self.ports["auto"]
        self.h2c_port = self.ports["h2c"]
        self.idle_port = self.ports["idle"]

    def url(self, path, listener="h1"):
        return f"ws://127.0.0.1:{self.ports[listener]}{path}"

    def stat(self, name, listener="h1"):
        """A counter of one listener ("h1", "auto", ... or the listener's name);
        None when the series is absent."""
        return self.meshd.stat(name, listener=self.LISTENERS.get(listener, listener))

    def wait_stat(self, name, listener, want, timeout=WS_GUARD):
        """Poll until the counter equals `want`; fails with the last value."""
        last = []

        def ok():
            last[:] = [self.stat(name, listener)]
            return last[0] == want

        try:
            wait_until(ok, timeout=timeout, what=f"{name}{{listener={listener}}} == {want}")
        except AssertionError:
            raise AssertionError(f"{name}{{listener={self.LISTENERS.get(listener, listener)}}} is "
                                 f"{last[0] if last else None}, want {want}") from None


@pytest.fixture
def ws_service(meshd, backends):
    """Factory: ws_service(route_timeout_ms=300, stream_idle_ms=0,
    concurrency=2, **values) -> WsService: a fresh WsUpstream and
    RawUpgradeBackend, and meshd from bundles/ws_basic in front of them
    ({h2_port}, the HTTP2 cluster's endpoint, refuses connections)."""
    made = []

    def make(route_timeout_ms=300, stream_idle_ms=0, concurrency=2, **values):
        ws = WsUpstream().start()
        made.append(ws)
        raw = RawUpgradeBackend().start()
        made.append(raw)
        values.setdefault("ws_port", ws.port)
        values.setdefault("raw_port", raw.port)
        values.setdefault("h2_port", backends.refusing().port)
        m = meshd("ws_basic", concurrency=concurrency, drain_timeout=3, route_timeout_ms=route_timeout_ms,
                  stream_idle_ms=stream_idle_ms, **values)
        return WsService(ws, raw, m)

    yield make
    for b in reversed(made):
        b.stop()
