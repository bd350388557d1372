# SPDX-License-Identifier: Apache-2.0
"""An HTTP/2 (h2c, prior knowledge) upstream that answers with raw frames the
test scripts, legal or not: a response without :status, a connection-specific
field, a body longer or shorter than its content-length, a 101... what
python3-h2 (env.h2_backend) refuses to send or would repair. Threads in the
test process: one accept thread, one thread per connection. The frames are
built by hand and the header blocks with hpack, never validated.

    b = RawH2Backend(port, name="raw").start()
    b.answer("/lie/no-status", [("headers", [("x-a", "1")], True)])
    ...                                   # requests through meshd
    b.requests_for("/lie/") -> [record, ...];  b.stop()

An answer is a list of steps, sent in order (in one write) once the request
has ended (END_STREAM):
  ("headers", [(name, value), ...], end_stream)   one HEADERS frame
                                   (END_HEADERS set); names and values are
                                   str or bytes and go out exactly as given
  ("data", payload bytes, end_stream)              one DATA frame
  ("rst", error_code)                              RST_STREAM
A path without an answer (matched on the whole :path, query included) gets
a plain 200: content-type text/plain, content-length 3, body b"ok\\n" (no
body for HEAD).

Each request's record, appended when its HEADERS arrive:
  {"conn": n, "stream": id, "method", "path", "headers": [(name, value)]
   (every field, pseudo-headers included, as received, str),
   "body": bytes, "ended": the request's END_STREAM arrived, "answered",
   "reset_by_peer": RST_STREAM error code received, or None}
conns: {cid: {"closed": bool, "goaway_received": error code or None}}.
Received DATA is acknowledged (WINDOW_UPDATE) at once; PINGs and SETTINGS
are acknowledged. Every socket wait is bounded (IO_TIMEOUT), stop() joins
every thread with a deadline."""
import select
import socket
import struct
import threading
import time

from env.backends import shut_down

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
IO_TIMEOUT = 60.0
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
OK_BODY = b"ok\n"


def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def _b(x):
    return x if isinstance(x, bytes) else x.encode()


def _s(x):
    return x.decode("utf-8", errors="surrogateescape") if isinstance(x, bytes) else x


class RawH2Backend:
    def __init__(self, port, name="raw"):
        self.name = name
        self.port = port
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", port))
        self.lsock.listen(64)
        self.lsock.setblocking(False)
        self.requests = []
        self.conns = {}
        self.errors = []
        self._answers = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = []
        self._socks = set()

    # -- control from the test thread ------------------------------------------------
    def answer(self, path, steps):
        """Answer requests for `path` (the exact :path) with `steps`."""
        with self._lock:
            self._answers[path] = list(steps)
        return self

    def requests_for(self, path_prefix):
        with self._lock:
            return [dict(r) for r in self.requests if (r["path"] or "").startswith(path_prefix)]

    def conn_ids(self):
        with self._lock:
            return sorted(self.conns)

    # -- lifecycle -------------------------------------------------------------------
    def start(self):
        t = threading.Thread(target=self._accept_loop, name=f"{self.name}:{self.port}", daemon=True)
        self._threads.append(t)
        t.start()
        return self

    def stop(self, join_timeout=10.0):
        self._stop.set()
        with self._lock:
            socks = list(self._socks)
            threads = list(self._threads)
        shut_down(socks, threads, join_timeout)
        try:
            self.lsock.close()
        except OSError:
            pass

    def _accept_loop(self):
        cid = 0
        while not self._stop.is_set():
            try:
                r, _, _ = select.select([self.lsock], [], [], 0.1)
            except (OSError, ValueError):
                return
            if not r:
                continue
            try:
                sock, _ = self.lsock.accept()
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                return
            cid += 1
            t = threading.Thread(target=self._serve, args=(sock, cid), daemon=True)
            with self._lock:
                self._socks.add(sock)
                self._threads.append(t)
                self.conns[cid] = {"closed": False, "goaway_received": None}
            t.start()

    # -- one connection --------------------------------------------------------------
    def _serve(self, sock, cid):
        import hpack

        enc, dec = hpack.Encoder(), hpack.Decoder()
        dec.max_header_list_size = 1 << 20
        sock.settimeout(IO_TIMEOUT)
        buf = bytearray()
        streams = {}  # id -> record
        block = None  # (stream id, flags of the HEADERS frame, fragment) being received
        try:
            # SETTINGS: 100 streams, a 1 MiB stream window; the connection window too.
            sock.sendall(frame(SETTINGS, 0, 0, struct.pack(">HIHI", 0x3, 100, 0x4, 1 << 20))
                         + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", (1 << 20) - 65535)))
            preface_ok = False
            while not self._stop.is_set():
                r, _, _ = select.select([sock], [], [], 0.1)
                if not r:
                    continue
                data = sock.recv(1 << 16)
                if not data:
                    return
                buf += data
                if not preface_ok:
                    if len(buf) < len(PREFACE):
                        continue
                    if bytes(buf[: len(PREFACE)]) != PREFACE:
                        raise ValueError(f"bad preface {bytes(buf[:24])!r}")
                    del buf[: len(PREFACE)]
                    preface_ok = True
                out = bytearray()
                while len(buf) >= 9:
                    length = int.from_bytes(buf[0:3], "big")
                    if len(buf) < 9 + length:
                        break
                    ftype, flags = buf[3], buf[4]
                    sid = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
                    payload = bytes(buf[9 : 9 + length])
                    del buf[: 9 + length]
                    if ftype in (HEADERS, CONTINUATION):
                        if ftype == HEADERS:
                            frag = payload
                            if flags & PADDED:
                                frag = frag[1 : len(frag) - payload[0]]
                            if flags & PRIORITY_FLAG:
                                frag = frag[5:]
                            block = (sid, flags, bytearray(frag))
                        elif block is not None:
                            block[2].extend(payload)
                        if flags & END_HEADERS and block is not None:
                            bsid, bflags, frag = block
                            block = None
                            fields = [(_s(k), _s(v)) for k, v in dec.decode(bytes(frag), raw=True)]
                            rec = streams.get(bsid)
                            if rec is None:
                                rec = {"conn": cid, "stream": bsid, "method": _field(fields, ":method"),
                                       "path": _field(fields, ":path"), "headers": fields, "body": b"",
                                       "ended": False, "answered": False, "reset_by_peer": None}
                                streams[bsid] = rec
                                with self._lock:
                                    self.requests.append(rec)
                            if bflags & END_STREAM:
                                out += self._end(enc, rec)
                    elif ftype == DATA:
                        rec = streams.get(sid)
                        if length:
                            inc = struct.pack(">I", length)
                            out += frame(WINDOW_UPDATE, 0, 0, inc)
                            if rec is not None and not flags & END_STREAM:
                                out += frame(WINDOW_UPDATE, 0, sid, inc)
                        if rec is not None:
                            body = payload
                            if flags & PADDED:
                                body = body[1 : len(body) - payload[0]]
                            with self._lock:
                                rec["body"] += body
                            if flags & END_STREAM:
                                out += self._end(enc, rec)
                    elif ftype == SETTINGS and not flags & ACK:
                        out += frame(SETTINGS, ACK, 0)
                    elif ftype == PING and not flags & ACK:
                        out += frame(PING, ACK, 0, payload)
                    elif ftype == RST_STREAM:
                        rec = streams.get(sid)
                        if rec is not None:
                            with self._lock:
                                rec["reset_by_peer"] = struct.unpack(">I", payload[:4])[0]
                    elif ftype == GOAWAY:
                        with self._lock:
                            self.conns[cid]["goaway_received"] = struct.unpack(">I", payload[4:8])[0]
                if out:
                    sock.sendall(bytes(out))
        except (ConnectionResetError, BrokenPipeError, OSError) as e:
            if not self._stop.is_set() and not isinstance(e, (ConnectionResetError, BrokenPipeError)):
                self.errors.append(repr(e))
        except Exception as e:  # noqa: BLE001 - recorded for the test to inspect
            self.errors.append(repr(e))
        finally:
            with self._lock:
                self.conns[cid]["closed"] = True
                self._socks.discard(sock)
            try:
                sock.close()
            except OSError:
                pass

    def _end(self, enc, rec):
        """The request ended: the bytes of its answer."""
        with self._lock:
            rec["ended"] = True
            rec["answered"] = True
            steps = self._answers.get(rec["path"])
        if steps is None:
            if rec["method"] == "HEAD":
                steps = [("headers", [(":status", "200"), ("content-length", "3")], True)]
            else:
                steps = [("headers", [(":status", "200"), ("content-type", "text/plain"),
                                      ("content-length", str(len(OK_BODY)))], False),
                         ("data", OK_BODY, True)]
        out = bytearray()
        sid = rec["stream"]
        for step in steps:
            if step[0] == "headers":
                block = enc.encode([(_b(k), _b(v)) for k, v in step[1]])
                out += frame(HEADERS, END_HEADERS | (END_STREAM if step[2] else 0), sid, block)
            elif step[0] == "data":
                out += frame(DATA, END_STREAM if step[2] else 0, sid, step[1])
            elif step[0] == "rst":
                out += frame(RST_STREAM, 0, sid, struct.pack(">I", step[1]))
            else:
                raise ValueError(f"unknown step {step!r}")
        return bytes(out)


def _field(fields, name):
    for k, v in fields:
        if k == name:
            return v
    return None
