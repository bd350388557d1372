# SPDX-License-Identifier: Apache-2.0
"""Draining: SIGTERM stops accepting, /ready turns 503, an in-flight transfer
finishes intact and meshd exits 0; POST /drain does the same but keeps the
process running."""
import http.client
import signal
import socket
import subprocess

import pytest

from env.backends import det_bytes
from env.clients import connect, echo_roundtrip, expect_closed, recv_to_eof, wait_until

ROUND = 64 * 1024
ROUNDS_BEFORE = 16
ROUNDS_AFTER = 48


def rounds(s, start, stop):
    """Client-paced transfer: send one 64 KiB block, read its echo, repeat."""
    for i in range(start, stop):
        echo_roundtrip(s, det_bytes(ROUND, seed=100 + i))


def ready_status(m):
    try:
        return m.admin_get("/ready", timeout=5)[0]
    except (OSError, http.client.HTTPException) as e:
        return e


def assert_new_connections_refused(port, echo, accepted_before):
    """A new connection is refused, or (if the kernel completed it) closed
    without reaching the upstream."""
    try:
        s = connect(port, timeout=5)
    except ConnectionRefusedError:
        return "refused"
    except ConnectionResetError:
        return "rst-on-connect"
    with s:
        try:
            s.sendall(b"x")
        except (BrokenPipeError, ConnectionResetError):
            return "rst"
        how = expect_closed(s, timeout=5.0)
    assert echo.accepted == accepted_before, "a connection made while draining reached the upstream"
    return how


def test_sigterm_drains_in_flight_transfer(meshd, backends):
    echo = backends.echo()
    m = meshd("tcp_basic", upstream_port=echo.port, drain_timeout=120)

    s = connect(m.listen_port)
    with s:
        rounds(s, 0, ROUNDS_BEFORE)
        m.signal(signal.SIGTERM)

        # /ready turns 503 while meshd is alive (our connection keeps it so).
        def draining():
            assert m.alive(), f"meshd exited ({m.proc.poll()}) with a connection still open"
            return ready_status(m) == 503

        wait_until(draining, timeout=20, what="GET /ready == 503 after SIGTERM")
        how = assert_new_connections_refused(m.listen_port, echo, accepted_before=1)
        print("new connection while draining:", how)

        rounds(s, ROUNDS_BEFORE, ROUNDS_BEFORE + ROUNDS_AFTER)
        s.shutdown(socket.SHUT_WR)
        rest, _, _ = recv_to_eof(s)
        assert rest == 0
    assert echo.next_result() == {"bytes": ROUND * (ROUNDS_BEFORE + ROUNDS_AFTER)}

    # The last connection is gone: meshd exits 0 well before --drain-timeout.
    try:
        rc = m.wait_exit(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("meshd still running 30 s after its last connection closed (drain-timeout 120 s)")
    assert rc == 0, f"meshd exited {rc} after SIGTERM drain\n{m.log_tail()}"
    m.check_sanitizers()


def test_post_drain_keeps_running(meshd, backends):
    echo = backends.echo()
    m = meshd("tcp_basic", upstream_port=echo.port)

    s = connect(m.listen_port)
    with s:
        rounds(s, 0, 4)
        status, body = m.admin_post("/drain")
        assert status == 200, f"POST /drain -> {status} {body!r}"
        wait_until(lambda: ready_status(m) == 503, timeout=20, what="GET /ready == 503 after POST /drain")
        rounds(s, 4, 12)
        assert m.alive(), "meshd exited after POST /drain"
        s.shutdown(socket.SHUT_WR)
        rest, _, _ = recv_to_eof(s)
        assert rest == 0
    assert echo.next_result() == {"bytes": ROUND * 12}
    assert m.alive(), "meshd exited after POST /drain once the connection closed"
    assert ready_status(m) == 503
