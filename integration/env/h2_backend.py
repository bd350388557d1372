# SPDX-License-Identifier: Apache-2.0
"""A small threaded HTTP/2 (h2c, prior knowledge) server on python3-h2: the
upstream for the plain HTTP/2 tests (curl, nghttp, h2load, header rules).

One accept thread, one thread per connection; streams on a connection are
answered as they complete (a delayed one does not hold up the others), and
bodies respect HTTP/2 flow control. Every request is recorded in `requests`
(a list of dicts, appended when the request has fully arrived) for exact
assertions:
  {"conn": n, "stream": id, "method", "path", "authority", "scheme",
   "headers": [(name, value), ...] (non-pseudo, as received, in order),
   "body_len": n, "body_sha256": hex, "answered": bool,
   "reset_by_peer": RST_STREAM error code received, or None}

What it answers (query parameters of the request path, or the same as
request headers x-ctl-NAME with "-" for "_", e.g. x-ctl-delay-ms: for gRPC
paths, which have no query):
  GET                  KNOWN_BODY, or size=N deterministic bytes (det_body)
  POST / PUT           the request body, echoed
  status=NNN           that :status instead of 200
  delay_ms=N           answer only after N ms (the stream stays open)
  reset=1 | before     RST_STREAM instead of an answer
  reset=after-headers  response headers and a first DATA frame (half the
                       body, at most 16 KiB, or one empty gRPC message if the
                       request was gRPC), then RST_STREAM
  reset_code=N         the RST_STREAM error code (default 2, INTERNAL_ERROR)
  reset_delay_ms=N     with reset=after-headers: the reset follows N ms after
                       the first DATA frame (default 0: in the same write)
  hold=after-headers   response headers and that first DATA frame, then
                       nothing more: the stream stays open until the peer
                       resets it or the connection closes
  resp_header=NAME:VAL add this response header (repeatable; percent-decoded)
Response headers always carry x-backend: NAME, x-echo-method, x-echo-path,
x-echo-authority, and for each non-pseudo request header NAME an
x-echo-NAME header with its value (repeated values joined by ", "), plus
x-body-sha256 (of the request body).

Inbound and outbound header validation are off, so the server records
whatever the proxy sends (even malformed) and can send what a test asks.
"""
import hashlib
import select
import socket
import threading
import time
import urllib.parse

KNOWN_BODY = b"hello from the h2 backend\n"
IO_TIMEOUT = 60.0


def det_body(n):
    block = hashlib.sha256(b"h2-backend").digest() * 2048  # 64 KiB
    reps, rest = divmod(n, len(block))
    return block * reps + block[:rest]


class _Stream:
    def __init__(self, sid):
        self.sid = sid
        self.headers = []
        self.body = bytearray()
        self.due = None  # when to answer (monotonic), once the request ended
        self.out = None  # response body left to send
        self.answered = False
        self.rec = None  # the request's record, once the request ended
        self.held = False  # answered in part and left open on purpose
        self.reset_due = None  # (monotonic time, error code) of a delayed reset


class H2Backend:
    def __init__(self, name="h2"):
        import h2.config  # noqa: F401 - fail early if python3-h2 is missing

        self.name = name
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(256)
        self.lsock.setblocking(False)
        self.port = self.lsock.getsockname()[1]
        self.requests = []
        self.errors = []
        self.accepted = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = []
        self._conns = set()
        self._accept_thread = None

    # -- lifecycle ---------------------------------------------------------------
    def start(self):
        self._accept_thread = threading.Thread(target=self._accept_loop, name=f"h2:{self.port}", daemon=True)
        self._accept_thread.start()
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def stop(self, join_timeout=10.0):
        self._stop.set()
        if self._accept_thread is not None:
            self._accept_thread.join(join_timeout)
        try:
            self.lsock.close()
        except OSError:
            pass
        with self._lock:
            conns, threads = list(self._conns), list(self._threads)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + join_timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def requests_for(self, path_prefix):
        with self._lock:
            return [r for r in self.requests if r["path"].startswith(path_prefix)]

    # -- server ------------------------------------------------------------------
    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                r, _, _ = select.select([self.lsock], [], [], 0.1)
            except (OSError, ValueError):
                return
            if not r:
                continue
            for _ in range(256):  # bounded burst per wakeup
                try:
                    conn, _ = self.lsock.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    return
                with self._lock:
                    self.accepted += 1
                    cid = self.accepted
                    self._conns.add(conn)
                    t = threading.Thread(target=self._serve_conn, args=(conn, cid), daemon=True)
                    self._threads.append(t)
                t.start()

    def _serve_conn(self, sock, cid):
        import h2.config
        import h2.connection
        import h2.events
        import h2.exceptions

        cfg = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_inbound_headers=False,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            normalize_inbound_headers=False,
        )
        h2c = h2.connection.H2Connection(config=cfg)
        streams = {}
        sock.setblocking(False)
        try:
            h2c.initiate_connection()
            h2c.increment_flow_control_window(16 * 1024 * 1024 - 65535)
            self._flush(sock, h2c)
            last_io = time.monotonic()
            while not self._stop.is_set():
                now = time.monotonic()
                due = [s.due for s in streams.values() if s.due is not None and not s.answered]
                due += [s.reset_due[0] for s in streams.values() if s.reset_due is not None]
                wait = 0.2 if not due else max(0.0, min(min(due) - now, 0.2))
                r, _, _ = select.select([sock], [], [], wait)
                if r:
                    try:
                        data = sock.recv(1 << 20)
                    except (BlockingIOError, InterruptedError):
                        data = None
                    if data is not None:
                        if not data:
                            return
                        last_io = time.monotonic()
                        try:
                            events = h2c.receive_data(data)
                        except h2.exceptions.ProtocolError as e:
                            self.errors.append(repr(e))
                            self._flush(sock, h2c)
                            return
                        for ev in events:
                            self._on_event(h2c, ev, streams, cid)
                elif time.monotonic() - last_io > IO_TIMEOUT and not streams:
                    return
                now = time.monotonic()
                for s in list(streams.values()):
                    if s.due is not None and not s.answered and s.due <= now:
                        self._answer(h2c, s, cid)
                    if s.reset_due is not None and s.reset_due[0] <= now:
                        h2c.reset_stream(s.sid, error_code=s.reset_due[1])
                        s.reset_due, s.held = None, False
                    if s.out is not None:
                        self._send_body(h2c, s)
                    if s.answered and s.out is None and not s.held:
                        streams.pop(s.sid, None)
                self._flush(sock, h2c)
        except Exception as e:  # noqa: BLE001 - recorded for the test to inspect
            if not self._stop.is_set():
                self.errors.append(repr(e))
        finally:
            with self._lock:
                self._conns.discard(sock)
            try:
                sock.close()
            except OSError:
                pass

    @staticmethod
    def _flush(sock, h2c):
        out = h2c.data_to_send()
        if not out:
            return
        sock.setblocking(True)
        sock.settimeout(IO_TIMEOUT)
        try:
            sock.sendall(out)
        finally:
            sock.setblocking(False)

    def _on_event(self, h2c, ev, streams, cid):
        import h2.events

        if isinstance(ev, h2.events.RequestReceived):
            s = streams.setdefault(ev.stream_id, _Stream(ev.stream_id))
            s.headers = [(_s(k), _s(v)) for k, v in ev.headers]
            if ev.stream_ended is not None:
                self._request_done(s, cid)
        elif isinstance(ev, h2.events.DataReceived):
            s = streams.get(ev.stream_id)
            if s is not None:
                s.body += ev.data
            h2c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded):
            s = streams.get(ev.stream_id)
            if s is not None and s.due is None:
                self._request_done(s, cid)
        elif isinstance(ev, h2.events.StreamReset):
            s = streams.pop(ev.stream_id, None)
            if s is not None and s.rec is not None:
                with self._lock:
                    s.rec["reset_by_peer"] = int(ev.error_code)
        elif isinstance(ev, h2.events.TrailersReceived):
            pass
        elif isinstance(ev, h2.events.ConnectionTerminated):
            pass

    def _request_done(self, s, cid):
        q = self._query(s)
        delay = int(q.get("delay_ms", ["0"])[0])
        s.due = time.monotonic() + delay / 1000.0
        s.rec = {
            "conn": cid,
            "stream": s.sid,
            "method": self._pseudo(s, ":method") or "",
            "path": self._pseudo(s, ":path"),
            "authority": self._pseudo(s, ":authority"),
            "scheme": self._pseudo(s, ":scheme"),
            "headers": [(k, v) for k, v in s.headers if not k.startswith(":")],
            "body_len": len(s.body),
            "body_sha256": hashlib.sha256(bytes(s.body)).hexdigest(),
            "reset_by_peer": None,
            "answered": False,
        }
        with self._lock:
            self.requests.append(s.rec)

    @staticmethod
    def _header(s, name):
        for k, v in s.headers:
            if k == name:
                return v
        return None

    @staticmethod
    def _pseudo(s, name):
        for k, v in s.headers:
            if k == name:
                return v
        return None

    def _query(self, s):
        """Control parameters: the query's, plus x-ctl-* request headers."""
        path = self._pseudo(s, ":path") or "/"
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
        for k, v in s.headers:
            if k.startswith("x-ctl-"):
                q.setdefault(k[6:].replace("-", "_"), []).append(v)
        return q

    def _answer(self, h2c, s, cid):
        import h2.errors

        s.answered = True
        q = self._query(s)
        rec = s.rec
        method = rec["method"]
        with self._lock:
            rec["answered"] = True
        reset = q.get("reset", ["0"])[0]
        reset_code = int(q.get("reset_code", [str(int(h2.errors.ErrorCodes.INTERNAL_ERROR))])[0])
        if reset in ("1", "before"):
            h2c.reset_stream(s.sid, error_code=reset_code)
            return
        if method in ("POST", "PUT"):
            body = bytes(s.body)
        elif "size" in q:
            body = det_body(int(q["size"][0]))
        else:
            body = KNOWN_BODY
        status = q.get("status", ["200"])[0]
        hdrs = [
            (":status", status),
            ("content-type", "application/octet-stream"),
            ("content-length", str(len(body))),
            ("x-backend", self.name),
            ("x-echo-method", method),
            ("x-echo-path", rec["path"] or ""),
            ("x-echo-authority", rec["authority"] or ""),
            ("x-body-sha256", rec["body_sha256"]),
        ]
        echoed = {}
        for k, v in rec["headers"]:
            echoed.setdefault(k, []).append(v)
        for k, vs in echoed.items():
            hdrs.append((f"x-echo-{k}", ", ".join(vs)))
        for spec in q.get("resp_header", []):
            k, _, v = spec.partition(":")
            hdrs.append((k.strip().lower(), v))
        grpc = (self._header(s, "content-type") or "").startswith("application/grpc")
        if grpc:
            hdrs[1] = ("content-type", "application/grpc")
            hdrs = [h for h in hdrs if h[0] != "content-length"]
        hold = q.get("hold", [""])[0] == "after-headers"
        if reset == "after-headers" or hold:
            first = b"\0\0\0\0\0" if grpc else body[: min(len(body) // 2, 16384)] or b"x"
            h2c.send_headers(s.sid, [(k.encode(), v.encode()) for k, v in hdrs])
            h2c.send_data(s.sid, first)
            reset_delay = int(q.get("reset_delay_ms", ["0"])[0])
            if hold:
                s.held = True  # kept in `streams` so a reset is recorded
            elif reset_delay > 0:
                s.held = True
                s.reset_due = (time.monotonic() + reset_delay / 1000.0, reset_code)
            else:
                h2c.reset_stream(s.sid, error_code=reset_code)
            return
        h2c.send_headers(s.sid, [(k.encode(), v.encode()) for k, v in hdrs], end_stream=not body)
        s.out = body if body else None

    @staticmethod
    def _send_body(h2c, s):
        import h2.exceptions

        try:
            for _ in range(64):  # bounded per pass
                if not s.out:
                    break
                window = min(h2c.local_flow_control_window(s.sid), h2c.max_outbound_frame_size)
                if window <= 0:
                    return
                chunk, s.out = s.out[:window], s.out[window:]
                h2c.send_data(s.sid, chunk, end_stream=not s.out)
            if not s.out:
                s.out = None
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            s.out = None


def _s(b):
    return b.decode("utf-8", errors="surrogateescape") if isinstance(b, bytes) else b
