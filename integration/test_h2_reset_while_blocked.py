# SPDX-License-Identifier: Apache-2.0
"""A stream meshd lets go while its next DATA frame waits for a full
downstream socket fails that stream only, not the connection.

meshd hands DATA to nghttp2 without copying (NO_COPY): when the socket is
full, the frame waits inside nghttp2 (WOULDBLOCK). Here the client opens a
large download on a route with a short timeout (stream A) and a small,
slightly delayed one with no timeout (stream B) on the same connection, and
reads nothing: its socket (small SO_RCVBUF) and meshd's fill up. A's
deadline fires while A's next frame waits; then the client reads. A ends
with RST_STREAM (or at least never completes), B gets its full 200, and the
connection goes on (a third request on it is answered). Before the fix the
waiting frame's send callback found A gone and failed the whole session:
meshd dropped the connection and B with it."""
import socket
import time

import pytest

from env.clients import H2MultiClient, connect
from env.h2_backend import det_body_sha256

pytestmark = pytest.mark.proxy_only

ROUTE_TIMEOUT_MS = 400
BIG = 64 * 1024 * 1024  # far more than every buffer between the upstream and the client
SMALL = 3000
B_DELAY_MS = 800  # B is still open (unanswered) when A's deadline fires
BLOCKED_FOR = 1.5  # the client reads nothing this long (past A's deadline)
CLIENT_RCVBUF = 4096
GUARD = 8.0


class BlockedClient(H2MultiClient):
    """An H2MultiClient whose socket has a small receive buffer (set before
    connect, so the TCP window stays small) and whose stream and connection
    windows are huge: only the socket stops meshd, never flow control."""

    def __init__(self, port, timeout=GUARD):
        import h2.config
        import h2.connection
        import h2.settings

        self.timeout = timeout
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CLIENT_RCVBUF)
        s.settimeout(timeout)
        try:
            s.connect(("127.0.0.1", port))
        except Exception:
            s.close()
            raise
        self.sock = s
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8", validate_inbound_headers=False)
        self.conn = h2.connection.H2Connection(config=cfg)
        self.conn.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(2**31 - 1 - 65535)
        self.sock.sendall(self.conn.data_to_send())
        self.closed = None
        self.keep_data = True
        self.responses = {}
        self.goaway = None
        self.eof = None
        self._pending = {}
        self.body_sent = {}
        self._inbuf = bytearray()


def _get(path):
    return [(":method", "GET"), (":scheme", "http"), (":path", path), (":authority", "127.0.0.1")]


def test_stream_let_go_while_its_data_waits_for_the_socket_fails_only_that_stream(h2_service):
    b, port = h2_service(route_timeout_ms=ROUTE_TIMEOUT_MS)
    with BlockedClient(port) as c:
        a = c.start(_get(f"/slow/a?size={BIG}"))
        bb = c.start(_get(f"/plain/b?size={SMALL}&delay_ms={B_DELAY_MS}"))
        # Read nothing: meshd's writes to this connection back up.
        time.sleep(BLOCKED_FOR)
        recs = b.streams_for("/slow/a")
        assert recs, "stream A never reached the upstream"
        sent_before = recs[0]["tx_bytes"]
        print(f"upstream sent {sent_before} bytes of A before the client read anything")
        assert sent_before < BIG, "A's whole body went out: the socket never filled"
        ra, rb = c.responses[a], c.responses[bb]

        # Now read: B must complete on this same connection.
        deadline = time.monotonic() + GUARD
        while time.monotonic() < deadline and not c.done(bb) and c.eof is None:
            c.pump(0.2)
        print(f"A: {ra!r} ({ra.length} bytes)\nB: {rb!r}\neof={c.eof} goaway={c.goaway}")
        assert c.eof is None and (c.goaway is None or c.goaway[0] == 0), (
            f"meshd ended the connection (eof={c.eof}, goaway={c.goaway}) when A's deadline fired while A's DATA "
            f"waited for the socket; B: {rb!r}")
        assert c.done(bb), f"B not done within {GUARD}s: {rb!r}"
        assert rb.ended and rb.reset is None and rb.goaway is None and rb.status == 200, rb
        assert rb.length == SMALL and rb.sha256() == det_body_sha256(SMALL), f"B: {rb.length} bytes, sha256 mismatch"

        # A was cut short by its deadline: a reset (or a body that never completes).
        c.wait(lambda: c.done(a), GUARD, what="the end of stream A")
        assert ra.status == 200 and ra.reset is not None and ra.length < BIG, ra

        # And the connection still serves requests.
        cc = c.start(_get(f"/plain/c?size={SMALL}"))
        c.wait(lambda: c.done(cc), GUARD, what="a third request after A's reset")
        rc = c.responses[cc]
        assert rc.ended and rc.status == 200 and rc.length == SMALL, rc
        assert c.eof is None and c.goaway is None
