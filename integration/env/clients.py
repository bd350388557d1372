# SPDX-License-Identifier: Apache-2.0
"""Raw-socket client helpers and a bounded poll loop; at the end, HTTP/2 and
gRPC clients: grpcio channels, a raw HTTP/2 client (H2Client, python3-h2),
and wrappers for curl, nghttp, h2load and grpcurl.

Every socket gets a timeout so nothing blocks forever; every loop here is
bounded in time (a deadline) and in iterations.
"""
import hashlib
import itertools
import socket
import struct
import threading
import time

DEFAULT_TIMEOUT = 30.0


def wait_until(pred, timeout=10.0, interval=0.02, what="condition"):
    """Call pred() until it returns a truthy value or `timeout` seconds pass.
    Returns the truthy value; raises AssertionError naming `what` otherwise
    (with the last value or exception). Bounded in time and in iterations."""
    deadline = time.monotonic() + timeout
    max_iter = int(timeout / interval) + 1000
    last = None
    for _ in range(max_iter):
        try:
            last = pred()
        except Exception as e:  # noqa: BLE001 - reported on timeout
            last = e
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)  # poll interval, not a readiness wait
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def wait_stalled(read, quiet=1.0, timeout=60.0, interval=0.05, what="progress to stop"):
    """Poll read() until its value has not changed for `quiet` seconds (e.g. a
    byte counter blocked by TCP backpressure). Returns the stalled value;
    raises AssertionError naming `what` (with the last value) if it still
    moves after `timeout` seconds. Bounded in time and in iterations."""
    deadline = time.monotonic() + timeout
    max_iter = int(timeout / interval) + 1000
    last = read()
    since = time.monotonic()
    for _ in range(max_iter):
        time.sleep(interval)  # poll interval, not a readiness wait
        now = time.monotonic()
        cur = read()
        if cur != last:
            last, since = cur, now
        elif now - since >= quiet:
            return cur
        if now >= deadline:
            break
    raise AssertionError(f"{what}: still changing after {timeout}s; last: {last!r}")


def connect(port, timeout=DEFAULT_TIMEOUT, host="127.0.0.1"):
    s = socket.create_connection((host, port), timeout=timeout)
    s.settimeout(timeout)
    return s


def send_chunks(sock, chunks, on_sent=None):
    """sendall each chunk; returns (bytes sent, sha256 hex). `on_sent(n)` is
    called with the running total after each chunk (progress tracking)."""
    h = hashlib.sha256()
    n = 0
    for c in chunks:
        sock.sendall(c)
        h.update(c)
        n += len(c)
        if on_sent is not None:
            on_sent(n)
    return n, h.hexdigest()


def reset_close(sock):
    """Abort a connection: SO_LINGER (on, 0 s) then close(), so the kernel
    sends RST instead of FIN (and drops whatever was not sent yet)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def recv_to_eof(sock, keep=False, limit=None):
    """Read until EOF. Returns (length, sha256 hex, data or None).
    `keep` keeps the bytes (small transfers only); `limit` fails if more than
    `limit` bytes arrive."""
    h = hashlib.sha256()
    n = 0
    parts = [] if keep else None
    while True:
        b = sock.recv(1 << 20)
        if not b:
            break
        n += len(b)
        h.update(b)
        if keep:
            parts.append(b)
        if limit is not None and n > limit:
            raise AssertionError(f"received more than {limit} bytes")
    return n, h.hexdigest(), (b"".join(parts) if keep else None)


def recv_until_closed(sock, keep=False, limit=None):
    """Read until the peer closes, telling a clean EOF from a reset.
    Returns (how, length, sha256 hex, data or None) with how "eof" (FIN) or
    "rst" (recv raised ConnectionResetError, possibly after some bytes)."""
    h = hashlib.sha256()
    n = 0
    parts = [] if keep else None
    how = "eof"
    while True:
        try:
            b = sock.recv(1 << 20)
        except ConnectionResetError:
            how = "rst"
            break
        if not b:
            break
        n += len(b)
        h.update(b)
        if keep:
            parts.append(b)
        if limit is not None and n > limit:
            raise AssertionError(f"received more than {limit} bytes")
    return how, n, h.hexdigest(), (b"".join(parts) if keep else None)


def recv_exact(sock, n):
    """Read exactly n bytes (fails on early EOF)."""
    buf = bytearray()
    while len(buf) < n:
        b = sock.recv(min(1 << 20, n - len(buf)))
        if not b:
            raise AssertionError(f"EOF after {len(buf)} of {n} bytes")
        buf += b
    return bytes(buf)


def echo_roundtrip(sock, payload):
    """Send payload and read the same number of bytes back."""
    sock.sendall(payload)
    got = recv_exact(sock, len(payload))
    assert got == payload, f"echo mismatch ({len(payload)} bytes sent)"
    return got


def expect_closed(sock, timeout=5.0):
    """Wait for the peer to close: returns "eof" (FIN) or "rst" (reset).
    Fails if data arrives or nothing happens within `timeout` seconds."""
    sock.settimeout(timeout)
    try:
        b = sock.recv(65536)
    except ConnectionResetError:
        return "rst"
    except socket.timeout:
        raise AssertionError(f"connection still open after {timeout}s")
    assert b == b"", f"expected a close, got {len(b)} bytes of data: {b[:64]!r}"
    return "eof"


# tcpi_state values (include/net/tcp_states.h)
TCP_STATES = {
    1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
    6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING",
}


def tcp_state(sock):
    """The kernel's TCP state of `sock` (TCP_INFO tcpi_state) as a name, without
    reading or writing it. A connection the peer reset is "CLOSE"; one the
    peer half-closed (FIN) is "CLOSE_WAIT"."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
    return TCP_STATES.get(info[0], str(info[0]))


def fill_until_blocked(sock, quiet=1.0, timeout=60.0, chunk=64 * 1024, seed=0):
    """Send filler bytes without blocking until the socket has
    accepted nothing for `quiet` seconds (the peer's path is full: TCP flow
    control). Unlike a blocked sendall(), this leaves the socket free to be
    reset by the caller. Returns the bytes queued. Bounded in time and in
    iterations; the socket is left in blocking mode with its old timeout."""
    old_timeout = sock.gettimeout()
    buf = bytes([seed & 0xFF]) * chunk
    sock.setblocking(False)
    n = 0
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    try:
        for _ in range(int(timeout / 0.01) + 100000):
            try:
                n += sock.send(buf)
                last = time.monotonic()
                continue
            except BlockingIOError:
                pass
            now = time.monotonic()
            if now - last >= quiet:
                return n
            if now >= deadline:
                break
            time.sleep(0.01)  # poll interval
    finally:
        sock.settimeout(old_timeout)
    raise AssertionError(f"socket still accepting data after {timeout}s ({n} bytes queued)")


class BackgroundSender:
    """Send chunks from a thread (so the caller can read at the same time),
    then optionally shutdown(SHUT_WR). join() re-raises the thread's error."""

    def __init__(self, sock, chunks, shut_wr=True):
        self.sock = sock
        self.chunks = chunks
        self.shut_wr = shut_wr
        self.sent = 0
        self.progress = 0  # bytes handed to the kernel so far (per chunk)
        self.sha256 = None
        self.error = None
        self._t = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._t.start()
        return self

    def _run(self):
        try:
            self.sent, self.sha256 = send_chunks(self.sock, self.chunks, self._on_sent)
            if self.shut_wr:
                self.sock.shutdown(socket.SHUT_WR)
        except Exception as e:  # noqa: BLE001 - re-raised by join()
            self.error = e

    def _on_sent(self, n):
        self.progress = n

    def join(self, timeout=DEFAULT_TIMEOUT):
        self._t.join(timeout)
        if self._t.is_alive():
            raise AssertionError(f"sender still running after {timeout}s")
        if self.error is not None:
            raise self.error
        return self.sent, self.sha256


# -- HTTP/2 and gRPC clients ---------------------------------------------------------
# grpcio, a raw HTTP/2 client (python3-h2) for what grpcio and curl hide (frame
# shapes, exact header lists, RST_STREAM codes), and wrappers for curl, nghttp,
# h2load and grpcurl. grpc and h2 are imported lazily: the TCP tests need neither.

GRPC_MAX_MESSAGE = 80 * 1024 * 1024  # the 64 MiB test's message plus room
TOOL_TIMEOUT = 120.0  # hang guard for an external client process


def grpc_channel(port, host="127.0.0.1", authority=None, options=()):
    """An insecure grpcio channel of its own (not sharing a TCP connection
    with other channels: local subchannel pool), no proxy, no retries, large
    messages allowed."""
    import grpc

    opts = [
        ("grpc.max_send_message_length", GRPC_MAX_MESSAGE),
        ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE),
        ("grpc.enable_retries", 0),
        ("grpc.enable_http_proxy", 0),
        ("grpc.use_local_subchannel_pool", 1),
    ]
    if authority is not None:
        opts.append(("grpc.default_authority", authority))
    opts += list(options)
    return grpc.insecure_channel(f"{host}:{port}", options=opts)


def grpc_wait_ready(channel, timeout=10.0):
    """Block until the channel is connected (bounded)."""
    import grpc

    grpc.channel_ready_future(channel).result(timeout=timeout)


def established_to(port):
    """Number of ESTABLISHED TCP connections whose remote end is 127.0.0.1:`port`,
    i.e. client sockets connected to that port (grpcio uses IPv6 sockets with
    v4-mapped addresses, so /proc/net/tcp6 counts too)."""
    want = {f"0100007F:{port:04X}", f"0000000000000000FFFF00000100007F:{port:04X}"}
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            f = open(table)
        except FileNotFoundError:
            continue
        with f:
            next(f)
            for line in f:
                parts = line.split()
                if len(parts) > 3 and parts[2] in want and parts[3] == "01":
                    n += 1
    return n


def grpc_frame(msg, compressed=False):
    """One gRPC length-prefixed message."""
    return struct.pack(">BI", 1 if compressed else 0, len(msg)) + msg


def grpc_messages(data):
    """Split a gRPC body into its messages; fails on a truncated frame."""
    out = []
    i = 0
    while i < len(data):
        assert len(data) - i >= 5, f"truncated gRPC frame header at byte {i} of {len(data)}"
        flag, n = struct.unpack(">BI", data[i : i + 5])
        assert flag == 0, f"compressed gRPC message at byte {i}"
        assert len(data) - i - 5 >= n, f"truncated gRPC message at byte {i}: {n} declared"
        out.append(bytes(data[i + 5 : i + 5 + n]))
        i += 5 + n
    return out


def grpc_request_headers(path, authority="localhost", timeout=None, extra=()):
    """Request headers of a gRPC call (`timeout`: a grpc-timeout value, e.g. "5S")."""
    h = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    if timeout is not None:
        h.append(("grpc-timeout", timeout))
    return h + list(extra)


class H2Response:
    """What came back on one stream.
    events: kinds in arrival order, "headers" | "data" | "trailers" |
    "end" | "reset" | "goaway"; headers/trailers are [(name, value)] str."""

    def __init__(self):
        self.events = []
        self.headers = None
        self.informational = []
        self.data = bytearray()
        self.trailers = None
        self.reset = None  # RST_STREAM error code
        self.goaway = None  # GOAWAY error code
        self.ended = False

    @property
    def status(self):
        return None if self.headers is None else int(self.header(":status"))

    def header(self, name, where=None):
        vals = self.header_all(name, where)
        return vals[0] if vals else None

    def header_all(self, name, where=None):
        src = self.headers if where is None else where
        return [v for k, v in (src or []) if k == name]

    @property
    def trailers_only(self):
        """A single HEADERS frame that ended the stream (gRPC trailers-only)."""
        return self.events == ["headers", "end"]

    def grpc_field(self, name):
        """grpc-status / grpc-message from the trailers, or from the headers
        of a trailers-only response."""
        if self.trailers is not None:
            return self.header(name, self.trailers)
        if self.trailers_only:
            return self.header(name)
        return None

    @property
    def grpc_status(self):
        v = self.grpc_field("grpc-status")
        return None if v is None else int(v)

    def __repr__(self):
        return (
            f"H2Response(events={self.events}, headers={self.headers}, data={len(self.data)}B, "
            f"trailers={self.trailers}, reset={self.reset}, goaway={self.goaway})"
        )


class H2Client:
    """A raw HTTP/2 client over h2c prior knowledge, one request at a time.
    validate=False sends headers HTTP/2 forbids (to test the proxy's rules)."""

    def __init__(self, port, host="127.0.0.1", timeout=DEFAULT_TIMEOUT, validate=True):
        import h2.config
        import h2.connection

        self.timeout = timeout
        self.sock = connect(port, timeout=timeout, host=host)
        cfg = h2.config.H2Configuration(
            client_side=True,
            header_encoding="utf-8",
            validate_outbound_headers=validate,
            normalize_outbound_headers=validate,
            validate_inbound_headers=False,
        )
        self.conn = h2.connection.H2Connection(config=cfg)
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(16 * 1024 * 1024 - 65535)
        self.sock.sendall(self.conn.data_to_send())
        self.closed = None  # GOAWAY error code once received

    def close(self):
        try:
            self.conn.close_connection()
            self.sock.sendall(self.conn.data_to_send())
        except Exception:  # noqa: BLE001 - closing anyway
            pass
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def request(self, headers, body=b"", trailers=None, timeout=None, end_stream=True):
        """Send one request and read its response to the end (END_STREAM,
        RST_STREAM or GOAWAY). Fails if nothing ends it within `timeout`."""
        sid = self.conn.get_next_available_stream_id()
        last = not body and not trailers and end_stream
        self.conn.send_headers(sid, headers, end_stream=last)
        self.sock.sendall(self.conn.data_to_send())
        resp = H2Response()
        pending = memoryview(bytes(body))
        trailers_due = bool(trailers)
        deadline = time.monotonic() + (timeout or self.timeout)
        for _ in range(1_000_000):
            if resp.reset is not None or resp.goaway is not None:
                pending, trailers_due = memoryview(b""), False  # the stream is gone
            # Send what flow control allows.
            while len(pending):
                win = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
                if win <= 0:
                    break
                chunk, pending = pending[:win], pending[win:]
                done = not len(pending) and not trailers and end_stream
                self.conn.send_data(sid, bytes(chunk), end_stream=done)
            if not len(pending) and trailers_due:
                self.conn.send_headers(sid, trailers, end_stream=True)
                trailers_due = False
            out = self.conn.data_to_send()
            if out:
                self.sock.sendall(out)
            if resp.ended or resp.reset is not None or resp.goaway is not None:
                return resp
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(1 << 20)
            except socket.timeout:
                break
            except ConnectionResetError:
                resp.events.append("conn-reset")
                return resp
            if not data:
                resp.events.append("eof")
                return resp
            self._handle(self.conn.receive_data(data), sid, resp)
        raise AssertionError(f"stream {sid}: no end within {timeout or self.timeout}s; so far {resp!r}")

    def _handle(self, events, sid, resp):
        import h2.events as ev

        for e in events:
            if getattr(e, "stream_id", sid) != sid and not isinstance(e, ev.ConnectionTerminated):
                continue
            if isinstance(e, ev.InformationalResponseReceived):
                resp.informational.append(list(e.headers))
            elif isinstance(e, ev.ResponseReceived):
                resp.headers = list(e.headers)
                resp.events.append("headers")
            elif isinstance(e, ev.DataReceived):
                resp.data += e.data
                resp.events.append("data")
                self.conn.acknowledge_received_data(e.flow_controlled_length, sid)
            elif isinstance(e, ev.TrailersReceived):
                resp.trailers = list(e.headers)
                resp.events.append("trailers")
            elif isinstance(e, ev.StreamEnded):
                resp.ended = True
                resp.events.append("end")
            elif isinstance(e, ev.StreamReset):
                resp.reset = int(e.error_code)
                resp.events.append("reset")
            elif isinstance(e, ev.ConnectionTerminated):
                resp.goaway = int(e.error_code)
                self.closed = resp.goaway
                resp.events.append("goaway")
        # Merge consecutive "data" events: the frame count is not the point.
        merged = []
        for k in resp.events:
            if not (k == "data" and merged and merged[-1] == "data"):
                merged.append(k)
        resp.events[:] = merged


def h2_get(port, path, authority="localhost", headers=(), method="GET", body=b"", timeout=DEFAULT_TIMEOUT, validate=True):
    """One plain HTTP/2 request on a new connection; returns H2Response."""
    with H2Client(port, timeout=timeout, validate=validate) as c:
        hdrs = [(":method", method), (":scheme", "http"), (":path", path), (":authority", authority)]
        return c.request(hdrs + list(headers), body=body, timeout=timeout)


class ToolResult:
    """An external client's run: rc, stdout/stderr (bytes), argv; for HTTP
    tools also status (int), headers [(name, value)] and body (bytes)."""

    def __init__(self, argv, proc, status=None, headers=None, body=None):
        self.argv = argv
        self.rc = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.status = status
        self.headers = headers or []
        self.body = body

    def header(self, name):
        vals = [v for k, v in self.headers if k == name]
        return vals[0] if vals else None

    def header_all(self, name):
        return [v for k, v in self.headers if k == name]

    def __repr__(self):
        return (
            f"ToolResult(argv={self.argv}, rc={self.rc}, status={self.status}, headers={self.headers}, "
            f"stderr={self.stderr[-500:]!r})"
        )


def _run_tool(argv, timeout=TOOL_TIMEOUT, input_bytes=None):
    import subprocess

    return subprocess.run(
        [str(a) for a in argv],
        input=input_bytes,
        stdin=None if input_bytes is not None else subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
    )


def curl_h2(port, path, workdir, method=None, headers=(), data=None, host="127.0.0.1", max_time=30, extra=()):
    """curl --http2-prior-knowledge; data (bytes) is sent from a file.
    Returns ToolResult with status, http_version, response headers
    (lower-case names) and body."""
    from pathlib import Path

    n = next(_curl_seq)
    wd = Path(workdir)
    hfile, bfile = wd / f"curl{n}.headers", wd / f"curl{n}.body"
    argv = ["curl", "-sS", "--http2-prior-knowledge", "--noproxy", "*", "--max-time", max_time]
    argv += ["-D", hfile, "-o", bfile]
    if method:
        argv += ["-X", method]
    for h in headers:
        argv += ["-H", h]
    if data is not None:
        dfile = wd / f"curl{n}.data"
        dfile.write_bytes(data)
        argv += ["--data-binary", f"@{dfile}"]
    argv += list(extra) + [f"http://{host}:{port}{path}"]
    p = _run_tool(argv, timeout=max_time + 30)
    status, hdrs, version = None, [], None
    if hfile.exists():
        for line in hfile.read_bytes().decode("utf-8", "replace").splitlines():
            if line.startswith("HTTP/"):
                # the last response wins (after any 1xx)
                version, status, hdrs = line.split()[0][5:], int(line.split()[1]), []
            elif ":" in line:
                k, _, v = line.partition(":")
                hdrs.append((k.strip().lower(), v.strip()))
    body = bfile.read_bytes() if bfile.exists() else None
    r = ToolResult(argv, p, status=status, headers=hdrs, body=body)
    r.http_version = version  # "2" for HTTP/2
    return r


_curl_seq = itertools.count(1)


def nghttp(port, path, headers=(), data_file=None, multiply=1, verbose=True, host="127.0.0.1", timeout=30, extra=()):
    """nghttp (h2c prior knowledge). verbose=True: -nv, and the responses'
    :status and headers are parsed per stream (ToolResult.streams:
    {stream_id: [(name, value), ...]}, .statuses: list of ints); verbose=False:
    stdout is the body (ToolResult.body)."""
    import re

    argv = ["nghttp", f"--timeout={timeout}"]
    argv += ["-nv"] if verbose else []
    for h in headers:
        argv += ["-H", h]
    if data_file is not None:
        argv += ["-d", data_file]
    if multiply > 1:
        argv += ["-m", multiply]
    argv += list(extra) + [f"http://{host}:{port}{path}"]
    p = _run_tool(argv, timeout=timeout + 30)
    r = ToolResult(argv, p, body=None if verbose else p.stdout)
    r.streams = {}
    if verbose:
        # e.g. "[  0.002] recv (stream_id=13) :status: 200"
        line_re = re.compile(r"^\[\s*[\d.]+\] recv \(stream_id=(\d+)\) (:?[^:]+): (.*)$")
        for line in p.stdout.decode("utf-8", "replace").splitlines():
            m = line_re.match(line)
            if m:
                r.streams.setdefault(int(m.group(1)), []).append((m.group(2), m.group(3)))
    r.statuses = [int(v) for hs in r.streams.values() for k, v in hs if k == ":status"]
    if r.statuses:
        r.status = r.statuses[0]
        r.headers = next(iter(r.streams.values()))
    return r


H2LOAD_REQ_RE = (
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout"
)
H2LOAD_STATUS_RE = r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx"


def h2load(port, path, n=1000, clients=4, streams=10, host="127.0.0.1", timeout=120, extra=()):
    """h2load over h2c. Returns ToolResult with .summary = {total, started,
    done, succeeded, failed, errored, timeout, 2xx, 3xx, 4xx, 5xx} (None if
    the output did not parse)."""
    import re

    argv = ["h2load", "-n", n, "-c", clients, "-m", streams, *extra, f"http://{host}:{port}{path}"]
    p = _run_tool(argv, timeout=timeout)
    r = ToolResult(argv, p)
    out = p.stdout.decode("utf-8", "replace")
    m1, m2 = re.search(H2LOAD_REQ_RE, out), re.search(H2LOAD_STATUS_RE, out)
    r.summary = None
    if m1 and m2:
        keys = ["total", "started", "done", "succeeded", "failed", "errored", "timeout"]
        r.summary = dict(zip(keys, map(int, m1.groups())))
        r.summary.update(zip(["2xx", "3xx", "4xx", "5xx"], map(int, m2.groups())))
    return r


def grpcurl(*args, timeout=60, input_bytes=None):
    """Run grpcurl (found on PATH) with args; returns ToolResult."""
    import shutil

    exe = shutil.which("grpcurl")
    assert exe, "grpcurl is not on PATH"
    argv = [exe, *map(str, args)]
    return ToolResult(argv, _run_tool(argv, timeout=timeout, input_bytes=input_bytes))
