# SPDX-License-Identifier: Apache-2.0
"""500 connections open at the same time through meshd --concurrency 2, each
echoing its own payload, all complete."""
import resource
import selectors
import socket
import time

import pytest

from env.backends import det_bytes
from env.clients import connect

N = 500
PAYLOAD = 2048
DEADLINE = 90.0
# This process holds N client sockets and the echo server's N; meshd needs
# 2 per connection plus its own. meshd inherits our limit.
NEED_FDS = 4 * N


@pytest.fixture
def enough_fds():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = NEED_FDS if hard == resource.RLIM_INFINITY else min(hard, max(soft, NEED_FDS))
    if want < NEED_FDS:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {NEED_FDS} needed for {N} connections")
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def payload(i):
    head = f"conn-{i:04d}-".encode()
    return head + det_bytes(PAYLOAD - len(head), seed=1000 + i)


def test_500_concurrent_echo(enough_fds, meshd, backends):
    echo = backends.echo()
    m = meshd("tcp_basic", upstream_port=echo.port, concurrency=2)
    with open(f"/proc/{m.pid}/limits") as f:
        line = next(l for l in f if l.startswith("Max open files"))
    assert int(line.split()[3]) >= NEED_FDS // 2, f"meshd limit too low: {line}"

    socks = []
    sel = selectors.DefaultSelector()
    try:
        # 1. open all N connections; none is closed before all have echoed.
        for i in range(N):
            socks.append(connect(m.listen_port, timeout=30))
        # 2. send every payload (2 KiB each fits the socket buffers).
        for i, s in enumerate(socks):
            s.sendall(payload(i))
        # 3. collect the echoes concurrently.
        got = {}
        for i, s in enumerate(socks):
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, i)
            got[i] = bytearray()
        pending = set(range(N))
        deadline = time.monotonic() + DEADLINE
        for _ in range(100000):
            if not pending or time.monotonic() > deadline:
                break
            for key, _ in sel.select(timeout=1.0):
                i = key.data
                try:
                    b = key.fileobj.recv(65536)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    b = b""
                if not b:
                    sel.unregister(key.fileobj)
                    pending.discard(i)
                    got[i] += b"<closed>"
                    continue
                got[i] += b
                if len(got[i]) >= PAYLOAD:
                    sel.unregister(key.fileobj)
                    pending.discard(i)
        assert not pending, f"{len(pending)} of {N} connections got no full echo by the deadline"
        bad = [i for i in range(N) if bytes(got[i]) != payload(i)]
        assert not bad, f"{len(bad)} connections got a wrong echo, e.g. conn {bad[0]}: {bytes(got[bad[0]][:40])!r}"
        # 4. half-close and wait for each echo server's FIN.
        for s in socks:
            s.setblocking(True)
            s.settimeout(30)
            s.shutdown(socket.SHUT_WR)
        for i, s in enumerate(socks):
            assert s.recv(1) == b"", f"conn {i}: expected EOF after the echo"
    finally:
        sel.close()
        for s in socks:
            s.close()
    assert echo.accepted == N, f"echo server accepted {echo.accepted} upstream connections, expected {N}"
