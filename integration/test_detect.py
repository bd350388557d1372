# SPDX-License-Identifier: Apache-2.0
"""Protocol detection on AUTO listeners with a tcp_fallback
(bundles/detect_auto.textproto): by the first bytes, the HTTP/2 preface is
h2c, an HTTP/1 method token ("GET ") is HTTP/1.1, a TLS ClientHello and any
other bytes are proxied as raw TCP to the fallback cluster, and a client
that says nothing for detect_timeout_ms is taken for a server-first protocol
(SMTP, MySQL) and proxied to the fallback too, which then speaks first.
Without tcp_fallback: other bytes are HTTP/1.1 (400), a ClientHello is
closed, a silent client is left waiting.

Each connection is counted once per listener by what was decided:
meshd_listener_detect_{http1,http2,tls,tcp,timeout,none}_total.

The one-port test: gRPC, HTTP/1.1, WebSocket and a server-first protocol,
all open at once on one AUTO port. Also a wrk smoke test, and the bundle
validation rules of tcp_fallback / detect_timeout_ms / upgrade_types.

Backends used as the fallback (defined here, checked directly first in the
test_backend_* tests): EchoServer (env.backends), BannerServer (a
server-first protocol: a banner on accept, then echo), TlsEchoServer (TLS
with a self-signed certificate made at test time in the test's tmp dir).
"""
import re
import shutil
import socket
import ssl
import subprocess
import time

import pytest

from env.backends import TCPServer, EchoServer, RefusingPort, det_bytes
from env.clients import H2_PREFACE, RawH2, connect, echo_roundtrip, expect_closed, grpc_channel, recv_exact, wait_until
from env.h1 import H1Conn, request_bytes
from env.h2_backend import KNOWN_BODY, H2Backend
from env.meshd import meshctl
from env.ws_upgrade import WsClient, WsUpstream
from test_bundle_errors import LINE_RE, error_lines, run_meshd, write_pb

HANG = 10.0  # hang guard for one exchange; answers normally take milliseconds
SEGMENT_PAUSE = 0.2  # between two writes so that they arrive as two segments (not a readiness wait)
LONG_DETECT_MS = 2000  # detect timeout for tests whose clients speak first: no race with silence
BANNER = b"220 smtp.test ESMTP meshd-it\r\n"
TLS_NAME = "fallback.test"
KINDS = ("http1", "http2", "tls", "tcp", "timeout", "none")
LISTENERS = {"auto_in": "listen_port", "auto_plain": "plain_port", "h1_in": "h1_port"}


# -- fallback backends -------------------------------------------------------------


class BannerServer(EchoServer):
    """A server-first protocol: sends `banner` as soon as it accepts, then
    echoes until EOF (and half-closes back)."""

    def __init__(self, banner=BANNER, **kw):
        super().__init__(**kw)
        self.banner = banner

    def handle(self, conn):
        conn.settimeout(HANG * 3)
        conn.sendall(self.banner)
        super().handle(conn)


class TlsEchoServer(TCPServer):
    """TLS server (certificate and key files given): completes the handshake,
    records the SNI name the ClientHello carried (in `sni`), then echoes
    decrypted bytes until the client closes."""

    def __init__(self, certfile, keyfile, **kw):
        super().__init__(**kw)
        self.sni = []
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(certfile, keyfile)
        self.ctx.sni_callback = lambda _sock, name, _ctx: self.sni.append(name)

    def handle(self, conn):
        conn.settimeout(HANG * 3)
        tls = self.ctx.wrap_socket(conn, server_side=True)
        n = 0
        for _ in range(1_000_000):
            b = tls.recv(65536)
            if not b:
                break
            tls.sendall(b)
            n += len(b)
        self.results.put({"bytes": n, "version": tls.version()})


@pytest.fixture
def tls_cert(workdir):
    """A self-signed certificate for TLS_NAME, made now in the test's tmp dir
    (never committed): (certfile, keyfile)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not on PATH")
    cert, key = workdir / "fallback.crt", workdir / "fallback.key"
    r = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={TLS_NAME}",
         "-addext", f"subjectAltName=DNS:{TLS_NAME}"],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
    )
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return cert, key


def client_ctx(cert):
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def client_hello(server_hostname=TLS_NAME):
    """The bytes of a real ClientHello (Python's ssl module, memory BIOs)."""
    out = ssl.MemoryBIO()
    obj = ssl.create_default_context().wrap_bio(ssl.MemoryBIO(), out, server_hostname=server_hostname)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    data = out.read()
    assert data[:2] == b"\x16\x03" and len(data) > 100, data[:16]
    return data


class SplitTls:
    """A TLS client over a plain socket through memory BIOs, so the test
    controls how the ClientHello is written: its first `split` bytes, a
    pause of `pause` seconds, then the rest."""

    def __init__(self, sock, ctx, split, hostname=TLS_NAME, pause=SEGMENT_PAUSE):
        self.sock = sock
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_hostname=hostname)
        first = True
        deadline = time.monotonic() + HANG
        for _ in range(100):
            try:
                self.obj.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            data = self.out.read()
            if data and first:
                first = False
                sock.sendall(data[:split])
                time.sleep(pause)
                sock.sendall(data[split:])
            elif data:
                sock.sendall(data)
            if done:
                return
            self._pull(deadline, "the TLS handshake")
        raise AssertionError("TLS handshake: no end after 100 rounds")

    def _pull(self, deadline, what):
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        b = self.sock.recv(65536)
        if not b:
            raise AssertionError(f"connection closed during {what}")
        self.inc.write(b)

    def send(self, data):
        self.obj.write(data)
        self.sock.sendall(self.out.read())

    def recv_exact(self, n):
        got = bytearray()
        deadline = time.monotonic() + HANG
        for _ in range(10_000):
            try:
                got += self.obj.read(n - len(got))
            except ssl.SSLWantReadError:
                self._pull(deadline, "TLS application data")
                continue
            if len(got) >= n:
                return bytes(got)
        raise AssertionError(f"only {len(got)} of {n} bytes")


# -- the service under test --------------------------------------------------------


class DetectService:
    """meshd from bundles/detect_auto, its backends, and its counters."""

    def __init__(self, meshd, fallback, upstream, grpc, ws):
        self.meshd = meshd
        self.fallback = fallback
        self.upstream = upstream
        self.grpc = grpc
        self.ws = ws

    def port(self, listener="auto_in"):
        return self.meshd.values[LISTENERS[listener]]

    def counts(self, listener="auto_in"):
        st = self.meshd.stats()
        return {k: st.get(f"meshd_listener_detect_{k}_total", listener=listener) for k in KINDS}

    def expect_counts(self, listener="auto_in", within=HANG, **want):
        """Every detect counter of `listener` equals want (0 when not given);
        polled (closes are noticed asynchronously), bounded by `within` s."""
        full = {k: want.get(k, 0) for k in KINDS}
        last = {}

        def ok():
            last.update(self.counts(listener))
            return last == full

        try:
            wait_until(ok, timeout=within, what="detect counters")
        except AssertionError:
            raise AssertionError(f"detect counters of {listener}: got {last}, want {full}") from None


@pytest.fixture
def detect(meshd, grpc_backend, request):
    """Factory: detect(fallback="echo" | "banner" | "tls" | "refusing",
    detect_timeout_ms=0, grpc=False, ws=False, tls_cert=None, **values) ->
    DetectService. The /plain/ upstream is always a fresh H2Backend; the gRPC
    and WebSocket clusters point at fresh backends when asked, else at a
    refusing port."""
    started = []

    def add(b):
        started.append(b)
        return b.start()

    def make(fallback="echo", detect_timeout_ms=0, grpc=False, ws=False, tls_cert=None, concurrency=2, **values):
        if fallback == "echo":
            fb = add(EchoServer())
        elif fallback == "banner":
            fb = add(BannerServer())
        elif fallback == "tls":
            fb = add(TlsEchoServer(*tls_cert))
        else:
            fb = add(RefusingPort())
        up = add(H2Backend(name="h2"))
        gb = grpc_backend() if grpc else None
        wb = add(WsUpstream(echo_any_path=True)) if ws else None
        values.setdefault("fallback_port", fb.port)
        values.setdefault("upstream_port", up.port)
        values.setdefault("grpc_port", gb.port if gb else add(RefusingPort()).port)
        values.setdefault("ws_port", wb.port if wb else add(RefusingPort()).port)
        m = meshd("detect_auto", concurrency=concurrency, detect_timeout_ms=detect_timeout_ms, **values)
        return DetectService(m, fb, up, gb, wb)

    yield make
    for b in reversed(started):
        b.stop()


def _nodelay(sock):
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def get_plain(port, path, timeout=HANG):
    with H1Conn(port, timeout=timeout) as c:
        c.send(request_bytes("GET", path))
        return c.read_response()


# -- the backends themselves, without meshd ------------------------------------------


def test_backend_banner_direct():
    with BannerServer() as b:
        s = connect(b.port, timeout=HANG)
        try:
            assert recv_exact(s, len(BANNER)) == BANNER
            echo_roundtrip(s, b"EHLO client.test\r\n")
            s.shutdown(socket.SHUT_WR)
            assert expect_closed(s, HANG) == "eof"
        finally:
            s.close()
        assert b.next_result(HANG) == {"bytes": len(b"EHLO client.test\r\n")}


def test_backend_tls_direct(tls_cert):
    with TlsEchoServer(*tls_cert) as b:
        with client_ctx(tls_cert[0]).wrap_socket(connect(b.port, timeout=HANG), server_hostname=TLS_NAME) as t:
            echo_roundtrip(t, b"over tls\n")
        assert b.sni == [TLS_NAME]
        assert b.next_result(HANG)["bytes"] == len(b"over tls\n")
    # The split-ClientHello client works against it too.
    with TlsEchoServer(*tls_cert) as b:
        s = connect(b.port, timeout=HANG)
        try:
            t = SplitTls(s, client_ctx(tls_cert[0]), 1)
            t.send(b"split")
            assert t.recv_exact(5) == b"split"
        finally:
            s.close()
        assert b.sni == [TLS_NAME]


def test_backend_ws_direct():
    with WsUpstream(echo_any_path=True) as b:
        c = WsClient(f"ws://127.0.0.1:{b.port}/ws/direct", timeout=HANG)
        try:
            c.echo("text")
            c.echo(det_bytes(70000, seed=3))
            c.send("who")
            assert c.recv() == "/ws/direct"
        finally:
            c.close()
        assert b.requests[0]["path"] == "/ws/direct" and not b.errors


# -- TLS and other bytes to the fallback ----------------------------------------------


@pytest.mark.proxy_only
def test_tls_clienthello_passes_through_to_fallback(detect, tls_cert):
    """A TLS client through the AUTO port shakes hands with the TLS server
    behind it (meshd does not terminate TLS here: the ClientHello, SNI
    included, reaches the backend intact) and its bytes echo."""
    svc = detect(fallback="tls", tls_cert=tls_cert, detect_timeout_ms=LONG_DETECT_MS)
    ctx = client_ctx(tls_cert[0])
    with ctx.wrap_socket(connect(svc.port(), timeout=HANG), server_hostname=TLS_NAME) as t:
        assert t.version() in ("TLSv1.2", "TLSv1.3")
        echo_roundtrip(t, b"hello through meshd over TLS\n")
        payload = det_bytes(200_000, seed=7)
        t.sendall(payload)
        assert recv_exact(t, len(payload)) == payload
    assert svc.fallback.sni == [TLS_NAME]
    assert svc.fallback.accepted == 1
    svc.expect_counts(tls=1)
    assert svc.upstream.requests == []


@pytest.mark.proxy_only
@pytest.mark.parametrize("split,detect_ms,pause", [(1, LONG_DETECT_MS, SEGMENT_PAUSE), (2, LONG_DETECT_MS, SEGMENT_PAUSE),
                                                   (5, LONG_DETECT_MS, SEGMENT_PAUSE), (1, 100, 0.5)],
                         ids=["1", "2", "5", "1-stalled-past-detect-timeout"])
def test_clienthello_in_two_segments(detect, tls_cert, split, detect_ms, pause):
    """0x16 alone could be TLS or not: meshd waits for more before deciding,
    and the split ClientHello is still TLS (counted tls), even when the rest
    comes after detect_timeout_ms (the client did say something)."""
    svc = detect(fallback="tls", tls_cert=tls_cert, detect_timeout_ms=detect_ms)
    s = connect(svc.port(), timeout=HANG)
    try:
        _nodelay(s)
        t = SplitTls(s, client_ctx(tls_cert[0]), split, pause=pause)
        t.send(b"after a split hello")
        assert t.recv_exact(19) == b"after a split hello"
    finally:
        s.close()
    assert svc.fallback.sni == [TLS_NAME]
    svc.expect_counts(tls=1)


RAW_FIRST = {
    "binary": b"\x00\x01hello",
    "lowercase-line": b"hello there\r\n",
    "lowercase-method": b"get /plain/x HTTP/1.1\r\nHost: a\r\n\r\n",  # "get" is not a method token
    "ssh-banner": b"SSH-2.0-OpenSSH_9.2\r\n",  # upper case, but no space after the letters
    "redis": b"*1\r\n$4\r\nPING\r\n",
    "0x16-not-tls": b"\x16\x01\x00\x05hello",  # 0x16 not followed by 0x03
    "large-first-write": b"\x00" + det_bytes(100_000, seed=5),
}


@pytest.mark.proxy_only
@pytest.mark.parametrize("first", list(RAW_FIRST), ids=list(RAW_FIRST))
def test_other_bytes_go_to_fallback(detect, first):
    """Bytes that are neither HTTP nor TLS reach the fallback intact, first
    bytes included, and the pipe keeps going both ways until EOF."""
    svc = detect(fallback="echo", detect_timeout_ms=LONG_DETECT_MS)
    s = connect(svc.port(), timeout=HANG)
    try:
        echo_roundtrip(s, RAW_FIRST[first])
        more = det_bytes(300_000, seed=11)
        s.sendall(more)
        assert recv_exact(s, len(more)) == more
        s.shutdown(socket.SHUT_WR)
        assert expect_closed(s, HANG) == "eof"
    finally:
        s.close()
    assert svc.fallback.next_result(HANG) == {"bytes": len(RAW_FIRST[first]) + 300_000}
    svc.expect_counts(tcp=1)
    assert svc.upstream.requests == []


@pytest.mark.proxy_only
def test_fallback_down_closes_client(detect):
    """The fallback refuses connections: the client is closed, and the
    listener keeps serving HTTP."""
    svc = detect(fallback="refusing", detect_timeout_ms=LONG_DETECT_MS)
    s = connect(svc.port(), timeout=HANG)
    try:
        s.sendall(b"\x00\x01hello")
        assert expect_closed(s, HANG) in ("eof", "rst")
    finally:
        s.close()
    r = get_plain(svc.port(), "/plain/after-down")
    assert r.status == 200 and r.body == KNOWN_BODY, r
    c = svc.counts()
    assert c["http1"] == 1 and c["http2"] == 0 and c["tls"] == 0 and c["timeout"] == 0, c


@pytest.mark.proxy_only
def test_fallback_idle_timeout_applies(detect):
    """The tcp_fallback's own settings govern the proxied connection: with
    idle_timeout_ms 300 an idle pipe is closed (well within the hang guard)."""
    svc = detect(fallback="echo", detect_timeout_ms=LONG_DETECT_MS, idle_timeout_ms=300)
    s = connect(svc.port(), timeout=HANG)
    try:
        echo_roundtrip(s, b"\x00idle soon")
        assert expect_closed(s, HANG) in ("eof", "rst")
    finally:
        s.close()
    svc.expect_counts(tcp=1)


# -- server-first: silence goes to the fallback --------------------------------------


@pytest.mark.proxy_only
@pytest.mark.parametrize("detect_timeout_ms", [0, 2000], ids=["default-100ms", "2000ms"])
def test_server_first_gets_banner(detect, detect_timeout_ms):
    """A client that only reads (SMTP, MySQL) gets the fallback's banner once
    detect_timeout_ms has passed, and then talks to it."""
    svc = detect(fallback="banner", detect_timeout_ms=detect_timeout_ms)
    s = connect(svc.port(), timeout=HANG)
    try:
        assert recv_exact(s, len(BANNER)) == BANNER
        echo_roundtrip(s, b"EHLO client.test\r\n")
        echo_roundtrip(s, b"QUIT\r\n")
        s.shutdown(socket.SHUT_WR)
        assert expect_closed(s, HANG) == "eof"
    finally:
        s.close()
    assert svc.fallback.accepted == 1
    svc.expect_counts(timeout=1)


# -- HTTP told apart even when its first bytes come in pieces -------------------------


@pytest.mark.proxy_only
@pytest.mark.parametrize("split", [1, 2, 3])
def test_partial_method_waits_for_more(detect, split):
    """"GE" could be "GET ": meshd waits for more bytes instead of sending
    the connection to the fallback."""
    svc = detect(fallback="echo", detect_timeout_ms=1000)
    wire = b"GET /plain/split-method HTTP/1.1\r\nHost: a\r\n\r\n"
    with H1Conn(svc.port(), timeout=HANG) as c:
        _nodelay(c.sock)
        c.send(wire[:split])
        time.sleep(SEGMENT_PAUSE)
        c.send(wire[split:])
        r = c.read_response()
        assert r.status == 200 and r.body == KNOWN_BODY, f"{r!r} (an echo of the request means it went to the fallback)"
        assert r.header("x-echo-path") == "/plain/split-method", r
    assert svc.fallback.accepted == 0
    svc.expect_counts(http1=1)


@pytest.mark.proxy_only
@pytest.mark.parametrize("split", [1, 5, 23])
def test_partial_preface_is_h2c(detect, split):
    svc = detect(fallback="echo", detect_timeout_ms=1000)
    c = RawH2(svc.port(), timeout=HANG, preface=False)
    try:
        _nodelay(c.sock)
        c.send(H2_PREFACE[:split])
        time.sleep(SEGMENT_PAUSE)
        c.send(H2_PREFACE[split:] + c.settings()
               + c.headers(1, [(":method", "GET"), (":scheme", "http"), (":path", "/plain/split-preface"),
                               (":authority", "a")]))
        f = c.read_until(lambda f: f.stream == 1 and f.flags & RawH2.END_STREAM, timeout=HANG)
        assert f is not None, f"connection ended: {c.frames}"
        hdrs = [x for x in c.frames if x.type == RawH2.HEADERS and x.stream == 1]
        assert hdrs and dict(hdrs[0].headers)[":status"] == "200", c.frames
        assert c.goaways() == [], c.frames
    finally:
        c.close()
    assert svc.fallback.accepted == 0
    svc.expect_counts(http2=1)


@pytest.mark.proxy_only
@pytest.mark.parametrize("listener", ["auto_in", "auto_plain"])
def test_silent_close_is_none(detect, listener):
    """A client that closes having said nothing is counted none; the
    fallback is never dialled."""
    svc = detect(fallback="echo", detect_timeout_ms=LONG_DETECT_MS)
    for _ in range(2):
        s = connect(svc.port(listener), timeout=HANG)
        s.close()
    svc.expect_counts(listener, none=2)
    assert svc.fallback.accepted == 0


CLOSE_NOTICED = 3.0  # hang guard: a close is normally noticed within milliseconds


def _partial_then_close(svc, listener):
    s = connect(svc.port(listener), timeout=HANG)
    s.sendall(b"GE")
    s.close()
    svc.expect_counts(listener, none=1, within=CLOSE_NOTICED)
    assert svc.fallback.accepted == 0


@pytest.mark.proxy_only
def test_partial_then_close_is_none_with_fallback(detect):
    _partial_then_close(detect(fallback="echo", detect_timeout_ms=LONG_DETECT_MS), "auto_in")


@pytest.mark.proxy_only
def test_partial_then_close_is_none_without_fallback(detect):
    _partial_then_close(detect(fallback="echo"), "auto_plain")


STALL = 0.5  # a pause well past the 100 ms detect timeout (not a readiness wait)
STALLED_METHODS = {"GE": "GET", "POS": "POST", "PU": "PUT", "PATC": "PATCH", "OPTIONS": "OPTIONS"}


@pytest.mark.proxy_only
@pytest.mark.parametrize("first", list(STALLED_METHODS))
def test_stalled_partial_method_is_still_http1(detect, first):
    """A client that sent part of a method and then paused past
    detect_timeout_ms did say something: it is not server-first, and its
    request, once complete, is served as HTTP/1.1."""
    method = STALLED_METHODS[first]
    svc = detect(fallback="echo", detect_timeout_ms=100)
    body = b"stalled body" if method in ("POST", "PUT", "PATCH") else None
    wire = request_bytes(method, f"/plain/stalled-{method}", body=body)
    assert wire.startswith(first.encode())
    with H1Conn(svc.port(), timeout=HANG) as c:
        _nodelay(c.sock)
        c.send(wire[: len(first)])
        time.sleep(STALL)
        c.send(wire[len(first):])
        r = c.read_response()
        assert r.status == 200 and r.header("x-echo-method") == method, r
    assert svc.fallback.accepted == 0
    svc.expect_counts(http1=1)


@pytest.mark.proxy_only
def test_stalled_partial_preface_is_still_h2c(detect):
    svc = detect(fallback="echo", detect_timeout_ms=100)
    c = RawH2(svc.port(), timeout=HANG, preface=False)
    try:
        _nodelay(c.sock)
        c.send(H2_PREFACE[:9])
        time.sleep(STALL)
        c.send(H2_PREFACE[9:] + c.settings()
               + c.headers(1, [(":method", "GET"), (":scheme", "http"), (":path", "/plain/stalled-preface"),
                               (":authority", "a")]))
        f = c.read_until(lambda f: f.stream == 1 and f.flags & RawH2.END_STREAM, timeout=HANG)
        assert f is not None, f"connection ended: {c.frames}"
    finally:
        c.close()
    assert svc.fallback.accepted == 0
    svc.expect_counts(http2=1)


# -- without tcp_fallback --------------------------------------------------------------


@pytest.mark.proxy_only
def test_no_fallback_junk_is_http1_400(detect):
    svc = detect()
    with H1Conn(svc.port("auto_plain"), timeout=HANG) as c:
        c.send(b"hello there\r\n\r\n")
        r = c.read_response()
        assert r.status == 400, r
        assert c.expect_closed() in ("eof", "rst")
    svc.expect_counts("auto_plain", http1=1)
    assert svc.fallback.accepted == 0


@pytest.mark.proxy_only
def test_no_fallback_clienthello_is_closed(detect):
    """A ClientHello with nowhere to go: closed, no bytes back (not an
    HTTP/1.1 400 to a TLS client), counted none."""
    svc = detect()
    s = connect(svc.port("auto_plain"), timeout=HANG)
    try:
        s.sendall(client_hello())
        assert expect_closed(s, HANG) in ("eof", "rst")
    finally:
        s.close()
    svc.expect_counts("auto_plain", none=1)
    assert svc.fallback.accepted == 0


@pytest.mark.proxy_only
def test_no_fallback_silent_client_waits(detect):
    """Without a fallback there is no detect timeout: a silent client is
    still open after 0.5 s (well past the 100 ms default), and a request it
    sends then is served as HTTP/1.1."""
    svc = detect()
    with H1Conn(svc.port("auto_plain"), timeout=HANG) as c:
        assert c.is_open(quiet=0.5), f"closed a silent client ({c.eof})"
        c.send(request_bytes("GET", "/plain/late"))
        r = c.read_response()
        assert r.status == 200 and r.body == KNOWN_BODY, r
    svc.expect_counts("auto_plain", http1=1)
    assert svc.fallback.accepted == 0


# -- the one-port test -------------------------------------------------------------------


@pytest.mark.proxy_only
def test_one_port_grpc_http1_websocket_server_first(detect, echo_stubs):
    """One AUTO port, four protocols open at the same time: a gRPC channel, an
    HTTP/1.1 keep-alive connection, a WebSocket and a server-first TCP
    protocol (the fallback speaks first); each used in turns while the others
    stay open; each lands where it should and is counted once."""
    pb, pbg, _ = echo_stubs
    svc = detect(fallback="banner", grpc=True, ws=True, detect_timeout_ms=1000)
    port = svc.port()
    ch = grpc_channel(port)
    ws = None
    h1 = H1Conn(port, timeout=HANG)
    # Each client speaks as soon as it connects (a silent one would be taken
    # for server-first), except the server-first one, which waits for the banner.
    h1.send(request_bytes("GET", "/plain/one-h1-first"))
    smtp = connect(port, timeout=HANG)
    try:
        r = h1.read_response()
        assert r.status == 200 and r.header("x-echo-path") == "/plain/one-h1-first", r
        stub = pbg.EchoStub(ch)
        assert stub.Unary(pb.EchoRequest(id="one-0", payload=b"g"), timeout=HANG).id == "one-0"
        ws = WsClient(f"ws://127.0.0.1:{port}/ws/one", timeout=HANG)
        assert recv_exact(smtp, len(BANNER)) == BANNER
        for i in range(3):
            g = stub.Unary(pb.EchoRequest(id=f"one-g{i}", payload=b"x" * (i + 1) * 1000), timeout=HANG)
            assert g.id == f"one-g{i}" and g.payload == b"x" * (i + 1) * 1000
            h1.send(request_bytes("GET", f"/plain/one-h1-{i}"))
            r = h1.read_response()
            assert r.status == 200 and r.header("x-echo-path") == f"/plain/one-h1-{i}", r
            ws.echo(f"ws text {i}")
            ws.echo(det_bytes(20_000 * (i + 1), seed=i))
            echo_roundtrip(smtp, f"NOOP {i}\r\n".encode())
        ws.send("who")
        assert ws.recv() == "/ws/one"
        smtp.shutdown(socket.SHUT_WR)
        assert expect_closed(smtp, HANG) == "eof"
    finally:
        if ws is not None:
            ws.close()
        smtp.close()
        h1.close()
        ch.close()
    assert [h["path"] for h in svc.ws.requests] == ["/ws/one"]
    assert {c["id"] for c in svc.grpc.calls()} >= {"one-0", "one-g0", "one-g1", "one-g2"}
    assert [q["path"] for q in svc.upstream.requests] == ["/plain/one-h1-first"] + [f"/plain/one-h1-{i}" for i in range(3)]
    assert svc.fallback.accepted == 1
    # gRPC: one h2c connection; HTTP/1.1 and the WebSocket: one each; the
    # server-first client: silence.
    svc.expect_counts(http1=2, http2=1, timeout=1)


# -- wrk -----------------------------------------------------------------------------------

WRK_REQUESTS_RE = re.compile(r"^\s*(\d+) requests in ", re.M)


@pytest.mark.proxy_only
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not on PATH")
@pytest.mark.parametrize("listener", ["auto_in", "h1_in"])
def test_wrk_smoke(detect, listener):
    """wrk -t1 -c50 -d2s: every response a 2xx, no socket errors."""
    svc = detect(fallback="echo", detect_timeout_ms=LONG_DETECT_MS)
    argv = ["wrk", "-t1", "-c50", "-d2s", "--timeout", "5s", f"http://127.0.0.1:{svc.port(listener)}/plain/wrk"]
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    out = r.stdout.decode(errors="replace")
    assert r.returncode == 0, f"wrk exited {r.returncode}\n{out}\n{r.stderr.decode(errors='replace')}"
    assert "Non-2xx or 3xx responses" not in out, out
    assert "Socket errors" not in out, out
    m = WRK_REQUESTS_RE.search(out)
    assert m and int(m.group(1)) > 0, out
    assert len(svc.upstream.requests) >= int(m.group(1)), out
    if listener == "auto_in":
        c = svc.counts()
        assert c["http1"] >= 50 and c["tcp"] == c["tls"] == c["timeout"] == c["http2"] == 0, c
    assert svc.fallback.accepted == 0


# -- bundle validation ---------------------------------------------------------------

HTTP_LISTENER = """
listeners {{
  name: "in"
  address {{ address: "127.0.0.1" port: {{l1}} }}
  http {{ codec: {codec} route_config: "r" {extra} }}
}}
"""
ROUTES = """
route_configs {{
  name: "r"
  virtual_hosts {{
    name: "v"
    domains: "*"
    routes {{ name: "all" match {{ prefix: "/" }} route {{ cluster: "app" {route_extra} }} }}
  }}
}}
clusters {{ name: "app" protocol: HTTP1 endpoints {{ address {{ address: "127.0.0.1" port: {{up}} }} }} }}
clusters {{ name: "fb" endpoints {{ address {{ address: "127.0.0.1" port: {{up}} }} }} }}
"""
FB = 'tcp_fallback { cluster: "fb" }'


def http_bundle(codec="AUTO", extra="", route_extra=""):
    return HTTP_LISTENER.format(codec=codec, extra=extra) + ROUTES.format(route_extra=route_extra)


# id -> (bundle text, resource prefix, field regex (full match), reason regex (search, case-insensitive));
# a list of (field, reason) pairs when the bundle has more than one problem (one line each).
BAD = {
    "fallback_on_h2c": (http_bundle("H2C", FB), "listener", r"http\.tcp_fallback", r"auto"),
    "fallback_on_http1": (http_bundle("HTTP1", FB), "listener", r"http\.tcp_fallback", r"auto"),
    "detect_timeout_on_http1": (http_bundle("HTTP1", "detect_timeout_ms: 500"), "listener",
                                r"http\.detect_timeout_ms", r"auto|fallback"),
    "detect_timeout_on_h2c_with_fallback": (http_bundle("H2C", FB + " detect_timeout_ms: 500"), "listener",
                                            [(r"http\.tcp_fallback", r"auto"),
                                             (r"http\.detect_timeout_ms", r"auto|fallback")]),
    "detect_timeout_without_fallback": (http_bundle("AUTO", "detect_timeout_ms: 500"), "listener",
                                        r"http\.detect_timeout_ms", r"fallback"),
    "detect_timeout_above_max": (http_bundle("AUTO", FB + " detect_timeout_ms: 10001"), "listener",
                                 r"http\.detect_timeout_ms", r"10000|10 ?s|at most|range|too"),
    "fallback_unknown_cluster": (http_bundle("AUTO", 'tcp_fallback { cluster: "nope" }'), "listener",
                                 r"http\.tcp_fallback\.cluster", r"unknown|not found|no such|nope"),
    "fallback_empty_cluster": (http_bundle("AUTO", 'tcp_fallback { cluster: "" }'), "listener",
                               r"http\.tcp_fallback\.cluster", r"required|empty|missing"),
    "upgrades_and_refuse": (http_bundle(route_extra='upgrade_types: "websocket" refuse_upgrades: true'), "route",
                            r".*(upgrade_types|refuse_upgrades).*", r"refuse|empty|both|together|exclusive"),
    "upgrade_not_a_token": (http_bundle(route_extra='upgrade_types: "web socket"'), "route",
                            r".*upgrade_types.*", r"token|character|not allowed|invalid"),
    "upgrade_slash": (http_bundle(route_extra='upgrade_types: "websocket/13"'), "route",
                      r".*upgrade_types.*", r"token|character|not allowed|invalid"),
    "upgrade_empty": (http_bundle(route_extra='upgrade_types: ""'), "route",
                      r".*upgrade_types.*", r"empty|token|required"),
    "upgrade_h2c": (http_bundle(route_extra='upgrade_types: "h2c"'), "route", r".*upgrade_types.*", r"h2c"),
    "upgrade_h2c_upper": (http_bundle(route_extra='upgrade_types: "websocket" upgrade_types: "H2C"'), "route",
                          r".*upgrade_types.*", r"h2c"),
    "upgrade_duplicate": (http_bundle(route_extra='upgrade_types: "websocket" upgrade_types: "websocket"'),
                          "route", r".*upgrade_types.*", r"duplicate|repeat|twice|more than once|already"),
    "upgrade_duplicate_case": (http_bundle(route_extra='upgrade_types: "websocket" upgrade_types: "WebSocket"'),
                               "route", r".*upgrade_types.*", r"duplicate|repeat|twice|more than once|already"),
}

GOOD = {
    "auto_with_fallback_default_timeout": http_bundle("AUTO", FB),
    "auto_with_fallback_max_timeout": http_bundle("AUTO", FB + " detect_timeout_ms: 10000"),
    "auto_with_fallback_all_fields": http_bundle(
        "AUTO", 'tcp_fallback { cluster: "fb" idle_timeout_ms: 5000 disable_splice: true } detect_timeout_ms: 1'),
    "upgrade_types": http_bundle(route_extra='upgrade_types: "websocket" upgrade_types: "connect-udp"'),
    "refuse_upgrades": http_bundle(route_extra="refuse_upgrades: true"),
}


@pytest.fixture
def vports(ports):
    return {"l1": ports.get(), "up": ports.get(), "admin_port": ports.get()}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_detect_bundle(case, meshd_bin, meshctl_bin, proto_path, workdir, vports):
    """exit 2 from meshd --bundle and meshctl validate, the same lines, one
    line for the one problem, naming the field, with a reason that says why."""
    text, resource, *want = BAD[case]
    want = want[0] if len(want) == 1 else [tuple(want)]
    pb = write_pb(workdir, case, text, meshctl_bin, proto_path, vports)
    r = run_meshd(meshd_bin, pb)
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 2, f"meshd --bundle exited {r.returncode}, expected 2; stderr:\n{err}"
    lines = error_lines(r.stderr)
    assert len(lines) == len(want), f"want {len(want)} error line(s), one per problem:\n{err}"
    parsed = []
    for line in lines:
        m = LINE_RE.match(line)
        assert m, f"malformed error line (want `error: FILE: RESOURCE: FIELD: REASON`): {line!r}"
        assert m["file"] in (str(pb), pb.name), line
        assert m["resource"].startswith(resource), line
        parsed.append(m)
    for field_re, reason_re in want:
        hit = [m for m in parsed if re.fullmatch(field_re, m["field"])]
        assert hit, f"no error line with a field matching {field_re!r}:\n{err}"
        assert any(re.search(reason_re, m["reason"], re.I) for m in hit), \
            f"field {field_re!r}: the reason does not say {reason_re!r}:\n{err}"
    v = meshctl(meshctl_bin, proto_path, "validate", pb, timeout=30)
    vout = v.stdout + v.stderr
    assert v.returncode == 2, vout.decode(errors="replace")
    assert error_lines(vout) == lines, vout.decode(errors="replace")


@pytest.mark.parametrize("case", list(GOOD))
def test_good_detect_bundle(case, meshctl_bin, proto_path, workdir, vports):
    pb = write_pb(workdir, case, GOOD[case], meshctl_bin, proto_path, vports)
    v = meshctl(meshctl_bin, proto_path, "validate", pb, timeout=30)
    assert v.returncode == 0, (v.stdout + v.stderr).decode(errors="replace")
    assert v.stdout.decode().strip() == f"{pb}: ok"
