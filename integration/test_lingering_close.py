# SPDX-License-Identifier: Apache-2.0
"""No lost bytes when meshd closes a downstream connection it wrote to
(net/linger.h). A socket closed while the peer still sends (a PING, a
pipelined request) answers those bytes with RST, and RST throws away what
meshd's kernel had not sent yet: the end of the response. So meshd closes
lingering: close_notify, FIN, then it reads and drops until the client's EOF
(bounded), and only then closes.

Each test, on an AUTO listener in plaintext and over TLS:
  1. asks for a response of SIZE bytes on a client socket with a small
     receive buffer, reads HEAD bytes of it and stops reading, so that the
     rest waits in meshd's send queue;
  2. makes meshd close the connection: SIGTERM (drain), the HTTP/2 idle
     timeout (GOAWAY), HTTP/1.1 `Connection: close`, a 400 local reply to a
     pipelined bad request;
  3. waits until meshd finished the response (access log) and closed the
     connection (downstream_cx_active 0, or meshd gone);
  4. sends more (a PING; a pipelined request): bytes meshd will not read;
  5. reads everything: every byte of every finished response, then EOF.
Before the lingering close step 4 drew an RST and step 5 lost the end of
the response. Step 3 reads slowly should meshd's send queue not take the
whole response (small queues on a busy machine): the wait stays bounded."""
import http.client
import signal
import socket
import time

import pytest

from env.clients import RawH2, wait_until
from env.h1 import H1Conn, request_bytes
from env.h2_backend import det_body
from env.tls import (  # noqa: F401 - pki is a fixture
    HANG_GUARD,
    client_context,
    cluster,
    downstream_tls,
    http_bundle,
    http_listener,
    log_events,
    pki,
)

pytestmark = pytest.mark.proxy_only

LISTENER = "ds"
SIZE = 512 * 1024
HEAD = 64 * 1024
RCVBUF = 16 * 1024
QUIET_S = 3.0  # how long the client reads nothing before it reads slowly


class Svc:
    def __init__(self, m, ctx):
        self.m = m
        self.port = m.values["listen_port"]
        self.ctx = ctx

    def open(self, alpn):
        """A client socket with a small receive buffer (TLS when the listener is)."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=HANG_GUARD)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        if self.ctx is None:
            return s
        return client_context(ca=self.ctx, alpn=[alpn]).wrap_socket(s, server_hostname="localhost")

    def closed(self):
        """meshd closed the client's connection (or exited)."""
        if not self.m.alive():
            return True
        try:
            return self.m.stat("meshd_listener_downstream_cx_active", listener=LISTENER) == 0
        except (OSError, http.client.HTTPException):
            return not self.m.alive()

    def finished(self, path):
        return bool(log_events(self.m, "http_access", path=path, status=200))


@pytest.fixture(params=[False, True], ids=["plain", "tls"])
def svc(request, meshd, h2_backend, pki, ports):
    """Factory: svc(hcm_extra="") -> Svc: an AUTO listener `ds` (TLS with
    the `tls` param) in front of a fresh H2Backend."""

    def make(hcm_extra=""):
        b = h2_backend()
        tls = downstream_tls(pki.meshd, None, "NONE") if request.param else ""
        text = http_bundle([http_listener(LISTENER, "{listen_port}", "AUTO", tls, hcm_extra)],
                           [cluster("app", "{upstream_port}")])
        m = meshd(text, listen_port=ports.get(), upstream_port=b.port, concurrency=1)
        return Svc(m, pki.ca.bundle if request.param else None)

    return make


def _wait_closed(svc, path, read_some):
    """Until meshd finished `path` and closed the connection: first without
    reading (the rest of the response waits in meshd's send queue), then
    reading slowly, should that queue not hold it all."""
    start = time.monotonic()

    def done():
        if svc.finished(path) and svc.closed():
            return True
        if time.monotonic() - start > QUIET_S:
            read_some()
        return False

    wait_until(done, timeout=HANG_GUARD, what=f"meshd to finish {path} and close")


def _send_late(sock, data):
    """Bytes for a socket meshd has closed (the old code answered them with RST)."""
    try:
        sock.sendall(data)
    except OSError:
        pass


# -- HTTP/2 -------------------------------------------------------------------------------------


def _h2_request(svc):
    path = f"/big?size={SIZE}"
    c = RawH2(svc.port, sock=svc.open("h2"), settings=((4, 16 << 20),))  # INITIAL_WINDOW_SIZE
    c.send(c.window_update(0, 64 << 20))
    c.send(c.headers(1, [(":method", "GET"), (":scheme", "https" if svc.ctx else "http"), (":path", path),
                         (":authority", "localhost")]))
    wait_until(lambda: c.read(0.1) is not None and _h2_body_len(c) >= HEAD, timeout=HANG_GUARD,
               what=f"{HEAD} bytes of the response")
    return c, path


def _h2_body_len(c):
    return sum(len(f.payload) for f in c.frames if f.type == RawH2.DATA and f.stream == 1)


def _h2_read_some(c):
    c.sock.settimeout(0.05)
    try:
        data = c.sock.recv(4096)
    except (socket.timeout, OSError):
        return
    c._buf += data
    c._parse()


def _h2_finish(svc, c, path):
    _wait_closed(svc, path, lambda: _h2_read_some(c))
    _send_late(c.sock, c.ping())
    how = c.read_to_end(timeout=HANG_GUARD)
    body = b"".join(f.payload for f in c.frames if f.type == RawH2.DATA and f.stream == 1)
    assert how == "eof" and len(body) == SIZE, (
        f"the connection ended with {how} after {len(body)} of {SIZE} bytes\n{svc.m.log_tail()}")
    assert body == det_body(SIZE)
    assert any(f.type == RawH2.GOAWAY for f in c.frames), c.frames[-5:]


def test_h2_drain_delivers_every_byte(svc):
    s = svc()
    c, path = _h2_request(s)
    s.m.signal(signal.SIGTERM)
    _h2_finish(s, c, path)
    c.close()
    rc = s.m.wait_exit(timeout=30)
    assert rc == 0, f"meshd exited {rc} after a SIGTERM drain\n{s.m.log_tail()}"
    assert "event=drain_complete" in s.m.log(), s.m.log_tail()
    s.m.check_sanitizers()


def test_h2_idle_timeout_goaway_delivers_every_byte(svc):
    s = svc(hcm_extra="idle_timeout_ms: 300")
    c, path = _h2_request(s)
    _h2_finish(s, c, path)
    c.close()


# -- HTTP/1.1 -----------------------------------------------------------------------------------


def _h1_exchange(svc, first, then=b""):
    path = f"/big?size={SIZE}"
    c = H1Conn(svc.port, sock=svc.open("http/1.1"))
    c.send(first + then)
    deadline = time.monotonic() + HANG_GUARD
    while len(c.buf) < HEAD:
        assert c._fill(deadline, f"{HEAD} bytes of the response"), c.eof

    def read_some():
        c.sock.settimeout(0.05)
        try:
            c.buf += c.sock.recv(4096)
        except (socket.timeout, OSError):
            pass

    _wait_closed(svc, path, read_some)
    _send_late(c.sock, request_bytes("GET", "/late"))  # pipelined: never to be read
    r = c.read_response()
    assert r.status == 200 and r.length == SIZE and r.body == det_body(SIZE), (r.status, r.length, c.eof)
    return c


def test_h1_connection_close_delivers_every_byte(svc):
    s = svc()
    c = _h1_exchange(s, request_bytes("GET", f"/big?size={SIZE}", headers=["Connection: close"]))
    assert c.expect_closed() == "eof"
    c.close()


def test_h1_local_reply_then_close_delivers_every_byte(svc):
    s = svc()
    bad = b"GET /bad HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n"
    c = _h1_exchange(s, request_bytes("GET", f"/big?size={SIZE}"), then=bad)
    r = c.read_response()
    assert r.status == 400, r
    assert c.expect_closed() == "eof"
    c.close()
