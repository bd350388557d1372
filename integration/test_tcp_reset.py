# SPDX-License-Identifier: Apache-2.0
"""A reset (RST) travels through meshd each way, with splice(2) on and off:
the other side sees ECONNRESET, never a clean EOF, and meshd forgets the
session.

The last three tests reset a side that meshd is not reading at that moment
(its data direction is half-closed, or held back by a slow reader): meshd
must notice the reset anyway and pass it on at once."""
import queue
import socket

import pytest

from env.backends import det_bytes, det_chunks
from env.clients import (
    connect,
    fill_until_blocked,
    recv_exact,
    recv_until_closed,
    reset_close,
    send_chunks,
    tcp_state,
    wait_until,
)

SPLICE = [pytest.param("false", id="splice"), pytest.param("true", id="nosplice")]
REQUEST = 64 * 1024 + 5
# The upstream's reply before its reset: none, or more than meshd's 64 KiB
# buffer so the reset may catch meshd with bytes in flight.
REPLIES = [pytest.param(0, id="no_reply"), pytest.param(256 * 1024 + 3, id="reply_256k")]
DOWNLOAD_BEFORE_RESET = 1024 * 1024
UPLOAD_BEFORE_RESET = 1024 * 1024
# Hang-guard for a reset to cross meshd (it takes milliseconds).
RESET_GUARD = 5.0


def wait_sessions_gone(m):
    def gone():
        st = m.stats()
        return (
            st.get("meshd_listener_downstream_cx_active", listener="in") == 0
            and st.get("meshd_cluster_upstream_cx_active", cluster="app") == 0
        )

    wait_until(gone, timeout=10, what="downstream and upstream cx_active == 0 after the reset")


def upstream_end(srv, m, what):
    """The EndObserver's record of how its connection ended."""
    try:
        return srv.next_result(timeout=30)
    except queue.Empty:
        raise AssertionError(
            f"upstream connection still open 30 s after {what}; meshd log: {session_end_lines(m)}"
        ) from None


def session_end_lines(m):
    return [l for l in m.log().splitlines() if "event=tcp_session_end" in l]


@pytest.mark.parametrize("reply", REPLIES)
@pytest.mark.parametrize("disable_splice", SPLICE)
def test_upstream_reset_reaches_client(meshd, backends, disable_splice, reply):
    # The upstream reads the whole request, sends `reply` bytes and resets.
    srv = backends.resetting(REQUEST, reply=reply, reply_seed=21)
    m = meshd("tcp_basic", upstream_port=srv.port, disable_splice=disable_splice)

    s = connect(m.listen_port)
    with s:
        sent, req_digest = send_chunks(s, det_chunks(REQUEST, seed=20, chunk=16 * 1024))
        how, n, _, data = recv_until_closed(s, keep=True, limit=reply)

    res = srv.next_result()
    assert res == {"read": sent, "sha256": req_digest, "sent": reply}, f"upstream result: {res}"
    assert how == "rst", (
        f"client saw a clean EOF after {n} bytes where the upstream reset the connection "
        f"(reply {reply} bytes); meshd log: {session_end_lines(m)}"
    )
    # Bytes sent before the reset may be lost (the RST discards them), but
    # what arrives is a prefix of them.
    assert data == det_bytes(reply, seed=21)[:n], f"client got {n} bytes that are not a prefix of the reply"
    wait_sessions_gone(m)


@pytest.mark.parametrize("disable_splice", SPLICE)
def test_client_reset_while_upstream_sends(meshd, backends, disable_splice):
    # The upstream sends without end; the client reads 1 MiB and resets.
    srv = backends.end_observer("send", seed=22)
    m = meshd("tcp_basic", upstream_port=srv.port, disable_splice=disable_splice)

    s = connect(m.listen_port)
    with s:
        got = recv_exact(s, DOWNLOAD_BEFORE_RESET)
        assert got == det_bytes(DOWNLOAD_BEFORE_RESET, seed=22)
        reset_close(s)

    # A sending upstream gets a reset from its kernel even if meshd merely
    # closed with unread bytes; test_client_reset_while_upstream_reads is
    # the one that tells a forwarded RST from a FIN.
    res = upstream_end(srv, m, "the client reset mid-download")
    assert res["end"] == "rst", (
        f"upstream saw {res} after the client reset mid-download (expected ECONNRESET); "
        f"meshd log: {session_end_lines(m)}"
    )
    assert res["bytes"] >= DOWNLOAD_BEFORE_RESET
    wait_sessions_gone(m)


@pytest.mark.parametrize("disable_splice", SPLICE)
def test_client_reset_while_upstream_reads(meshd, backends, disable_splice):
    # The upstream reads without end; the client uploads 1 MiB, waits until
    # the upstream has all of it (the connection is mid-stream, nothing is
    # half-closed) and resets.
    srv = backends.end_observer("recv")
    m = meshd("tcp_basic", upstream_port=srv.port, disable_splice=disable_splice)

    s = connect(m.listen_port)
    with s:
        send_chunks(s, det_chunks(UPLOAD_BEFORE_RESET, seed=23, chunk=64 * 1024))
        wait_until(
            lambda: srv.progress >= UPLOAD_BEFORE_RESET,
            timeout=30,
            what=f"upstream received {UPLOAD_BEFORE_RESET} bytes",
        )
        reset_close(s)

    res = upstream_end(srv, m, "the client reset mid-upload")
    assert res["end"] == "rst", (
        f"upstream saw {res} after the client reset mid-upload (expected ECONNRESET, "
        f"not a clean EOF); meshd log: {session_end_lines(m)}"
    )
    assert res["bytes"] == UPLOAD_BEFORE_RESET
    wait_sessions_gone(m)


def wait_reset(sock, what):
    """Wait until `sock`'s peer has reset it (state CLOSE; a FIN would give
    CLOSE_WAIT), looking at the kernel's TCP state without reading."""
    states = []

    def reset():
        states.append(tcp_state(sock))
        return states[-1] == "CLOSE"

    try:
        wait_until(reset, timeout=RESET_GUARD, interval=0.01, what=what)
    except AssertionError as e:
        raise AssertionError(f"{e}; its TCP state is still {states[-1] if states else '?'}") from None


@pytest.mark.parametrize("disable_splice", SPLICE)
def test_client_reset_after_half_close_reaches_idle_upstream(meshd, backends, disable_splice):
    # The client sends a request and half-closes; the upstream reads it and
    # the FIN, then is idle (it would answer later). The client resets.
    up = backends.manual()
    m = meshd("tcp_basic", upstream_port=up.port, disable_splice=disable_splice)

    s = connect(m.listen_port)
    with s:
        s.sendall(b"request\n")
        s.shutdown(socket.SHUT_WR)
        conn = up.accept()
        assert recv_exact(conn, 8) == b"request\n"
        assert conn.recv(1) == b"", "the client's FIN did not reach the upstream"
        reset_close(s)
    wait_reset(conn, "the idle upstream connection to be reset after the half-closed client reset")
    wait_sessions_gone(m)


@pytest.mark.parametrize("disable_splice", SPLICE)
def test_client_reset_while_upstream_not_reading(meshd, backends, disable_splice):
    # The upstream reads nothing; the client uploads until TCP blocks it
    # (meshd holds its limit and stops reading the client), then resets.
    up = backends.manual()
    m = meshd("tcp_basic", upstream_port=up.port, disable_splice=disable_splice)

    s = connect(m.listen_port)
    with s:
        conn = up.accept()
        queued = fill_until_blocked(s)
        print(f"client queued {queued} bytes before blocking")
        reset_close(s)
    wait_reset(conn, "the non-reading upstream connection to be reset after the client reset")
    wait_sessions_gone(m)


@pytest.mark.parametrize("disable_splice", SPLICE)
def test_upstream_reset_while_client_not_reading(meshd, backends, disable_splice):
    # The client reads nothing; the upstream sends until TCP blocks it (meshd
    # holds its limit and stops reading the upstream), then resets.
    up = backends.manual()
    m = meshd("tcp_basic", upstream_port=up.port, disable_splice=disable_splice)

    s = connect(m.listen_port)
    with s:
        conn = up.accept()
        queued = fill_until_blocked(conn)
        print(f"upstream queued {queued} bytes before blocking")
        reset_close(conn)
        wait_reset(s, "the non-reading client connection to be reset after the upstream reset")
    wait_sessions_gone(m)
