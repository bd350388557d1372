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
  wait=NAME            answer only once the test calls release(NAME) (the
                       stream stays open meanwhile; no timing involved)
  ack_wait=NAME        take the request body without acknowledging it (no
                       WINDOW_UPDATE) until release(NAME): the sender's window
                       stays closed, as for an upstream that stops reading
  sink=1               (POST/PUT) keep only the request body's length and
                       sha256, answer KNOWN_BODY instead of the echo (for
                       large uploads)
Response headers always carry x-backend: NAME, x-echo-method, x-echo-path,
x-echo-authority, and for each non-pseudo request header NAME an
x-echo-NAME header with its value (repeated values joined by ", "), plus
x-body-sha256 (of the request body).

Response bodies are generated as they are sent (size=N of 256 MiB costs no
memory), and body_sha256 is computed as the request body arrives.

Connection-level behaviour (constructor arguments or attributes):
  max_concurrent_streams=N  announce SETTINGS_MAX_CONCURRENT_STREAMS=N and
                       enforce it as RFC 9113 §5.1.2 allows: a stream beyond N
                       is refused with RST_STREAM(REFUSED_STREAM) while the
                       peer has not yet acknowledged our SETTINGS (it could
                       not know the limit: conns[cid]["refused_early"]), and
                       with RST_STREAM(PROTOCOL_ERROR) once it has (a peer
                       bug: conns[cid]["violations"])
  answer_pings         True (default): PINGs are acknowledged; set it to
                       False (any time) and PINGs are no longer answered
  goaway(cid, last_stream_id=None, error_code=0)
                       send GOAWAY on connection cid (from the test thread).
                       Streams above last_stream_id are left unprocessed and
                       never answered (they count as refused by the GOAWAY);
                       streams at or below it finish normally. A stream the
                       peer opens after the GOAWAY is ignored and counted in
                       conns[cid]["after_goaway"]
  release(name)        answer the streams waiting with wait=name, and
                       acknowledge the bodies held by ack_wait=name

What the server observed, besides `requests`:
  conns  {cid: {"cid", "open" (streams now open), "max_open", "streams"
         (opened in all), "refused_early", "violations", "after_goaway",
         "pings", "pings_unanswered", "settings_acked", "goaway_sent",
         "goaway_received" (error code or None), "closed" (bool), "close"
         ("eof" | "reset" | "error" | "idle" | "stop" | None)}}
  streams  one live record per stream, appended when its HEADERS arrive:
         {"conn", "stream", "path", "rx_bytes", "tx_bytes", "request_ended",
          "state": "open" | "answered" (response fully sent) | "reset_by_peer"
          | "reset_sent" | "refused" | "refused_by_goaway" | "conn_closed",
          "reset_by_peer": RST_STREAM error code or None}
  streams_for(path_prefix), conn_ids(), conn_stats() (a copy of conns),
  open_streams() (streams open now, all connections)

Inbound and outbound header validation are off, so the server records
whatever the proxy sends (even malformed) and can send what a test asks.
"""
import collections
import hashlib
import os
import select
import threading
import time
import urllib.parse
from env.backends import TCPServer

KNOWN_BODY = b"hello from the h2 backend\n"
IO_TIMEOUT = 60.0
_BLOCK = hashlib.sha256(b"h2-backend").digest() * 2048  # 64 KiB
_BLOCK2 = _BLOCK * 2
REFUSED_STREAM = 7
PROTOCOL_ERROR = 1


def det_body(n):
    reps, rest = divmod(n, len(_BLOCK))
    return _BLOCK * reps + _BLOCK[:rest]


def det_body_sha256(n):
    """sha256 hex of det_body(n), computed without holding n bytes."""
    h = hashlib.sha256()
    reps, rest = divmod(n, len(_BLOCK))
    for _ in range(reps):
        h.update(_BLOCK)
    h.update(_BLOCK[:rest])
    return h.hexdigest()


class DetSource:
    """det_body(n) as a stream: take(k) returns the next (at most) k bytes,
    generated on the fly. Also usable as a request body for env.clients."""

    def __init__(self, n):
        self.total = n
        self.left = n

    def __len__(self):
        return self.left

    def take(self, k):
        k = min(k, self.left, len(_BLOCK))
        start = (self.total - self.left) % len(_BLOCK)
        self.left -= k
        return _BLOCK2[start : start + k]


class BytesSource:
    """A bytes body with the DetSource interface (no copies but the chunks)."""

    def __init__(self, data):
        self.view = memoryview(bytes(data))
        self.left = len(self.view)

    def __len__(self):
        return self.left

    def take(self, k):
        k = min(k, self.left)
        off = len(self.view) - self.left
        self.left -= k
        return bytes(self.view[off : off + k])


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
        self.sha = hashlib.sha256()
        self.body_len = 0
        self.keep_body = True
        self.wait = None  # release name the answer waits for
        self.ack_wait = None  # release name the body acknowledgements wait for
        self.unacked = 0  # body bytes taken and not yet acknowledged
        self.live = None  # the live record in H2Backend.streams


class H2Backend(TCPServer):
    def __init__(self, name="h2", max_concurrent_streams=None, answer_pings=True):
        import h2.config  # noqa: F401 - fail early if python3-h2 is missing

        self.name = name
        self.max_concurrent_streams = max_concurrent_streams
        self.answer_pings = answer_pings
        self.conns = {}
        self.streams = []
        self._released = set()
        self._cmds = {}  # cid -> deque of commands run by the connection's thread
        self._wakers = {}  # cid -> write end of the connection's wake pipe
        super().__init__(backlog=256, name="h2")
        self.requests = []

    def requests_for(self, path_prefix):
        with self._lock:
            return [r for r in self.requests if r["path"].startswith(path_prefix)]

    def streams_for(self, path_prefix):
        with self._lock:
            return [r for r in self.streams if (r["path"] or "").startswith(path_prefix)]

    def conn_ids(self):
        with self._lock:
            return sorted(self.conns)

    def conn_stats(self):
        """A consistent copy of `conns` (safe while connections come and go)."""
        with self._lock:
            return {cid: dict(cs) for cid, cs in self.conns.items()}

    def open_streams(self):
        """Streams open now, over all connections."""
        with self._lock:
            return sum(cs["open"] for cs in self.conns.values())

    def open_conns(self):
        with self._lock:
            return sorted(c for c, v in self.conns.items() if not v["closed"])

    # -- control from the test thread ------------------------------------------------
    def release(self, name):
        """Let the streams waiting on `name` (wait= / ack_wait=) go on."""
        with self._lock:
            self._released.add(name)
        self._wake()

    def goaway(self, cid, last_stream_id=None, error_code=0):
        """Send GOAWAY(last_stream_id, error_code) on connection cid (default
        last_stream_id: the highest stream id received so far)."""
        with self._lock:
            if cid not in self._cmds:
                raise KeyError(f"connection {cid} is not open")
            self._cmds[cid].append(("goaway", last_stream_id, error_code))
        self._wake(cid)

    def _wake(self, cid=None):
        with self._lock:
            fds = list(self._wakers.values()) if cid is None else [self._wakers.get(cid)]
        for fd in fds:
            if fd is None:
                continue
            try:
                os.write(fd, b"x")
            except OSError:
                pass

    # -- server ------------------------------------------------------------------
    def _thread_for(self, conn, cid):
        return threading.Thread(target=self._serve_conn, args=(conn, cid), daemon=True)

    def _serve_conn(self, sock, cid):
        import h2.config
        import h2.connection
        import h2.events
        import h2.exceptions
        import h2.settings
        from hyperframe.frame import SettingsFrame

        cfg = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_inbound_headers=False,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            normalize_inbound_headers=False,
        )
        h2c = h2.connection.H2Connection(config=cfg)
        mcs = self.max_concurrent_streams
        if mcs is not None:
            # h2 itself would end the connection on a stream beyond its own
            # limit: let it accept many, and enforce `mcs` ourselves.
            h2c.local_settings = h2.settings.Settings(
                client=False,
                initial_values={
                    h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1 << 20,
                    h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: h2c.DEFAULT_MAX_HEADER_LIST_SIZE,
                },
            )
        streams = {}
        cs = {
            "cid": cid, "open": 0, "max_open": 0, "streams": 0, "refused_early": 0, "violations": 0,
            "after_goaway": 0, "pings": 0, "pings_unanswered": 0, "settings_acked": False,
            "goaway_sent": None, "goaway_received": None, "closed": False, "close": None,
        }
        conn = {"state": cs, "goaway_last": None, "ignored": set()}
        rfd, wfd = os.pipe()
        with self._lock:
            self.conns[cid] = cs
            self._cmds[cid] = collections.deque()
            self._wakers[cid] = wfd
        sock.setblocking(False)
        how = None
        try:
            h2c.initiate_connection()
            if mcs is not None:
                h2c.data_to_send()  # replaced: the same SETTINGS, announcing `mcs`
                f = SettingsFrame(0)
                f.settings = dict(h2c.local_settings)
                f.settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = mcs
                self._send_raw(sock, f.serialize())
            h2c.increment_flow_control_window(16 * 1024 * 1024 - 65535)
            self._flush(sock, h2c, cs)
            last_io = time.monotonic()
            while not self._stop.is_set():
                self._run_cmds(sock, h2c, streams, conn, cid)
                now = time.monotonic()
                due = [s.due for s in streams.values() if s.due is not None and not s.answered and s.wait is None]
                due += [s.reset_due[0] for s in streams.values() if s.reset_due is not None]
                wait = 0.2 if not due else max(0.0, min(min(due) - now, 0.2))
                r, _, _ = select.select([sock, rfd], [], [], wait)
                if rfd in r:
                    os.read(rfd, 4096)
                if sock in r:
                    try:
                        data = sock.recv(1 << 20)
                    except (BlockingIOError, InterruptedError):
                        data = None
                    except ConnectionResetError:
                        how = "reset"
                        return
                    if data is not None:
                        if not data:
                            how = "eof"
                            return
                        last_io = time.monotonic()
                        try:
                            events = h2c.receive_data(data)
                        except h2.exceptions.ProtocolError as e:
                            self.errors.append(repr(e))
                            self._flush(sock, h2c, cs)
                            how = "error"
                            return
                        for ev in events:
                            self._on_event(h2c, ev, streams, cid, conn)
                elif not r and time.monotonic() - last_io > IO_TIMEOUT and not streams:
                    how = "idle"
                    return
                now = time.monotonic()
                with self._lock:
                    released = set(self._released)
                for s in list(streams.values()):
                    if s.ack_wait is not None and s.ack_wait in released:
                        s.ack_wait = None
                        if s.unacked:
                            h2c.acknowledge_received_data(s.unacked, s.sid)
                            s.unacked = 0
                    if s.wait is not None and s.wait in released:
                        s.wait = None
                    if s.due is not None and not s.answered and s.wait is None and s.due <= now:
                        self._answer(h2c, s, cid)
                    if s.reset_due is not None and s.reset_due[0] <= now:
                        h2c.reset_stream(s.sid, error_code=s.reset_due[1])
                        s.reset_due, s.held = None, False
                        self._stream_gone(s, cs, "reset_sent")
                    if s.out is not None:
                        self._send_body(h2c, s)
                        if s.out is None and s.live is not None and s.live["state"] == "open":
                            self._stream_gone(s, cs, "answered")
                    if s.answered and s.out is None and not s.held:
                        streams.pop(s.sid, None)
                self._flush(sock, h2c, cs)
        except Exception as e:  # noqa: BLE001 - recorded for the test to inspect
            if not self._stop.is_set():
                self.errors.append(repr(e))
                how = how or "error"
        finally:
            with self._lock:
                self._conns.discard(sock)
                self._cmds.pop(cid, None)
                self._wakers.pop(cid, None)
                for s in streams.values():
                    if s.live is not None and s.live["state"] == "open":
                        s.live["state"] = "conn_closed"
                cs["open"] = 0
                cs["close"] = how or ("stop" if self._stop.is_set() else "error")
                cs["closed"] = True
            for fd in (rfd, wfd):
                try:
                    os.close(fd)
                except OSError:
                    pass
            try:
                sock.close()
            except OSError:
                pass

    def _run_cmds(self, sock, h2c, streams, conn, cid):
        from hyperframe.frame import GoAwayFrame

        with self._lock:
            q = self._cmds.get(cid)
            cmds = list(q) if q else []
            if q:
                q.clear()
        for cmd in cmds:
            if cmd[0] == "goaway":
                _, last, code = cmd
                if last is None:
                    last = h2c.highest_inbound_stream_id
                # Written past h2's state machine, which would refuse to go on
                # answering the streams at or below `last` after a GOAWAY.
                self._flush(sock, h2c, conn["state"])
                self._send_raw(sock, GoAwayFrame(0, last_stream_id=last, error_code=code).serialize())
                conn["goaway_last"] = last
                with self._lock:
                    conn["state"]["goaway_sent"] = last
                for sid in [sid for sid in streams if sid > last]:
                    s = streams.pop(sid)
                    conn["ignored"].add(sid)
                    self._stream_gone(s, conn["state"], "refused_by_goaway")

    def _stream_gone(self, s, cs, state):
        """The stream stopped counting as open (answered, reset, refused)."""
        with self._lock:
            if s.live is not None and s.live["state"] == "open":
                s.live["state"] = state
                cs["open"] -= 1

    @staticmethod
    def _send_raw(sock, data):
        sock.setblocking(True)
        sock.settimeout(IO_TIMEOUT)
        try:
            sock.sendall(data)
        finally:
            sock.setblocking(False)

    def _flush(self, sock, h2c, cs=None):
        out = h2c.data_to_send()
        if not out:
            return
        if not self.answer_pings:
            out = _drop_ping_acks(out, cs)
            if not out:
                return
        sock.setblocking(True)
        sock.settimeout(IO_TIMEOUT)
        try:
            sock.sendall(out)
        finally:
            sock.setblocking(False)

    def _on_event(self, h2c, ev, streams, cid, conn):
        import h2.events

        cs = conn["state"]
        if isinstance(ev, h2.events.RequestReceived):
            sid = ev.stream_id
            if conn["goaway_last"] is not None and sid > conn["goaway_last"]:
                conn["ignored"].add(sid)  # RFC 9113 §6.8: ignored after our GOAWAY
                with self._lock:
                    cs["after_goaway"] += 1
                return
            s = _Stream(sid)
            s.headers = [(_s(k), _s(v)) for k, v in ev.headers]
            live = {
                "conn": cid, "stream": sid, "path": self._pseudo(s, ":path"), "rx_bytes": 0, "tx_bytes": 0,
                "request_ended": False, "state": "open", "reset_by_peer": None,
            }
            mcs = self.max_concurrent_streams
            if mcs is not None and cs["open"] >= mcs:
                acked = cs["settings_acked"]
                h2c.reset_stream(sid, error_code=PROTOCOL_ERROR if acked else REFUSED_STREAM)
                live["state"] = "refused"
                with self._lock:
                    cs["violations" if acked else "refused_early"] += 1
                    self.streams.append(live)
                return
            q = self._query(s)
            s.wait = q.get("wait", [None])[0]
            s.ack_wait = q.get("ack_wait", [None])[0]
            s.keep_body = q.get("sink", ["0"])[0] != "1"
            s.live = live
            streams[sid] = s
            with self._lock:
                self.streams.append(live)
                cs["open"] += 1
                cs["streams"] += 1
                cs["max_open"] = max(cs["max_open"], cs["open"])
            if ev.stream_ended is not None:
                self._request_done(s, cid)
        elif isinstance(ev, h2.events.DataReceived):
            s = streams.get(ev.stream_id)
            if s is not None:
                s.sha.update(ev.data)
                s.body_len += len(ev.data)
                if s.keep_body:
                    s.body += ev.data
                s.live["rx_bytes"] += len(ev.data)
                with self._lock:
                    held = s.ack_wait is not None and s.ack_wait not in self._released
                if held:
                    s.unacked += ev.flow_controlled_length
                    return
            h2c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded):
            s = streams.get(ev.stream_id)
            if s is not None and s.due is None:
                self._request_done(s, cid)
        elif isinstance(ev, h2.events.StreamReset):
            s = streams.pop(ev.stream_id, None)
            if s is not None:
                with self._lock:
                    if s.rec is not None:
                        s.rec["reset_by_peer"] = int(ev.error_code)
                    s.live["reset_by_peer"] = int(ev.error_code)
                self._stream_gone(s, cs, "reset_by_peer")
        elif isinstance(ev, h2.events.SettingsAcknowledged):
            with self._lock:
                cs["settings_acked"] = True
        elif isinstance(ev, h2.events.PingReceived):
            with self._lock:
                cs["pings"] += 1
        elif isinstance(ev, h2.events.ConnectionTerminated):
            with self._lock:
                cs["goaway_received"] = int(ev.error_code)

    def _request_done(self, s, cid):
        q = self._query(s)
        delay = int(q.get("delay_ms", ["0"])[0])
        s.due = time.monotonic() + delay / 1000.0
        s.live["request_ended"] = True
        s.rec = {
            "conn": cid,
            "stream": s.sid,
            "method": self._pseudo(s, ":method") or "",
            "path": self._pseudo(s, ":path"),
            "authority": self._pseudo(s, ":authority"),
            "scheme": self._pseudo(s, ":scheme"),
            "headers": [(k, v) for k, v in s.headers if not k.startswith(":")],
            "body_len": s.body_len,
            "body_sha256": s.sha.hexdigest(),
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
            cs = self.conns[cid]
        reset = q.get("reset", ["0"])[0]
        reset_code = int(q.get("reset_code", [str(int(h2.errors.ErrorCodes.INTERNAL_ERROR))])[0])
        if reset in ("1", "before"):
            h2c.reset_stream(s.sid, error_code=reset_code)
            self._stream_gone(s, cs, "reset_sent")
            return
        if method in ("POST", "PUT") and s.keep_body:
            body = BytesSource(s.body)
        elif method in ("POST", "PUT"):
            body = BytesSource(KNOWN_BODY)
        elif "size" in q:
            body = DetSource(int(q["size"][0]))
        else:
            body = BytesSource(KNOWN_BODY)
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
            first = b"\0\0\0\0\0" if grpc else body.take(min(len(body) // 2, 16384)) or b"x"
            h2c.send_headers(s.sid, [(k.encode(), v.encode()) for k, v in hdrs])
            h2c.send_data(s.sid, first)
            s.live["tx_bytes"] += len(first)
            reset_delay = int(q.get("reset_delay_ms", ["0"])[0])
            if hold:
                s.held = True  # kept in `streams` so a reset is recorded
            elif reset_delay > 0:
                s.held = True
                s.reset_due = (time.monotonic() + reset_delay / 1000.0, reset_code)
            else:
                h2c.reset_stream(s.sid, error_code=reset_code)
                self._stream_gone(s, cs, "reset_sent")
            return
        h2c.send_headers(s.sid, [(k.encode(), v.encode()) for k, v in hdrs], end_stream=not len(body))
        s.out = body if len(body) else None
        if s.out is None:
            self._stream_gone(s, cs, "answered")

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
                chunk = s.out.take(window)
                h2c.send_data(s.sid, chunk, end_stream=not s.out)
                s.live["tx_bytes"] += len(chunk)
            if not s.out:
                s.out = None
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            s.out = None


def _drop_ping_acks(out, cs):
    """`out` (whole frames) without its PING ACK frames; counts them in cs."""
    keep = bytearray()
    i = 0
    n = len(out)
    while i + 9 <= n:
        length = int.from_bytes(out[i : i + 3], "big")
        ftype, flags = out[i + 3], out[i + 4]
        end = i + 9 + length
        if ftype == 0x6 and flags & 0x1:
            if cs is not None:
                cs["pings_unanswered"] += 1
        else:
            keep += out[i:end]
        i = end
    keep += out[i:]
    return bytes(keep)


def _s(b):
    return b.decode("utf-8", errors="surrogateescape") if isinstance(b, bytes) else b
