# SPDX-License-Identifier: Apache-2.0
"""Threaded TCP backends on 127.0.0.1:0 for the integration tests.

Every server listens on an ephemeral loopback port, runs one accept thread and
one thread per connection, counts what it accepts and records one result per
finished connection in `results` (a queue.Queue of dicts). stop() closes the
listener and every open connection and joins the threads, with bounded waits.

  EchoServer       echoes until EOF, then half-closes back
  SinkServer       reads to EOF, reports sha256 + length (to the client and in
                   `results`), or replies with N deterministic bytes
  SourceServer     sends N deterministic bytes, then closes, or half-closes and
                   keeps reading (recording what the client sent)
  CountingServer   accepts and counts, discards input until EOF
  RefusingPort     a bound socket that never listens: connects are refused
"""
import hashlib
import queue
import random
import select
import socket
import struct
import threading
import time
from functools import lru_cache

CHUNK = 1 << 20  # deterministic data is produced in 1 MiB chunks
IO_TIMEOUT = 120.0  # per-socket-operation timeout inside backends (only prevents hangs)


@lru_cache(maxsize=8)
def _base_block(seed):
    return random.Random(seed).randbytes(CHUNK)


def det_chunks(total, seed=0, chunk=CHUNK):
    """Yield `total` bytes of deterministic pseudo-random data, at most `chunk`
    bytes at a time. Chunk i of 1 MiB starts with (seed, i) so that reordered
    or repeated chunks change the digest. Never holds more than one chunk."""
    assert chunk <= CHUNK
    base = _base_block(seed)
    sent = 0
    i = 0
    while sent < total:
        n = min(CHUNK, total - sent)
        block = struct.pack(">QQ", seed, i) + base[16:]
        for off in range(0, n, chunk):
            yield block[off : min(off + chunk, n)]
        sent += n
        i += 1


def det_bytes(total, seed=0):
    """The deterministic data as one bytes object (only for small totals)."""
    assert total <= 64 * CHUNK
    return b"".join(det_chunks(total, seed))


@lru_cache(maxsize=32)
def det_digest(total, seed=0):
    """sha256 hex digest of det_chunks(total, seed)."""
    h = hashlib.sha256()
    for c in det_chunks(total, seed):
        h.update(c)
    return h.hexdigest()


class TCPServer:
    """Base: listener + accept thread + one handler thread per connection."""

    def __init__(self, backlog=1024):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(backlog)
        self.lsock.setblocking(False)
        self.port = self.lsock.getsockname()[1]
        self.results = queue.Queue()
        self.errors = []  # exceptions raised by handlers (other than resets)
        self._lock = threading.Lock()
        self.accepted = 0  # connections accepted
        self.finished = 0  # connections whose handler returned
        self.active = 0
        self.peak_active = 0
        self._conns = set()
        self._threads = []
        self._stop = threading.Event()
        self._accept_thread = None

    # -- lifecycle -------------------------------------------------------
    def start(self):
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"{type(self).__name__}:{self.port}", daemon=True
        )
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
            conns = list(self._conns)
            threads = list(self._threads)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + join_timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        for c in conns:
            try:
                c.close()
            except OSError:
                pass

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                r, _, _ = select.select([self.lsock], [], [], 0.1)
            except (OSError, ValueError):
                return
            if not r:
                continue
            for _ in range(256):  # bounded burst of accepts per wakeup
                try:
                    conn, _addr = self.lsock.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    return
                conn.setblocking(True)
                conn.settimeout(IO_TIMEOUT)
                with self._lock:
                    self.accepted += 1
                    self.active += 1
                    self.peak_active = max(self.peak_active, self.active)
                    self._conns.add(conn)
                    t = threading.Thread(target=self._run, args=(conn,), daemon=True)
                    self._threads.append(t)
                t.start()

    def _run(self, conn):
        try:
            self.handle(conn)
        except (ConnectionResetError, BrokenPipeError) as e:
            self.results.put({"error": repr(e)})
        except Exception as e:  # noqa: BLE001 - recorded for the test to inspect
            if not self._stop.is_set():
                self.errors.append(e)
            self.results.put({"error": repr(e)})
        finally:
            try:
                conn.close()
            except OSError:
                pass
            with self._lock:
                self._conns.discard(conn)
                self.active -= 1
                self.finished += 1

    def handle(self, conn):
        raise NotImplementedError

    # -- helpers for tests ----------------------------------------------------
    def next_result(self, timeout=30.0):
        """The next finished connection's result dict (raises queue.Empty)."""
        return self.results.get(timeout=timeout)

    @staticmethod
    def _read_to_eof(conn, h=None):
        n = 0
        while True:
            b = conn.recv(CHUNK)
            if not b:
                return n
            n += len(b)
            if h is not None:
                h.update(b)


class EchoServer(TCPServer):
    """Echo every byte; on EOF half-close back and finish."""

    def handle(self, conn):
        n = 0
        while True:
            b = conn.recv(256 * 1024)
            if not b:
                break
            conn.sendall(b)
            n += len(b)
        conn.shutdown(socket.SHUT_WR)
        self.results.put({"bytes": n})


class SinkServer(TCPServer):
    """Read to EOF hashing. Then reply: reply="digest" sends
    b"<sha256hex> <length>\\n"; reply=N (int) sends N deterministic bytes
    (det_chunks(N, reply_seed)). Then close."""

    def __init__(self, reply="digest", reply_seed=1, **kw):
        super().__init__(**kw)
        self.reply = reply
        self.reply_seed = reply_seed

    def handle(self, conn):
        h = hashlib.sha256()
        n = self._read_to_eof(conn, h)
        res = {"sha256": h.hexdigest(), "bytes": n}
        if self.reply == "digest":
            conn.sendall(f"{res['sha256']} {n}\n".encode())
        else:
            for c in det_chunks(int(self.reply), self.reply_seed):
                conn.sendall(c)
        conn.shutdown(socket.SHUT_WR)
        self.results.put(res)


class SourceServer(TCPServer):
    """Send `nbytes` of det_chunks(nbytes, seed). then="close": close the
    connection (reading nothing); then="half_close": shutdown(SHUT_WR), read
    what the client sends until EOF and record its sha256 and length."""

    def __init__(self, nbytes, seed=0, then="close", **kw):
        super().__init__(**kw)
        assert then in ("close", "half_close")
        self.nbytes = nbytes
        self.seed = seed
        self.then = then

    def handle(self, conn):
        h = hashlib.sha256()
        for c in det_chunks(self.nbytes, self.seed):
            conn.sendall(c)
            h.update(c)
        res = {"sent_sha256": h.hexdigest(), "sent_bytes": self.nbytes}
        if self.then == "half_close":
            conn.shutdown(socket.SHUT_WR)
            rh = hashlib.sha256()
            n = self._read_to_eof(conn, rh)
            res.update({"sha256": rh.hexdigest(), "bytes": n})
        self.results.put(res)


class CountingServer(TCPServer):
    """Accept and count (see `accepted`); discard input until EOF."""

    def handle(self, conn):
        n = self._read_to_eof(conn)
        self.results.put({"bytes": n})


class RefusingPort:
    """A loopback port that refuses connections: the socket is bound (so
    nobody else gets the port) but never listens, so the kernel answers a
    SYN with RST."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def start(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        try:
            self.sock.close()
        except OSError:
            pass
