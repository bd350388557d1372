# SPDX-License-Identifier: Apache-2.0
"""Raw-socket client helpers and a bounded poll loop.

Every socket gets a timeout so nothing blocks forever; every loop here is
bounded in time (a deadline) and in iterations.
"""
import hashlib
import socket
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


def connect(port, timeout=DEFAULT_TIMEOUT, host="127.0.0.1"):
    s = socket.create_connection((host, port), timeout=timeout)
    s.settimeout(timeout)
    return s


def send_chunks(sock, chunks):
    """sendall each chunk; returns (bytes sent, sha256 hex)."""
    h = hashlib.sha256()
    n = 0
    for c in chunks:
        sock.sendall(c)
        h.update(c)
        n += len(c)
    return n, h.hexdigest()


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


class BackgroundSender:
    """Send chunks from a thread (so the caller can read at the same time),
    then optionally shutdown(SHUT_WR). join() re-raises the thread's error."""

    def __init__(self, sock, chunks, shut_wr=True):
        self.sock = sock
        self.chunks = chunks
        self.shut_wr = shut_wr
        self.sent = 0
        self.sha256 = None
        self.error = None
        self._t = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._t.start()
        return self

    def _run(self):
        try:
            self.sent, self.sha256 = send_chunks(self.sock, self.chunks)
            if self.shut_wr:
                self.sock.shutdown(socket.SHUT_WR)
        except Exception as e:  # noqa: BLE001 - re-raised by join()
            self.error = e

    def join(self, timeout=DEFAULT_TIMEOUT):
        self._t.join(timeout)
        if self._t.is_alive():
            raise AssertionError(f"sender still running after {timeout}s")
        if self.error is not None:
            raise self.error
        return self.sent, self.sha256
