# SPDX-License-Identifier: Apache-2.0
"""HTTP/1.1 downstream helpers for the test_h1_*.py files: an upstream, a
raw HTTP/1.1 client and the fixtures that tie them to meshd (curl:
env/curl.py).

H1Upstream    env.h2_backend.H2Backend plus what an HTTP/1.1 client must be
              shown (extra query parameters, or x-ctl-NAME request headers):
                chunked=1        no content-length: meshd cannot know the
                                 length, so its client gets a chunked body
                trailer=NAME:VAL trailers after the body (repeatable,
                                 percent-decoded); the response has no
                                 content-length then either
                nobody=1         response headers only, with END_STREAM (a
                                 304 keeps the content-length of the body it
                                 did not send; 1xx/204 have none)
              and HEAD is answered without a body (as RFC 9110 §9.3.2 wants;
              H2Backend sends one, which nghttp2 rightly rejects).
H1Conn        a raw HTTP/1.1 client on one TCP connection: send bytes, read
              responses with a strict parser (status line, CRLF header lines,
              Content-Length / chunked with trailers / until EOF), tell a
              clean EOF from a reset. Pipelining: read responses in order.
fixtures      h1_service: factory -> H1Service (upstream, meshd from
              bundles/h1_basic, ports); test files import it from here.

Every socket has a timeout, every loop is bounded (iterations and time).
"""
import hashlib
import itertools
import re
import socket
import time
import urllib.parse

import pytest

from env.clients import SocketOwner, connect, reset_close
from env.h2_backend import H2Backend

HANG_GUARD = 20.0  # seconds: generous limits against hangs, never timings


# -- the upstream ----------------------------------------------------------------------


class _HeadersTap:
    """Wraps an h2 connection for H2Backend's answer code: send_headers and
    send_data go through edit functions; everything else passes through."""

    def __init__(self, h2c, edit_headers=None, data_end=True):
        self._h2c = h2c
        self._edit = edit_headers
        self._data_end = data_end

    def send_headers(self, sid, headers, end_stream=False, **kw):
        if self._edit is not None:
            headers, end_stream = self._edit(headers, end_stream)
        return self._h2c.send_headers(sid, headers, end_stream=end_stream, **kw)

    def send_data(self, sid, data, end_stream=False, **kw):
        return self._h2c.send_data(sid, data, end_stream=end_stream and self._data_end, **kw)

    def __getattr__(self, name):
        return getattr(self._h2c, name)


class H1Upstream(H2Backend):
    """H2Backend with the controls listed in the module docstring."""

    def _answer(self, h2c, s, cid):
        q = self._query(s)
        method = (s.rec or {}).get("method", "")
        status = q.get("status", ["200"])[0]
        nobody = method == "HEAD" or q.get("nobody", ["0"])[0] == "1"
        chunked = q.get("chunked", ["0"])[0] == "1"
        trailers = [
            (k.strip().lower().encode(), v.encode())
            for k, _, v in (urllib.parse.unquote(t).partition(":") for t in q.get("trailer", []))
        ]
        if not (nobody or chunked or trailers):
            return super()._answer(h2c, s, cid)

        def edit(headers, end_stream):
            out = []
            for k, v in headers:
                name = k.decode() if isinstance(k, bytes) else k
                if name == "content-length" and (
                    chunked or trailers or (nobody and (status.startswith("1") or status == "204"))
                ):
                    continue
                out.append((k, v))
            if nobody:
                return out, True
            if trailers:
                return out, False
            return out, end_stream

        super()._answer(_HeadersTap(h2c, edit), s, cid)
        if nobody:
            s.out = None
            with self._lock:
                cs = self.conns[cid]
            self._stream_gone(s, cs, "answered")
            return
        if trailers:
            s.h1_trailers = trailers
            if s.out is None:  # an empty body: the trailers follow the headers
                h2c.send_headers(s.sid, trailers, end_stream=True)

    def _send_body(self, h2c, s):
        trailers = getattr(s, "h1_trailers", None)
        if not trailers:
            return H2Backend._send_body(h2c, s)
        H2Backend._send_body(_HeadersTap(h2c, data_end=False), s)
        if s.out is None:
            try:
                h2c.send_headers(s.sid, trailers, end_stream=True)
            except Exception:  # noqa: BLE001 - the stream was reset meanwhile
                pass


# -- a raw HTTP/1.1 client ---------------------------------------------------------------

STATUS_RE = re.compile(rb"\AHTTP/1\.([01]) ([0-9]{3}) ([^\r\n]*)\Z")
TOKEN_RE = re.compile(rb"\A[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")


class H1Response:
    """One response as read off the wire. headers/trailers: [(name lower-case
    str, value str)]; informational: [(status, headers)] of 1xx responses
    before it; body: bytes (or None when only length/sha256 were kept);
    framing: "length" | "chunked" | "eof" | "none"; raw_head: the status line
    and header section as received."""

    def __init__(self):
        self.version = None
        self.status = None
        self.reason = None
        self.headers = []
        self.trailers = []
        self.informational = []
        self.body = None
        self.length = 0
        self.sha256 = None
        self.framing = None
        self.raw_head = b""
        self.chunk_sizes = []

    def header(self, name):
        vals = self.header_all(name)
        return vals[0] if vals else None

    def header_all(self, name):
        return [v for k, v in self.headers if k == name]

    def trailer(self, name):
        vals = [v for k, v in self.trailers if k == name]
        return vals[0] if vals else None

    @property
    def closes(self):
        """The response says the connection closes after it."""
        return any("close" in [t.strip().lower() for t in v.split(",")] for v in self.header_all("connection"))

    def __repr__(self):
        body = self.body[:200] if self.body is not None else f"<{self.length} bytes>"
        return (f"H1Response(HTTP/1.{self.version} {self.status} {self.reason!r}, headers={self.headers}, "
                f"framing={self.framing}, body={body!r}, trailers={self.trailers}, "
                f"informational={self.informational})")


class H1Conn(SocketOwner):
    """A raw HTTP/1.1 client connection.

        c = H1Conn(port)
        c.send(b"GET / HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n")
        r = c.read_response()              # strict parse; fails on junk
        c.expect_closed() -> "eof" | "rst" # nothing more, then the close
    eof: None while open, "eof" (FIN) or "rst" once the peer closed.
    sock: a connected socket to use instead of connecting (e.g. TLS)."""

    def __init__(self, port, host="127.0.0.1", timeout=HANG_GUARD, sock=None):
        self.timeout = timeout
        self.sock = sock if sock is not None else connect(port, timeout=timeout, host=host)
        self.buf = bytearray()
        self.eof = None


    def abort(self):
        """Close with RST (SO_LINGER 0): meshd notices at once, even when it
        is not reading."""
        try:
            reset_close(self.sock)
        except OSError:
            pass

    def send(self, data):
        self.sock.settimeout(self.timeout)
        self.sock.sendall(data)

    def _fill(self, deadline, what):
        """Read once more into buf; False at EOF/reset. Fails past deadline."""
        if self.eof is not None:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out after {self.timeout}s waiting for {what}; buffered: {bytes(self.buf[:300])!r}")
        self.sock.settimeout(left)
        try:
            b = self.sock.recv(1 << 20)
        except socket.timeout:
            raise AssertionError(
                f"timed out after {self.timeout}s waiting for {what}; buffered: {bytes(self.buf[:300])!r}") from None
        except ConnectionResetError:
            self.eof = "rst"
            return False
        if not b:
            self.eof = "eof"
            return False
        self.buf += b
        return True

    def _line(self, deadline, what, limit=1 << 20):
        for _ in range(1_000_000):
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[: i + 1])
                del self.buf[: i + 1]
                assert line.endswith(b"\r\n"), f"{what}: line not ended by CRLF: {line!r}"
                return line[:-2]
            assert len(self.buf) < limit, f"{what}: line longer than {limit} bytes"
            if not self._fill(deadline, what):
                raise AssertionError(f"connection ended ({self.eof}) in {what}; buffered: {bytes(self.buf[:300])!r}")
        raise AssertionError(f"{what}: no line")

    def _exact(self, n, deadline, what, sink=None):
        """n bytes from the stream: returned, or fed to sink(bytes) when given."""
        out = bytearray() if sink is None else None
        left = n
        for _ in range(10_000_000):
            if left == 0:
                break
            if self.buf:
                take = min(left, len(self.buf))
                piece = bytes(self.buf[:take])
                del self.buf[:take]
                left -= take
                if sink is None:
                    out += piece
                else:
                    sink(piece)
                continue
            if not self._fill(deadline, what):
                raise AssertionError(f"connection ended ({self.eof}) after {n - left} of {n} bytes of {what}")
        return bytes(out) if sink is None else None

    def read_head(self, deadline=None):
        """Status line and header fields of the next response (1xx included)."""
        deadline = deadline or time.monotonic() + self.timeout
        raw = bytearray()
        if not self.buf and not self._fill(deadline, "a status line"):
            raise AssertionError(f"connection ended ({self.eof}) before a response")
        line = self._line(deadline, "the status line")
        raw += line + b"\r\n"
        m = STATUS_RE.match(line)
        assert m, f"not an HTTP/1.x status line: {line!r}"
        headers = []
        for _ in range(10_000):
            line = self._line(deadline, "the header section")
            raw += line + b"\r\n"
            if line == b"":
                break
            name, sep, value = line.partition(b":")
            assert sep and TOKEN_RE.match(name), f"malformed header line {line!r} in {bytes(raw)!r}"
            assert b"\r" not in value and b"\n" not in value, f"CR/LF inside header line {line!r}"
            headers.append((name.decode().lower(), value.strip(b" \t").decode("latin-1")))
        return int(m.group(1)), int(m.group(2)), m.group(3).decode("latin-1"), headers, bytes(raw)

    def read_response(self, head=False, keep=True, timeout=None):
        """The next final response, its 1xx responses in .informational.
        head=True: the request was HEAD (no body, whatever the headers say).
        keep=False keeps only the body's length and sha256."""
        deadline = time.monotonic() + (timeout or self.timeout)
        r = H1Response()
        for _ in range(100):
            version, status, reason, headers, raw = self.read_head(deadline)
            if 100 <= status < 200:
                r.informational.append((status, headers))
                continue
            break
        else:
            raise AssertionError("more than 100 informational responses")
        r.version, r.status, r.reason, r.headers, r.raw_head = version, status, reason, headers, raw
        h = hashlib.sha256()
        parts = [] if keep else None

        def sink(b):
            h.update(b)
            r.length += len(b)
            if parts is not None:
                parts.append(b)

        te = [t.strip().lower() for v in r.header_all("transfer-encoding") for t in v.split(",")]
        cls = r.header_all("content-length")
        if head or status in (204, 304):
            r.framing = "none"
        elif te:
            assert te == ["chunked"], f"transfer-encoding {te} in {r!r}"
            assert not cls, f"both content-length and transfer-encoding: {r!r}"
            r.framing = "chunked"
            for _ in range(10_000_000):
                line = self._line(deadline, "a chunk size line")
                size_s = line.split(b";", 1)[0]
                assert re.fullmatch(rb"[0-9a-fA-F]+", size_s), f"bad chunk size line {line!r}"
                size = int(size_s, 16)
                r.chunk_sizes.append(size)
                if size == 0:
                    break
                self._exact(size, deadline, "chunk data", sink)
                crlf = self._exact(2, deadline, "the CRLF after chunk data")
                assert crlf == b"\r\n", f"chunk data not followed by CRLF: {crlf!r}"
            for _ in range(10_000):
                line = self._line(deadline, "the trailer section")
                if line == b"":
                    break
                name, sep, value = line.partition(b":")
                assert sep and TOKEN_RE.match(name), f"malformed trailer line {line!r}"
                r.trailers.append((name.decode().lower(), value.strip(b" \t").decode("latin-1")))
        elif cls:
            assert len(set(cls)) == 1, f"differing content-lengths {cls}"
            r.framing = "length"
            self._exact(int(cls[0]), deadline, "the body", sink)
        else:
            r.framing = "eof"
            for _ in range(10_000_000):
                if self.buf:
                    sink(bytes(self.buf))
                    self.buf.clear()
                if not self._fill(deadline, "the body (until EOF)"):
                    break
        r.sha256 = h.hexdigest()
        r.body = b"".join(parts) if keep else None
        return r

    def expect_closed(self, timeout=None):
        """Nothing more arrives, then the connection ends: "eof" or "rst".
        Fails if bytes arrive or it stays open for `timeout` seconds."""
        assert not self.buf, f"unexpected bytes after the response: {bytes(self.buf[:300])!r}"
        deadline = time.monotonic() + (timeout or self.timeout)
        if self._fill(deadline, "the connection to close"):
            raise AssertionError(f"unexpected bytes instead of a close: {bytes(self.buf[:300])!r}")
        return self.eof

    def is_open(self, quiet=0.2):
        """True unless the peer closes (EOF or reset) within `quiet` seconds
        (bytes waiting to be read count as open; nothing is consumed)."""
        if self.eof is not None:
            return False
        self.sock.settimeout(quiet)
        try:
            b = self.sock.recv(1, socket.MSG_PEEK)
        except socket.timeout:
            return True
        except ConnectionResetError:
            return False
        finally:
            self.sock.settimeout(self.timeout)
        return bool(b)


def request_bytes(method, path, host="meshd.test", headers=(), body=None, version="1.1"):
    """A request as bytes: request line, Host (unless host is None), the
    given header lines ("Name: value" strings), Content-Length when body is
    bytes and no framing header was given, then the body."""
    lines = [f"{method} {path} HTTP/{version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += list(headers)
    framing = any(h.lower().startswith(("content-length:", "transfer-encoding:")) for h in headers)
    if body is not None and not framing:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def chunked(data, sizes=(7, 1000, 65536)):
    """data in chunked transfer coding (chunk sizes cycling through `sizes`),
    ending with the last chunk and an empty trailer section."""
    out = bytearray()
    i = 0
    for size in itertools.cycle(sizes):
        if i >= len(data):
            break
        piece = data[i : i + size]
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
        i += len(piece)
    return bytes(out) + b"0\r\n\r\n"


def file_sha256(path):
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        for _ in range(1 << 20):
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
            n += len(b)
    return n, h.hexdigest()


# -- fixtures --------------------------------------------------------------------------


class H1Service:
    """upstream: the H1Upstream; meshd: the Meshd; port: the HTTP1 listener;
    auto_port: the AUTO listener; grpc: the GrpcBackend or None."""

    def __init__(self, upstream, meshd, grpc=None):
        self.upstream = upstream
        self.meshd = meshd
        self.port = meshd.values["listen_port"]
        self.auto_port = meshd.values["auto_port"]
        self.grpc = grpc

    def stat(self, name, listener="h1_in"):
        v = self.meshd.stat(name, listener=listener)
        assert v is not None, f"{name}{{listener={listener!r}}} missing from /stats/prometheus"
        return v

    def conn(self, auto=False):
        return H1Conn(self.auto_port if auto else self.port)


@pytest.fixture
def h1_service(meshd, backends, request):
    """Factory: h1_service(route_timeout_ms=1000, grpc=False, concurrency=2,
    backend_kw=None, **values) -> H1Service: a fresh H1Upstream, meshd from
    bundles/h1_basic in front of it ({down_port} refuses connections; the
    gRPC cluster points at a fresh gRPC backend when grpc=True, else at a
    refusing port)."""
    made = []

    def make(route_timeout_ms=1000, grpc=False, concurrency=2, backend_kw=None, **values):
        up = H1Upstream(name="h2", **(backend_kw or {})).start()
        made.append(up)
        gb = None
        if grpc:
            gb = request.getfixturevalue("grpc_backend")()
            values.setdefault("grpc_port", gb.port)
        values.setdefault("grpc_port", backends.refusing().port)
        values.setdefault("down_port", backends.refusing().port)
        values.setdefault("upstream_port", up.port)
        m = meshd("h1_basic", concurrency=concurrency, route_timeout_ms=route_timeout_ms, **values)
        return H1Service(up, m, gb)

    yield make
    for up in made:
        up.stop()
