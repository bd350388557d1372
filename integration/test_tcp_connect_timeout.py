# SPDX-License-Identifier: Apache-2.0
"""connect_timeout_ms: an endpoint that never completes the TCP handshake is
given up after the timeout and the connection moves on to the next endpoint.

The endpoint that never answers is a loopback black hole (env.backends.
BlackHolePort): a listener with backlog 0 whose accept queue the test has
already filled with a connection it never accepts. Linux then drops every
further SYN to it (no SYN-ACK, no RST), so a connect() to it neither
completes nor fails: it times out. BlackHolePort checks this with a plain
Python connect() before the test uses it, and the test checks again at the
end. No address other than 127.0.0.1 is involved."""
import socket

from env.clients import connect, echo_roundtrip, wait_until

CONNS = 8
CONNECT_TIMEOUT_MS = 200


def test_black_hole_endpoint_times_out_and_fails_over(meshd, backends):
    hole = backends.black_hole()
    echo = backends.echo()
    m = meshd(
        "tcp_connect_timeout",
        first_port=hole.port,
        second_port=echo.port,
        connect_timeout_ms=CONNECT_TIMEOUT_MS,
    )

    # Every connection gets through: those whose round-robin pick is the
    # black hole first wait connect_timeout_ms, then reach the echo server.
    # The client's 30 s socket timeout only guards against a hang.
    for i in range(CONNS):
        s = connect(m.listen_port)
        with s:
            echo_roundtrip(s, f"hello {i}\n".encode())
            s.shutdown(socket.SHUT_WR)
            assert s.recv(1) == b"", f"connection {i}: data after the echo"
    assert echo.accepted == CONNS

    timeouts = wait_until(
        lambda: m.stats().get("meshd_cluster_upstream_cx_connect_timeout_total", cluster="app"),
        timeout=10,
        what="meshd_cluster_upstream_cx_connect_timeout_total{cluster=app} > 0",
    )
    st = m.stats()
    log = [l for l in m.log().splitlines() if "upstream_connect_failed" in l]
    assert 0 < timeouts <= CONNS, f"connect_timeout_total {timeouts} for {CONNS} connections; log: {log}"
    # A black hole times out; it does not refuse.
    assert (st.get("meshd_cluster_upstream_cx_connect_fail_total", cluster="app") or 0) == 0, log
    assert (st.get("meshd_cluster_upstream_unavailable_total", cluster="app") or 0) == 0, log
    # ...and it still is one: the timeouts came from a handshake that never completed.
    assert hole.probe() == "timeout"
