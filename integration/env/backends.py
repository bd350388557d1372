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
  IdentifyServer   greets each connection with its name ("NAME\n"), then
                   discards input until EOF (for load-balancing tests)
  RefusingPort     a bound socket that never listens: connects are refused
  ResettingServer  reads N bytes, optionally replies M bytes, then resets (RST)
  EndObserver      sends or reads until the connection ends, and records how
                   it ended from the backend's side: clean EOF or reset
  ManualServer     a listener whose connections the test accepts and drives
  BlackHolePort    a listener whose accept queue is full: SYNs are dropped, so
                   connects to it neither complete nor fail (they time out)
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

from env.clients import reset_close

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



def shut_down(socks, threads, join_timeout):
    """Ends connection threads: shuts their sockets down (their reads
    return), waits for the threads up to |join_timeout| in all, closes."""
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    deadline = time.monotonic() + join_timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    for s in socks:
        try:
            s.close()
        except OSError:
            pass

class TCPServer:
    """Base: listener + accept thread + one handler thread per connection."""

    def __init__(self, backlog=1024, name=None):
        self._thread_name = name or type(self).__name__
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
            target=self._accept_loop, name=f"{self._thread_name}:{self.port}", daemon=True
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
        shut_down(conns, threads, join_timeout)

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
                with self._lock:
                    self.accepted += 1
                    self._conns.add(conn)
                    t = self._thread_for(conn, self.accepted)
                    self._threads.append(t)
                t.start()

    def _thread_for(self, conn, cid):
        """The thread that serves |conn| (the |cid|-th accepted); called with
        the lock held. This server: a blocking socket and handle()."""
        conn.setblocking(True)
        conn.settimeout(IO_TIMEOUT)
        self.active += 1
        self.peak_active = max(self.peak_active, self.active)
        return threading.Thread(target=self._run, args=(conn,), daemon=True)

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
    (det_chunks(N, reply_seed)). Then close.
    hold=True: a new connection is not read at all until release() is called
    (a slow reader: its sender is held back by TCP flow control); `holding`
    counts connections waiting so."""

    def __init__(self, reply="digest", reply_seed=1, hold=False, **kw):
        super().__init__(**kw)
        self.reply = reply
        self.reply_seed = reply_seed
        self._release = threading.Event()
        if not hold:
            self._release.set()
        self.holding = 0

    def release(self):
        """Let held connections (and all later ones) be read."""
        self._release.set()

    def stop(self, join_timeout=10.0):
        self._release.set()
        super().stop(join_timeout)

    def handle(self, conn):
        if not self._release.is_set():
            with self._lock:
                self.holding += 1
            # Bounded: IO_TIMEOUT at most, like any other backend operation.
            released = self._release.wait(IO_TIMEOUT)
            with self._lock:
                self.holding -= 1
            if not released:
                raise TimeoutError(f"sink held for {IO_TIMEOUT}s without release()")
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
    what the client sends until EOF and record its sha256 and length.
    `progress` counts the bytes sent so far, in steps of `chunk`."""

    def __init__(self, nbytes, seed=0, then="close", chunk=CHUNK, **kw):
        super().__init__(**kw)
        assert then in ("close", "half_close")
        self.nbytes = nbytes
        self.seed = seed
        self.then = then
        self.chunk = chunk  # sendall() granularity, hence of `progress`
        self.progress = 0  # bytes handed to the kernel on the latest connection

    def handle(self, conn):
        h = hashlib.sha256()
        self.progress = 0
        for c in det_chunks(self.nbytes, self.seed, chunk=self.chunk):
            conn.sendall(c)
            h.update(c)
            self.progress += len(c)
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


class IdentifyServer(TCPServer):
    """Send b"<name>\\n" on accept (server first), then read to EOF.
    Result: {"bytes": what the client sent}."""

    def __init__(self, name, **kw):
        super().__init__(name=f"identify-{name}", **kw)
        self.name = name

    def handle(self, conn):
        conn.sendall(f"{self.name}\n".encode())
        n = self._read_to_eof(conn)
        self.results.put({"bytes": n})


class ResettingServer(TCPServer):
    """Read exactly `expect` bytes, send `reply` bytes of det_chunks(reply,
    reply_seed), then abort the connection: SO_LINGER (on, 0 s) + close(), so
    the kernel sends RST (dropping whatever of the reply it still holds).
    Result: {"read": n, "sha256": hex of what was read, "sent": reply}."""

    def __init__(self, expect, reply=0, reply_seed=1, **kw):
        super().__init__(**kw)
        self.expect = expect
        self.reply = reply
        self.reply_seed = reply_seed

    def handle(self, conn):
        h = hashlib.sha256()
        n = 0
        while n < self.expect:
            b = conn.recv(min(CHUNK, self.expect - n))
            if not b:
                raise AssertionError(f"EOF after {n} of {self.expect} bytes")
            n += len(b)
            h.update(b)
        for c in det_chunks(self.reply, self.reply_seed):
            conn.sendall(c)
        reset_close(conn)
        self.results.put({"read": n, "sha256": h.hexdigest(), "sent": self.reply})


class EndObserver(TCPServer):
    """Keep a connection busy and record how it ended, seen from here.
    mode="send": send det_chunks(nbytes, seed) (in 64 KiB sendall()s), then
    half-close and wait for the peer's close; mode="recv": read until EOF.
    Result: {"end": e, "bytes": n, "error": repr or None} with e one of
      "rst"       ConnectionResetError (the peer reset the connection)
      "epipe"     BrokenPipeError
      "eof"       a clean EOF: recv() returned b"" (the peer sent FIN)
      "timeout"   nothing happened for IO_TIMEOUT seconds
      "sent_all"  mode="send" only: all nbytes went out and the peer then
                  closed cleanly
    `progress` counts the bytes moved on the latest connection so far."""

    def __init__(self, mode, nbytes=1 << 40, seed=0, **kw):
        super().__init__(**kw)
        assert mode in ("send", "recv")
        self.mode = mode
        self.nbytes = nbytes
        self.seed = seed
        self.progress = 0

    def handle(self, conn):
        self.progress = 0
        end, err = None, None
        try:
            if self.mode == "send":
                # det_chunks is lazy: the nominal 1 TiB default is never held.
                for c in det_chunks(self.nbytes, self.seed, chunk=64 * 1024):
                    conn.sendall(c)
                    self.progress += len(c)
                conn.shutdown(socket.SHUT_WR)
                self._read_to_eof(conn)
                end = "sent_all"
            else:
                while True:
                    b = conn.recv(CHUNK)
                    if not b:
                        end = "eof"
                        break
                    self.progress += len(b)
        except ConnectionResetError as e:
            end, err = "rst", e
        except BrokenPipeError as e:
            end, err = "epipe", e
        except socket.timeout as e:
            end, err = "timeout", e
        self.results.put({"end": end, "bytes": self.progress, "error": repr(err) if err else None})


class ManualServer:
    """A loopback listener whose connections the test accepts itself
    (accept()), for tests that drive the upstream side step by step.
    stop() closes the listener and every accepted connection."""

    def __init__(self):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.conns = []

    def start(self):
        return self

    def accept(self, timeout=30.0):
        """The next connection (blocking with `timeout` on every operation)."""
        self.lsock.settimeout(timeout)
        conn, _ = self.lsock.accept()
        conn.settimeout(timeout)
        self.conns.append(conn)
        return conn

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        for c in self.conns + [self.lsock]:
            try:
                c.close()
            except OSError:
                pass
        self.conns.clear()


class BlackHolePort:
    """A loopback port where connects time out: TCP handshakes never complete.

    Linux drops a SYN to a listener whose accept queue is full (no SYN-ACK,
    no RST; tcp_abort_on_overflow only concerns the final ACK). The socket
    listens with backlog 0, which admits one queued connection; start()
    fills the queue with `fillers` connections of its own that are never
    accepted (the first completes, the others stay in SYN-SENT), then checks
    with probe() that a plain connect() really times out, so a test never
    mistakes a refused or completed connect for a black hole.
    Only 127.0.0.1 is involved."""

    def __init__(self, fillers=2, probe_timeout=0.5):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.fillers = []
        self.n_fillers = fillers
        self.probe_timeout = probe_timeout

    def start(self):
        for _ in range(self.n_fillers):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", self.port))  # EINPROGRESS; never accepted
            self.fillers.append(s)
        # The first filler completes its handshake (and fills the queue).
        _, w, _ = select.select([], [self.fillers[0]], [], 10.0)
        err = self.fillers[0].getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if not w or err:
            self.stop()
            raise AssertionError(f"black hole: filler connect did not complete (err {err})")
        outcome = self.probe()
        if outcome != "timeout":
            self.stop()
            raise AssertionError(
                f"black hole on 127.0.0.1:{self.port} is not one: a probe connect {outcome} "
                f"instead of timing out after {self.probe_timeout}s"
            )
        return self

    def probe(self):
        """Try one plain connect(): "timeout" (the black hole works),
        "connected" or "refused"/repr(error)."""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(self.probe_timeout)
        try:
            s.connect(("127.0.0.1", self.port))
            return "connected"
        except socket.timeout:
            return "timeout"
        except ConnectionRefusedError:
            return "refused"
        except OSError as e:
            return repr(e)
        finally:
            s.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        for s in self.fillers:
            try:
                s.close()
            except OSError:
                pass
        self.fillers.clear()
        try:
            self.sock.close()
        except OSError:
            pass


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
