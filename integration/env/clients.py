# SPDX-License-Identifier: Apache-2.0
"""Raw-socket client helpers and a bounded poll loop; at the end, HTTP/2 and
gRPC clients: grpcio channels, a raw HTTP/2 client (H2Client, python3-h2),
and wrappers for nghttp, h2load and grpcurl (curl: env/curl.py).

Every socket gets a timeout so nothing blocks forever; every loop here is
bounded in time (a deadline) and in iterations.
"""
import hashlib
import socket
import ssl
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


class SocketOwner:
    """For clients that own one socket (self.sock): close() closes it
    quietly, and the client is a context manager that closes it."""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


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


def grpc_outcome(call):
    """(status code, details) of call(): (OK, None) when it returned."""
    import grpc

    try:
        call()
        return grpc.StatusCode.OK, None
    except grpc.RpcError as e:
        return e.code(), e.details()


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

    def __init__(self, keep_data=True):
        self.events = []
        self.headers = None
        self.informational = []
        self.data = bytearray()
        self.keep_data = keep_data  # False: only .length and .sha256() of the body
        self.length = 0
        self._sha = hashlib.sha256()
        self.trailers = None
        self.reset = None  # RST_STREAM error code
        self.goaway = None  # GOAWAY error code
        self.ended = False

    def sha256(self):
        return self._sha.hexdigest()

    def record(self, e, conn):
        """Takes one python3-h2 event of this stream (DATA is acknowledged on
        |conn|); consecutive DATA frames count as one "data" event."""
        import h2.events as ev

        if isinstance(e, ev.InformationalResponseReceived):
            self.informational.append(list(e.headers))
        elif isinstance(e, ev.ResponseReceived):
            self.headers = list(e.headers)
            self.events.append("headers")
        elif isinstance(e, ev.DataReceived):
            if self.keep_data:
                self.data += e.data
            self.length += len(e.data)
            self._sha.update(e.data)
            if not self.events or self.events[-1] != "data":
                self.events.append("data")
            conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
        elif isinstance(e, ev.TrailersReceived):
            self.trailers = list(e.headers)
            self.events.append("trailers")
        elif isinstance(e, ev.StreamEnded):
            self.ended = True
            self.events.append("end")
        elif isinstance(e, ev.StreamReset):
            self.reset = int(e.error_code)
            self.events.append("reset")
        elif isinstance(e, ev.ConnectionTerminated):
            self.goaway = int(e.error_code)
            self.events.append("goaway")

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


def h2_client_session(port, host, timeout, validate, conn_window):
    """Connects and starts a python3-h2 client session (preface, SETTINGS,
    the connection window opened to |conn_window|). Returns (socket, H2Connection).
    validate=False lets headers through that HTTP/2 forbids."""
    import h2.config
    import h2.connection

    sock = connect(port, timeout=timeout, host=host)
    cfg = h2.config.H2Configuration(
        client_side=True,
        header_encoding="utf-8",
        validate_outbound_headers=validate,
        normalize_outbound_headers=validate,
        validate_inbound_headers=False,
    )
    conn = h2.connection.H2Connection(config=cfg)
    conn.initiate_connection()
    if conn_window > 65535:
        conn.increment_flow_control_window(conn_window - 65535)
    sock.sendall(conn.data_to_send())
    return sock, conn


class H2Client:
    """A raw HTTP/2 client over h2c prior knowledge, one request at a time.
    validate=False sends headers HTTP/2 forbids (to test the proxy's rules)."""

    def __init__(self, port, host="127.0.0.1", timeout=DEFAULT_TIMEOUT, validate=True):
        self.timeout = timeout
        self.sock, self.conn = h2_client_session(port, host, timeout, validate, 16 * 1024 * 1024)
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
            if isinstance(e, ev.ConnectionTerminated):
                self.closed = int(e.error_code)
            elif getattr(e, "stream_id", sid) != sid:
                continue
            resp.record(e, self.conn)

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


class H2MultiClient(H2Client):
    """An H2Client that keeps many streams open at once on its connection.

        c = H2MultiClient(port)
        sid = c.start(headers, body=b"" | bytes | source with take()/len())
        c.wait(lambda: c.responses[sid].ended, timeout, what="...")
        c.responses[sid] -> H2Response (plus .length and .sha256() of the body)

    Nothing happens on the socket except inside start()/flush()/pump()/
    wait(): a test that stops calling them stops reading (the peer's sends
    then stall on flow control: our stream windows are python3-h2's 65535
    bytes, and DATA is acknowledged as it is read). keep_data=False keeps
    only each body's length and sha256.
    GOAWAY: self.goaway = (error_code, last_stream_id), and streams above
    the last id are marked refused (H2Response.goaway); the others go on.
    The connection's end: self.eof = "eof" | "rst"."""

    def __init__(self, port, host="127.0.0.1", timeout=DEFAULT_TIMEOUT, validate=True, keep_data=True,
                 conn_window=16 * 1024 * 1024):
        self.timeout = timeout
        self.sock, self.conn = h2_client_session(port, host, timeout, validate, conn_window)
        self.closed = None
        self.keep_data = keep_data
        self.responses = {}
        self.goaway = None
        self.eof = None
        self._pending = {}  # sid -> [body source, trailers, end_stream]
        self.body_sent = {}  # sid -> request body bytes handed to the socket
        self._inbuf = bytearray()

    def start(self, headers, body=b"", end_stream=True, trailers=None, flush=True):
        """Open a stream: send its HEADERS (and as much body as the windows
        allow; the rest goes out in pump()). Returns the stream id.
        flush=False only queues the frames: flush() then writes every queued
        stream's frames in one go (the peer reads them in one batch)."""
        from env.h2_backend import BytesSource

        sid = self.conn.get_next_available_stream_id()
        src = body if hasattr(body, "take") else BytesSource(body)
        last = not len(src) and not trailers and end_stream
        self.conn.send_headers(sid, headers, end_stream=last)
        r = H2Response(keep_data=self.keep_data)
        self.responses[sid] = r
        self.body_sent[sid] = 0
        if not last:
            self._pending[sid] = [src, trailers, end_stream]
        if flush:
            self.flush()
        return sid

    def flush(self):
        self._send_pending()
        self._write()

    def _write(self):
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)

    def _send_pending(self):
        import h2.exceptions

        for sid, p in list(self._pending.items()):
            src, trailers, end_stream = p
            r = self.responses[sid]
            if r.reset is not None or r.goaway is not None:
                del self._pending[sid]
                continue
            try:
                for i in range(4096):  # bounded per call
                    if not len(src):
                        break
                    if i and i % 64 == 0:
                        self._write()  # ~1 MiB at a time
                    win = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
                    if win <= 0:
                        break
                    chunk = src.take(win)
                    done = not len(src) and not trailers and end_stream
                    self.conn.send_data(sid, chunk, end_stream=done)
                    self.body_sent[sid] += len(chunk)
                if not len(src):
                    if trailers:
                        self.conn.send_headers(sid, trailers, end_stream=True)
                    del self._pending[sid]
            except h2.exceptions.StreamClosedError:
                del self._pending[sid]

    def pump(self, timeout=None):
        """Send what the windows allow, then read once (waiting at most
        `timeout` seconds) and dispatch. Returns False once the connection
        has ended (EOF or reset), True otherwise."""
        self._send_pending()
        self._write()
        if self.eof is not None:
            return False
        self.sock.settimeout(self.timeout if timeout is None else max(timeout, 0.001))
        try:
            data = self.sock.recv(1 << 20)
        except socket.timeout:
            return True
        except ConnectionResetError:
            self.eof = "rst"
            return False
        if not data:
            self.eof = "eof"
            return False
        self._dispatch(self.conn.receive_data(self._take_goaways(data)))
        self._send_pending()
        self._write()
        return True

    def _take_goaways(self, data):
        """GOAWAY frames are handled here, not by python3-h2, whose state
        machine would refuse every frame after one (RFC 9113 §6.8: streams
        up to the last stream id go on). Returns the other frames' bytes."""
        self._inbuf += data
        out = bytearray()
        i = 0
        n = len(self._inbuf)
        while i + 9 <= n:
            length = int.from_bytes(self._inbuf[i : i + 3], "big")
            if i + 9 + length > n:
                break
            if self._inbuf[i + 3] == 0x7:  # GOAWAY
                last, code = struct.unpack(">II", bytes(self._inbuf[i + 9 : i + 17]))
                self.goaway = (code, last & 0x7FFFFFFF)
                self.closed = code
                for sid, r in self.responses.items():
                    if sid > self.goaway[1] and not r.ended and r.reset is None and r.goaway is None:
                        r.goaway = code  # refused: never processed
                        r.events.append("goaway")
            else:
                out += self._inbuf[i : i + 9 + length]
            i += 9 + length
        del self._inbuf[:i]
        return bytes(out)

    def wait(self, pred, timeout=None, what="condition"):
        """pump() until pred() holds (returns its value). Fails after
        `timeout` seconds, or if the connection ends first and pred() does
        not hold then."""
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        for _ in range(10_000_000):
            v = pred()
            if v:
                return v
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if not self.pump(min(left, 0.5)):
                v = pred()
                if v:
                    return v
                raise AssertionError(f"connection ended ({self.eof}, goaway={self.goaway}) before {what}; "
                                     f"responses: {self.responses}")
        raise AssertionError(f"timed out after {limit}s waiting for {what}; responses: {self.responses}")

    def done(self, sid):
        """The stream is over: ended, reset, or refused by a GOAWAY."""
        r = self.responses[sid]
        return r.ended or r.reset is not None or r.goaway is not None

    def _dispatch(self, events):
        import h2.events as ev

        for e in events:
            sid = getattr(e, "stream_id", None)
            r = self.responses.get(sid) if sid else None
            if r is None:
                if isinstance(e, ev.DataReceived):
                    self.conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
                continue
            r.record(e, self.conn)


# -- raw HTTP/2 frames -------------------------------------------------------------
# For what python3-h2 refuses to send (floods, illegal sequences). Frames are
# built with hyperframe and header blocks with hpack.

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_ERRORS = {
    0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 3: "FLOW_CONTROL_ERROR", 4: "SETTINGS_TIMEOUT",
    5: "STREAM_CLOSED", 6: "FRAME_SIZE_ERROR", 7: "REFUSED_STREAM", 8: "CANCEL", 9: "COMPRESSION_ERROR",
    10: "CONNECT_ERROR", 11: "ENHANCE_YOUR_CALM", 12: "INADEQUATE_SECURITY", 13: "HTTP_1_1_REQUIRED",
}


class RawFrame:
    """One received frame: type (int), flags (int), stream (int), payload
    (bytes), and for HEADERS the decoded `headers` [(name, value)] (str) of
    the whole block, for GOAWAY `last_stream_id` and `error_code`, for
    RST_STREAM `error_code`."""

    NAMES = {0: "DATA", 1: "HEADERS", 2: "PRIORITY", 3: "RST_STREAM", 4: "SETTINGS", 5: "PUSH_PROMISE",
             6: "PING", 7: "GOAWAY", 8: "WINDOW_UPDATE", 9: "CONTINUATION"}

    def __init__(self, ftype, flags, stream, payload):
        self.type = ftype
        self.flags = flags
        self.stream = stream
        self.payload = payload
        self.headers = None
        self.error_code = None
        self.last_stream_id = None
        if ftype == 7 and len(payload) >= 8:
            self.last_stream_id = struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF
            self.error_code = struct.unpack(">I", payload[4:8])[0]
        elif ftype == 3 and len(payload) >= 4:
            self.error_code = struct.unpack(">I", payload[:4])[0]

    @property
    def name(self):
        return self.NAMES.get(self.type, f"type{self.type}")

    def __repr__(self):
        extra = ""
        if self.error_code is not None:
            extra = f" {H2_ERRORS.get(self.error_code, self.error_code)}"
        if self.last_stream_id is not None:
            extra += f" last_stream_id={self.last_stream_id}"
        if self.headers is not None:
            extra += f" {self.headers}"
        return f"<{self.name} stream={self.stream} flags={self.flags:#x} len={len(self.payload)}{extra}>"


class RawH2(SocketOwner):
    """A raw HTTP/2 (h2c prior knowledge) client: the test builds and sends
    frames as bytes (any sequence, legal or not), and reads frames back.

        c = RawH2(port)                 # sends the preface and a SETTINGS frame
        c.send(c.headers(1, hdrs, end_stream=True) + c.rst_stream(1, 8))
        c.read_until(lambda f: f.type == GOAWAY, timeout) -> the frame, or None
                                                 if the connection ended first
    Received SETTINGS are acknowledged when auto_ack_settings is True (the
    default); c.frames holds every frame received; c.eof is None, "eof" or
    "rst" once the connection ended. sock: a connected socket to use (e.g.
    TLS with ALPN h2 from env.tls.tls_connect, or one with socket options set
    before connecting)."""

    DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
    END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4

    def __init__(self, port, host="127.0.0.1", timeout=DEFAULT_TIMEOUT, settings=(), auto_ack_settings=True,
                 preface=True, sock=None):
        import hpack

        self.sock = sock if sock is not None else connect(port, timeout=timeout, host=host)
        self.tls = isinstance(self.sock, ssl.SSLSocket)
        self.timeout = timeout
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.decoder.max_header_list_size = 1 << 24
        self.auto_ack_settings = auto_ack_settings
        self.frames = []
        self.eof = None
        self._buf = bytearray()
        self._block = None  # (stream, bytearray) of a header block being received
        if preface:
            self.send(H2_PREFACE + self.settings(settings))

    # -- building frames ------------------------------------------------------------
    @staticmethod
    def frame(ftype, flags, stream, payload=b""):
        return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload

    def settings(self, entries=(), ack=False):
        payload = b"".join(struct.pack(">HI", k, v) for k, v in entries)
        return self.frame(self.SETTINGS, self.ACK if ack else 0, 0, payload)

    def header_block(self, headers):
        return self.encoder.encode(headers)

    def headers(self, stream, headers, end_stream=True, end_headers=True, block=None):
        flags = (self.END_STREAM if end_stream else 0) | (self.END_HEADERS if end_headers else 0)
        return self.frame(self.HEADERS, flags, stream, self.header_block(headers) if block is None else block)

    def continuation(self, stream, fragment, end_headers=False):
        return self.frame(self.CONTINUATION, self.END_HEADERS if end_headers else 0, stream, fragment)

    def data(self, stream, payload, end_stream=False):
        return self.frame(self.DATA, self.END_STREAM if end_stream else 0, stream, payload)

    def rst_stream(self, stream, code=8):
        return self.frame(self.RST_STREAM, 0, stream, struct.pack(">I", code))

    def ping(self, opaque=b"\0" * 8, ack=False):
        return self.frame(self.PING, self.ACK if ack else 0, 0, opaque)

    def priority(self, stream, depends_on, weight=15, exclusive=False):
        return self.frame(2, 0, stream, struct.pack(">IB", depends_on | (exclusive << 31), weight))

    def window_update(self, stream, increment):
        return self.frame(self.WINDOW_UPDATE, 0, stream, struct.pack(">I", increment))

    def goaway(self, last_stream_id=0, code=0):
        return self.frame(self.GOAWAY, 0, 0, struct.pack(">II", last_stream_id, code))

    # -- I/O --------------------------------------------------------------------------
    def send(self, data):
        self.sock.settimeout(self.timeout)
        self.sock.sendall(data)

    def send_nowait(self, data, timeout=30.0):
        """Send as much of `data` as the peer takes, without waiting for it
        to read: stops when the socket has accepted nothing for 1 s (the
        peer stopped reading) or the peer closed. Returns the bytes sent."""
        view = memoryview(data)
        sent = 0
        self.sock.setblocking(False)
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        try:
            for _ in range(10_000_000):
                if sent >= len(view):
                    break
                try:
                    sent += self.sock.send(view[sent : sent + (1 << 20)])
                    last = time.monotonic()
                    continue
                except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                    pass
                except (BrokenPipeError, ConnectionResetError, ssl.SSLEOFError):
                    break
                now = time.monotonic()
                if now - last >= 1.0 or now >= deadline:
                    break
                time.sleep(0.005)  # poll interval
        finally:
            self.sock.settimeout(self.timeout)
        return sent


    def _parse(self):
        out = []
        while len(self._buf) >= 9:
            length = int.from_bytes(self._buf[0:3], "big")
            if len(self._buf) < 9 + length:
                break
            ftype, flags = self._buf[3], self._buf[4]
            stream = int.from_bytes(self._buf[5:9], "big") & 0x7FFFFFFF
            payload = bytes(self._buf[9 : 9 + length])
            del self._buf[: 9 + length]
            f = RawFrame(ftype, flags, stream, payload)
            if ftype in (self.HEADERS, self.CONTINUATION):
                frag = payload
                if ftype == self.HEADERS:
                    pad = payload[0] if flags & 0x8 else 0
                    frag = payload[1:] if flags & 0x8 else payload
                    if flags & 0x20:
                        frag = frag[5:]
                    if pad:
                        frag = frag[:-pad]
                    self._block = (stream, bytearray(frag))
                elif self._block is not None:
                    self._block[1].extend(frag)
                if flags & self.END_HEADERS and self._block is not None:
                    f.headers = [
                        (k.decode() if isinstance(k, bytes) else k, v.decode() if isinstance(v, bytes) else v)
                        for k, v in self.decoder.decode(bytes(self._block[1]))
                    ]
                    self._block = None
            if ftype == self.SETTINGS and not flags & self.ACK and self.auto_ack_settings:
                try:  # never blocks: a peer that stopped reading gets no ACK (TLS: one small write)
                    if self.tls:
                        self.sock.send(self.settings(ack=True))
                    else:
                        self.sock.send(self.settings(ack=True), socket.MSG_DONTWAIT)
                except OSError:
                    pass
            out.append(f)
        self.frames.extend(out)
        return out

    def read(self, timeout=None):
        """Read once (waiting at most `timeout` s); returns the new frames.
        Sets self.eof when the connection ended."""
        if self.eof is not None:
            return []
        self.sock.settimeout(self.timeout if timeout is None else max(timeout, 0.001))
        try:
            data = self.sock.recv(1 << 20)
        except socket.timeout:
            return []
        except ConnectionResetError:
            self.eof = "rst"
            return []
        except ssl.SSLError:  # a TLS connection cut without close_notify
            self.eof = "eof"
            return []
        if not data:
            self.eof = "eof"
            return []
        self._buf += data
        return self._parse()

    def read_until(self, pred, timeout=None):
        """Read until a frame satisfies pred (returned), the connection ends
        (None) or `timeout` passes (AssertionError)."""
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        for f in self.frames:
            if pred(f):
                return f
        for _ in range(10_000_000):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for f in self.read(min(left, 0.5)):
                if pred(f):
                    return f
            if self.eof is not None:
                return None
        raise AssertionError(f"no matching frame within {limit}s; last frames: {self.frames[-10:]}")

    def read_to_end(self, timeout=None):
        """Read until the connection ends; returns how ("eof" | "rst").
        Fails after `timeout` s."""
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        for _ in range(10_000_000):
            if self.eof is not None:
                return self.eof
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.read(min(left, 0.5))
        raise AssertionError(f"connection still open after {limit}s; last frames: {self.frames[-10:]}")

    def goaways(self):
        return [f for f in self.frames if f.type == self.GOAWAY]
