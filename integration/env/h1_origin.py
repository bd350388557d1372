# SPDX-License-Identifier: Apache-2.0
"""H1Origin: a real HTTP/1.1 origin server, written by hand on sockets, for
the tests of meshd's HTTP/1.1 *upstream* side (a cluster with
`protocol: HTTP1`). (env.h1.H1Upstream is something else: an HTTP/2 backend
behind an HTTP/1.1 downstream.)

It is an env.backends.TCPServer: one thread per connection, `accepted`,
`finished` (connections closed), `active` and `peak_active` (connections open
at once) come from there. On each connection it reads requests one after
the other (keep-alive; no pipelining needed, but pipelined requests are
answered in order) with a strict parser:
  - request line `METHOD SP request-target SP HTTP/1.x CRLF` (method a token,
    origin-form target);
  - header lines ended by CRLF (a bare LF, obs-fold, whitespace before the
    colon, a name that is not a token: a violation);
  - HTTP/1.1: exactly one Host;
  - body: Content-Length (digits; repeated only with the same value) or
    `Transfer-Encoding: chunked` (hex sizes, CRLF after each chunk's data,
    trailer section), never both; any other transfer coding is a violation.
A violation is recorded in `violations` and answered 400 + close; a test
checks `violations == []`.

Every request is recorded (`requests`, a list of dicts, in arrival order):
  conn       id of its connection (1, 2, ... in accept order)
  seq        its index on that connection (1, 2, ...)
  method, target, path (target without query), query ({name: [values]}),
  version    "1.1" / "1.0"
  headers    [(name lower-case, value)] in order; raw_names: names as sent
  framing    "length" | "chunked" | "none"
  body_len, body_sha256; body (the bytes, only when <= KEEP_BODY)
  trailers   [(name, value)] of a chunked request
  expect     the Expect header (the origin answers 100-continue itself)
  answered   False until (or if never) the final response starts going out;
             "bad" for a bad=... answer
Connections: `conn_end[cid]` says how each one ended:
  "peer_eof" / "peer_rst"   meshd closed it (FIN) / reset it
  "server_close"            this server closed it on purpose (close=1, eof=1,
                            idle_close_ms, drop_next, bad=..., a violation)
  "server_reset"            this server reset it on purpose (reset=1, drop_next=rst)
  "stopped"                 stop() ended it
`open_conns()` lists the ids of connections still open.

Behaviour by query parameters of the request target:
  size=N          a body of N bytes: env.h2_backend.det_body(N) (default: KNOWN_BODY)
  echo[=1]        the response body is the request body (POST/PUT)
  digest=1        the response body is b"<sha256 hex> <length>\\n" of the request body
  chunked=1       chunked response (chunk sizes cycle through 1000, 7, 16384)
  trailer=N:V     a chunked trailer field (repeatable, percent-decoded); implies chunked
  close=1         `Connection: close` in the response, then close
  eof=1           no Content-Length, no chunking: the body ends with the
                  close (close-delimited), no Connection header
  status=N        the final status (204 and 304 never carry a body; 304 with
                  cl=N carries `Content-Length: N` as RFC 9110 §8.6 allows)
  interim=N       send an interim `HTTP/1.1 N <reason>` before the final
                  response (repeatable; 100 Continue, 103 Early Hints, ...)
  delay_ms=N      wait N ms (after reading the whole request) before answering
  idle_close_ms=N after this response, close the connection (FIN) if no new
                  request starts within N ms: a kept-alive connection the
                  origin gave up on (meshd sees the FIN while the connection is
                  idle in its pool)
  drop_next=1     after this response, keep the connection; the *next* request
                  on it is read whole and the connection closed without an
                  answer (FIN; drop_next=rst: RST): a stale pooled connection
                  whose close crossed the request, as on a real network
  hop=1           hop-by-hop fields in the response: `Connection: keep-alive,
                  X-Origin-Hop`, `Keep-Alive: timeout=5, max=100`,
                  `X-Origin-Hop: secret`, `Proxy-Connection: keep-alive`,
                  `Upgrade: h2c` (no upgrade: status is not 101)
  bad=1|status    malformed response bytes: a non-numeric status code
  bad=header      a header line without a colon
  bad=chunk       headers and one good chunk, then a bad chunk size line
  reset=1         read the request, then RST (SO_LINGER 0) without answering
HEAD is answered without a body (Content-Length of the body a GET would get).
Response headers always carry X-Origin-Conn and X-Origin-Seq (which connection
and request served it) and X-Echo-Method; for requests with a body
X-Echo-Body-Len and X-Echo-Body-Sha256 too.

TLS: H1Origin(ssl_context=ctx) (an ssl.SSLContext, server side) serves
HTTPS: each accepted connection is wrapped and handshaken first. A failed
handshake is recorded in `tls_errors` ({"conn", "error"}) and the connection
closed (conn_end "tls_failed"); a good one in `tls_info[cid]` = {"version",
"alpn" (selected ALPN protocol or None), "peer_uris" (URI SANs of the
verified client certificate, [] without one), "peer_serial" (its serial,
upper-case hex as `openssl x509 -serial` prints it, or None)}.

Every socket operation has a timeout; every loop is bounded.
"""
import hashlib
import http
import itertools
import re
import socket
import time
import urllib.parse

from env.backends import TCPServer
from env.clients import reset_close
from env.h2_backend import det_body

KNOWN_BODY = b"hello from the h1 origin\n"
KEEP_BODY = 16 << 20  # request bodies up to this are kept in the record (echo needs them)
IO_TIMEOUT = 60.0  # per socket operation (hang guard only)
IDLE_WAIT = 120.0  # how long a connection may sit between requests
MAX_LINE = 64 * 1024
MAX_HEADERS = 200
CHUNK_SIZES = (1000, 7, 16384)
SEG = 1 << 20  # response bodies are written in pieces of this size

TOKEN_RE = re.compile(rb"\A[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
REQ_LINE_RE = re.compile(rb"\A([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (/[^ \x00-\x1f\x7f]*|\*) HTTP/1\.([01])\Z")
HEX_RE = re.compile(rb"\A[0-9a-fA-F]{1,16}\Z")


class Violation(Exception):
    """The request broke HTTP/1.1 framing or syntax."""


class _Gone(Exception):
    """The peer closed (how: "peer_eof" / "peer_rst")."""

    def __init__(self, how):
        super().__init__(how)
        self.how = how


class _IdleTimeout(Exception):
    pass


class _Reader:
    """Buffered reads off one socket, bounded."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def fill(self, timeout=IO_TIMEOUT):
        self.sock.settimeout(timeout)
        try:
            b = self.sock.recv(1 << 20)
        except ConnectionResetError:
            raise _Gone("peer_rst") from None
        if not b:
            raise _Gone("peer_eof")
        self.buf += b

    def line(self, what):
        for _ in range(100_000):
            i = self.buf.find(b"\n")
            if i >= 0:
                if i == 0 or self.buf[i - 1] != 0x0D:
                    raise Violation(f"{what}: line not ended by CRLF: {bytes(self.buf[: i + 1])[:200]!r}")
                line = bytes(self.buf[: i - 1])
                del self.buf[: i + 1]
                if b"\r" in line:
                    raise Violation(f"{what}: bare CR in line {line[:200]!r}")
                return line
            if len(self.buf) > MAX_LINE:
                raise Violation(f"{what}: line over {MAX_LINE} bytes")
            self.fill()
        raise Violation(f"{what}: no line")

    def exact(self, n, sink):
        left = n
        for _ in range(100_000_000):
            if left == 0:
                return
            if not self.buf:
                self.fill()
            take = min(left, len(self.buf))
            sink(bytes(self.buf[:take]))
            del self.buf[:take]
            left -= take


class H1Origin(TCPServer):
    """See the module docstring."""

    def __init__(self, name="h1origin", ssl_context=None, **kw):
        super().__init__(name=name, **kw)
        self.ssl_context = ssl_context
        self.tls_info = {}
        self.tls_errors = []
        self.requests = []
        self.violations = []
        self.conn_end = {}
        self._cid_of = {}

    # -- bookkeeping ----------------------------------------------------------------
    def _thread_for(self, conn, cid):
        self._cid_of[id(conn)] = cid
        return super()._thread_for(conn, cid)

    def requests_for(self, prefix):
        with self._lock:
            return [r for r in self.requests if r["target"].startswith(prefix)]

    def conn_ids(self):
        with self._lock:
            return sorted({r["conn"] for r in self.requests})

    def open_conns(self):
        with self._lock:
            return [c for c in range(1, self.accepted + 1) if c not in self.conn_end]

    def counts(self):
        """(accepted, finished, active, peak_active) read together."""
        with self._lock:
            return self.accepted, self.finished, self.active, self.peak_active

    def reset_peak(self):
        with self._lock:
            self.peak_active = self.active

    # -- one connection -------------------------------------------------------------
    def _tls_accept(self, conn, cid):
        """Wraps |conn| in TLS (handshake done) or returns None after
        recording why not."""
        import ssl

        try:
            tconn = self.ssl_context.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError) as e:
            with self._lock:
                self.tls_errors.append({"conn": cid, "error": repr(e)})
                self.conn_end[cid] = "tls_failed"
            return None
        cert = tconn.getpeercert() or {}
        with self._lock:
            self.tls_info[cid] = {
                "version": tconn.version(),
                "alpn": tconn.selected_alpn_protocol(),
                "peer_uris": [v for k, v in cert.get("subjectAltName", ()) if k == "URI"],
                "peer_serial": (cert.get("serialNumber") or "").upper().lstrip("0") or None,
            }
        return tconn

    def handle(self, conn):
        with self._lock:
            cid = self._cid_of.pop(id(conn))
        if self.ssl_context is not None:
            tconn = self._tls_accept(conn, cid)
            if tconn is None:
                return
            with self._lock:
                self._conns.add(tconn)  # stop() shuts it down too
            try:
                return self._handle(tconn, cid)
            finally:
                with self._lock:
                    self._conns.discard(tconn)
                try:
                    tconn.close()
                except OSError:
                    pass
        return self._handle(conn, cid)

    def _handle(self, conn, cid):
        rd = _Reader(conn)
        end = "stopped"
        try:
            end = self._serve(conn, rd, cid)
        except _Gone as g:
            end = g.how
        except _IdleTimeout:
            end = "idle_wait_over"
        except (BrokenPipeError, ConnectionResetError):
            end = "peer_rst"
        except OSError:
            if not self._stop.is_set():
                raise
        finally:
            if self._stop.is_set() and end in ("peer_eof", "peer_rst", "idle_wait_over"):
                end = "stopped"
            with self._lock:
                self.conn_end[cid] = end
        self.results.put({"conn": cid, "end": end})

    def _serve(self, conn, rd, cid):
        idle_close = None
        drop_next = None
        for seq in range(1, 1_000_000):
            # Wait for the next request's first byte (the idle period).
            if not rd.buf:
                limit = idle_close if idle_close is not None else IDLE_WAIT
                try:
                    rd.fill(timeout=limit)
                except socket.timeout:
                    if idle_close is not None:
                        conn.shutdown(socket.SHUT_WR)
                        return "server_close"
                    raise _IdleTimeout() from None
            try:
                rec = self._read_request(conn, rd, cid, seq)
            except Violation as v:
                with self._lock:
                    self.violations.append({"conn": cid, "seq": seq, "reason": str(v)})
                self._send_simple(conn, 400, b"bad request: " + str(v).encode()[:200] + b"\n")
                conn.shutdown(socket.SHUT_WR)
                return "server_close"
            if drop_next is not None:
                if drop_next == "rst":
                    reset_close(conn)
                    return "server_reset"
                conn.shutdown(socket.SHUT_WR)
                return "server_close"
            keep, idle_close, drop_next = self._answer(conn, rec)
            if keep == "reset":
                reset_close(conn)
                return "server_reset"
            if not keep:
                conn.shutdown(socket.SHUT_WR)
                return "server_close"
        return "server_close"

    def _read_request(self, conn, rd, cid, seq):
        line = rd.line("request line")
        m = REQ_LINE_RE.match(line)
        if not m:
            raise Violation(f"bad request line {line[:200]!r}")
        method, target, minor = m.group(1).decode(), m.group(2).decode("latin-1"), m.group(3)
        headers, raw_names = [], []
        for _ in range(MAX_HEADERS + 1):
            hl = rd.line("header section")
            if hl == b"":
                break
            if hl[:1] in (b" ", b"\t"):
                raise Violation(f"obs-fold line {hl[:200]!r}")
            name, sep, value = hl.partition(b":")
            if not sep or not TOKEN_RE.match(name):
                raise Violation(f"malformed header line {hl[:200]!r}")
            raw_names.append(name.decode("latin-1"))
            headers.append((name.decode("latin-1").lower(), value.strip(b" \t").decode("latin-1")))
        else:
            raise Violation(f"more than {MAX_HEADERS} header fields")

        def all_of(n):
            return [v for k, v in headers if k == n]

        hosts = all_of("host")
        if minor == b"1" and len(hosts) != 1:
            raise Violation(f"HTTP/1.1 request with {len(hosts)} Host fields: {headers}")
        te = [t.strip().lower() for v in all_of("transfer-encoding") for t in v.split(",") if t.strip()]
        cls = all_of("content-length")
        if te and cls:
            raise Violation(f"both Transfer-Encoding and Content-Length: {headers}")
        split = urllib.parse.urlsplit(target)
        rec = {
            "conn": cid, "seq": seq, "method": method, "target": target, "path": split.path,
            "query": urllib.parse.parse_qs(split.query, keep_blank_values=True),
            "version": f"1.{minor.decode()}", "headers": headers, "raw_names": raw_names,
            "framing": "none", "body_len": 0, "body_sha256": hashlib.sha256().hexdigest(),
            "body": b"", "trailers": [], "expect": (all_of("expect") or [None])[0],
            "answered": False, "t_read": None,
        }
        if rec["expect"] and rec["expect"].lower() == "100-continue" and (te or (cls and cls[0] != "0")):
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        h = hashlib.sha256()
        parts = []
        kept = [0]

        def sink(b):
            h.update(b)
            rec["body_len"] += len(b)
            if kept[0] + len(b) <= KEEP_BODY:
                parts.append(b)
                kept[0] += len(b)
            else:
                kept[0] = KEEP_BODY + 1

        if te:
            if te != ["chunked"]:
                raise Violation(f"transfer codings {te}")
            rec["framing"] = "chunked"
            for _ in range(100_000_000):
                sl = rd.line("chunk size line")
                size_s = sl.split(b";", 1)[0]
                if not HEX_RE.match(size_s):
                    raise Violation(f"bad chunk size line {sl[:100]!r}")
                size = int(size_s, 16)
                if size == 0:
                    break
                rd.exact(size, sink)
                crlf = bytearray()
                rd.exact(2, crlf.extend)
                if crlf != b"\r\n":
                    raise Violation(f"chunk data not followed by CRLF: {bytes(crlf)!r}")
            for _ in range(MAX_HEADERS + 1):
                tl = rd.line("trailer section")
                if tl == b"":
                    break
                name, sep, value = tl.partition(b":")
                if not sep or not TOKEN_RE.match(name):
                    raise Violation(f"malformed trailer line {tl[:200]!r}")
                rec["trailers"].append((name.decode().lower(), value.strip(b" \t").decode("latin-1")))
            else:
                raise Violation("too many trailer fields")
        elif cls:
            vals = {v.strip() for c in cls for v in c.split(",")}
            if len(vals) != 1 or not next(iter(vals)).isdigit():
                raise Violation(f"bad Content-Length {cls}")
            n = int(next(iter(vals)))
            rec["framing"] = "length"
            rd.exact(n, sink)
        rec["body_sha256"] = h.hexdigest()
        rec["body"] = b"".join(parts) if kept[0] <= KEEP_BODY else None
        rec["t_read"] = time.monotonic()
        with self._lock:
            self.requests.append(rec)
        return rec

    # -- answers ----------------------------------------------------------------------
    @staticmethod
    def _reason(status):
        try:
            return http.HTTPStatus(status).phrase
        except ValueError:
            return "Status"

    def _send_simple(self, conn, status, body):
        conn.sendall(
            f"HTTP/1.1 {status} {self._reason(status)}\r\nServer: h1-origin\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
        )

    def _answer(self, conn, rec):
        """Answer rec; returns (keep: True | False | "reset", idle_close s or None,
        drop_next None | "fin" | "rst")."""
        q = rec["query"]

        def one(name, default=None):
            v = q.get(name)
            return v[0] if v else default

        delay = int(one("delay_ms", "0") or 0)
        if delay:
            self._stop.wait(delay / 1000.0)  # stop() does not wait out a long delay
        if one("reset", "0") == "1":
            return "reset", None, None
        bad = one("bad")
        if bad is not None and bad != "0":
            rec["answered"] = "bad"
            if bad in ("1", "status"):
                conn.sendall(b"HTTP/1.1 2x0 Broken\r\nContent-Length: 0\r\n\r\n")
            elif bad == "header":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nthis line has no colon\r\n\r\nok")
            elif bad == "chunk":
                conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nbad\r\n0\r\n\r\n")
            else:
                raise AssertionError(f"unknown bad={bad}")
            return False, None, None
        for st in q.get("interim", []):
            code = int(st)
            assert 100 <= code < 200 and code != 101, f"interim={st}"
            extra = "Link: </style.css>; rel=preload\r\n" if code == 103 else ""
            conn.sendall(f"HTTP/1.1 {code} {self._reason(code)}\r\n{extra}\r\n".encode())
        status = int(one("status", "200"))
        trailers = [urllib.parse.unquote(t).partition(":") for t in q.get("trailer", [])]
        trailers = [(k.strip(), v.strip()) for k, _, v in trailers]
        chunked = one("chunked", "0") == "1" or bool(trailers)
        close = one("close", "0") == "1"
        eof = one("eof", "0") == "1"
        hop = one("hop", "0") == "1"
        if "echo" in q and one("echo") != "0":
            body = rec["body"]
            assert body is not None, f"echo of a body over {KEEP_BODY} bytes: use digest=1"
            total = len(body)
        elif one("digest", "0") == "1":
            body = f"{rec['body_sha256']} {rec['body_len']}\n".encode()
            total = len(body)
        elif one("size") is not None:
            total = int(one("size"))
            body = None  # generated piecewise: det_body(total)
        else:
            body = KNOWN_BODY
            total = len(body)
        no_body = status in (204, 304) or 100 <= status < 200 or rec["method"] == "HEAD"
        hdrs = [
            ("Server", "h1-origin"),
            ("X-Origin-Conn", str(rec["conn"])),
            ("X-Origin-Seq", str(rec["seq"])),
            ("X-Echo-Method", rec["method"]),
        ]
        if rec["framing"] != "none":
            hdrs += [("X-Echo-Body-Len", str(rec["body_len"])), ("X-Echo-Body-Sha256", rec["body_sha256"])]
        if hop:
            hdrs += [("Connection", "keep-alive, X-Origin-Hop"), ("Keep-Alive", "timeout=5, max=100"),
                     ("X-Origin-Hop", "secret"), ("Proxy-Connection", "keep-alive"), ("Upgrade", "h2c")]
        if status in (204,) or 100 <= status < 200:
            pass  # never a length
        elif status == 304:
            if one("cl") is not None:
                hdrs.append(("Content-Length", one("cl")))
        elif eof:
            pass
        elif chunked:
            hdrs.append(("Transfer-Encoding", "chunked"))
            if trailers:
                hdrs.append(("Trailer", ", ".join(k for k, _ in trailers)))
        else:
            hdrs.append(("Content-Length", str(total)))
        if close:
            hdrs.append(("Connection", "close"))
        head = f"HTTP/1.1 {status} {self._reason(status)}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs) + "\r\n"
        conn.settimeout(IO_TIMEOUT)
        rec["answered"] = True  # from the first byte of the final response on
        if no_body:
            conn.sendall(head.encode("latin-1"))
        else:
            pieces = self._pieces(body, total)
            if chunked and not eof:
                conn.sendall(head.encode("latin-1"))
                sizes = itertools.cycle(CHUNK_SIZES)
                for piece in pieces:
                    mv = memoryview(piece)
                    off = 0
                    for _ in range(len(piece) + 1):
                        if off >= len(mv):
                            break
                        n = next(sizes)
                        c = mv[off : off + n]
                        conn.sendall(b"%x\r\n" % len(c) + bytes(c) + b"\r\n")
                        off += len(c)
                conn.sendall(b"0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in trailers).encode("latin-1") + b"\r\n")
            else:
                first = True
                for piece in pieces:
                    conn.sendall((head.encode("latin-1") + piece) if first else piece)
                    first = False
                if first:
                    conn.sendall(head.encode("latin-1"))
        if eof or close:
            return False, None, None
        idle = one("idle_close_ms")
        dn = one("drop_next")
        return (True, int(idle) / 1000.0 if idle else None,
                None if dn in (None, "0") else ("rst" if dn == "rst" else "fin"))

    @staticmethod
    def _pieces(body, total):
        if body is not None:
            return [body] if body else []
        seg = det_body(min(total, SEG))  # SEG is a multiple of det_body's 64 KiB block
        return (seg[: min(SEG, total - off)] for off in range(0, total, SEG))
