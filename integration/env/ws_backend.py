# SPDX-License-Identifier: Apache-2.0
"""A WebSocket echo server and a WebSocket client usable from plain
(synchronous) test code, both on python3-websockets (Debian's 10.x, asyncio
only): each runs its own asyncio loop in a daemon thread.

    b = WsBackend(name="ws").start()     # ws://127.0.0.1:b.port/ANY
    b.handshakes   [{"path", "headers": [(name, value)], "conn": n}] per
                   accepted upgrade, in order
    b.messages     every message received, in order: (conn, str | bytes)
    b.stop()

  The server echoes each message back unchanged (text as text, binary as
  binary), except the text message "who" (answered with the handshake's
  path) and "close:CODE" (closes with CODE). No compression, no pings.

    c = WsClient("ws://127.0.0.1:PORT/ws/x", timeout=10)   # handshake done
    c.send(b"..." or "..."); c.recv() -> str | bytes; c.echo(msg) -> msg back
    c.response_headers, c.close() -> (code, reason)

Every wait is bounded by `timeout`; stop()/close() are idempotent.
"""
import asyncio
import threading

import websockets

WS_TIMEOUT = 10.0  # hang guard for one operation


class _LoopThread:
    """An asyncio loop running in a daemon thread; run(coro) from any other
    thread waits (bounded) for the coroutine's result."""

    def __init__(self, name):
        self.loop = asyncio.new_event_loop()
        self._t = threading.Thread(target=self._main, name=name, daemon=True)
        self._t.start()

    def _main(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro, timeout=WS_TIMEOUT):
        fut = asyncio.run_coroutine_threadsafe(asyncio.wait_for(coro, timeout), self.loop)
        try:
            return fut.result(timeout + 1.0)
        except TimeoutError:  # concurrent.futures.TimeoutError is TimeoutError on 3.11
            fut.cancel()
            raise AssertionError(f"websocket operation not done after {timeout}s") from None

    def stop(self):
        if not self._t.is_alive():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._t.join(5.0)
        if not self._t.is_alive():
            self.loop.close()


class WsBackend:
    def __init__(self, name="ws", host="127.0.0.1"):
        self.name = name
        self.host = host
        self.port = None
        self.handshakes = []
        self.messages = []
        self.errors = []
        self._lt = None
        self._server = None
        self._conns = 0

    async def _handler(self, ws, path=None):
        self._conns += 1
        cid = self._conns
        self.handshakes.append({"conn": cid, "path": ws.path, "headers": list(ws.request_headers.raw_items())})
        try:
            async for msg in ws:
                self.messages.append((cid, msg))
                if msg == "who":
                    await ws.send(ws.path)
                elif isinstance(msg, str) and msg.startswith("close:"):
                    await ws.close(int(msg[6:]), "asked")
                    return
                else:
                    await ws.send(msg)
        except websockets.ConnectionClosed:
            pass
        except Exception as e:  # noqa: BLE001 - for the test to inspect
            self.errors.append(e)

    async def _start(self):
        self._server = await websockets.serve(
            self._handler, self.host, 0, compression=None, ping_interval=None, close_timeout=2
        )
        return self._server.sockets[0].getsockname()[1]

    async def _stop(self):
        self._server.close()
        await self._server.wait_closed()

    def start(self):
        self._lt = _LoopThread(f"WsBackend:{self.name}")
        self.port = self._lt.run(self._start())
        return self

    def stop(self):
        if self._lt is None:
            return
        try:
            if self._server is not None:
                self._lt.run(self._stop(), timeout=5.0)
        finally:
            self._lt.stop()
            self._lt = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class WsClient:
    def __init__(self, url, timeout=WS_TIMEOUT, extra_headers=None):
        self.url = url
        self.timeout = timeout
        self._lt = _LoopThread("WsClient")
        try:
            self.ws = self._lt.run(self._connect(extra_headers), timeout)
        except BaseException:
            self._lt.stop()
            raise
        self.response_headers = list(self.ws.response_headers.raw_items())

    async def _connect(self, extra_headers):
        # Created inside the loop's thread: websockets binds to the running loop.
        return await websockets.connect(
            self.url, compression=None, ping_interval=None, close_timeout=2, open_timeout=self.timeout,
            extra_headers=extra_headers,
        )

    def send(self, msg):
        self._lt.run(self.ws.send(msg), self.timeout)

    def recv(self):
        return self._lt.run(self.ws.recv(), self.timeout)

    def echo(self, msg):
        self.send(msg)
        got = self.recv()
        assert got == msg, f"websocket echo: sent {msg[:64]!r} ({len(msg)}), got {got[:64]!r} ({len(got)})"
        return got

    def close(self, code=1000):
        if self._lt is None:
            return None
        try:
            self._lt.run(self.ws.close(code), self.timeout)
            return self.ws.close_code, self.ws.close_reason
        finally:
            self._lt.stop()
            self._lt = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
