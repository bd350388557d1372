# SPDX-License-Identifier: Apache-2.0
"""Connect failover: a refused endpoint moves the connection to the next one;
with every endpoint down the downstream connection is closed at once and
counted as upstream_unavailable."""
import socket

from env.clients import connect, echo_roundtrip, expect_closed, wait_until

CONNS = 20
DOWN_CONNS = 6


def test_refused_endpoint_fails_over(meshd, backends):
    bad = backends.refusing()
    echo = backends.echo()
    m = meshd("tcp_failover", first_port=bad.port, second_port=echo.port)

    for i in range(CONNS):
        s = connect(m.listen_port)
        with s:
            echo_roundtrip(s, f"hello {i}\n".encode())
            s.shutdown(socket.SHUT_WR)
            assert s.recv(1) == b""
    assert echo.accepted == CONNS

    # Round robin puts endpoint 0 (refusing) first for some connections; with
    # 20 connections over 2 workers some worker gets at least two.
    fails = wait_until(
        lambda: m.stats().get("meshd_cluster_upstream_cx_connect_fail_total", cluster="app"),
        timeout=10,
        what="meshd_cluster_upstream_cx_connect_fail_total{cluster=app} > 0",
    )
    assert fails > 0
    assert (m.stats().get("meshd_cluster_upstream_unavailable_total", cluster="app") or 0) == 0


def test_all_endpoints_down_closes_downstream(meshd, backends):
    a = backends.refusing()
    b = backends.refusing()
    m = meshd("tcp_failover", first_port=a.port, second_port=b.port)

    outcomes = []
    for i in range(DOWN_CONNS):
        try:
            s = connect(m.listen_port)
        except ConnectionResetError:
            # The handshake completed in the kernel, and meshd's RST arrived
            # before connect() returned: closed at once, as required.
            outcomes.append("rst-on-connect")
            continue
        with s:
            try:
                s.sendall(b"request\n")
            except (BrokenPipeError, ConnectionResetError):
                outcomes.append("rst-on-send")
                continue
            # Generous deadline: it only keeps a broken meshd from hanging us.
            outcomes.append(expect_closed(s, timeout=5.0))
    assert len(outcomes) == DOWN_CONNS

    def unavailable():
        v = m.stats().get("meshd_cluster_upstream_unavailable_total", cluster="app")
        return v is not None and v >= DOWN_CONNS

    wait_until(unavailable, timeout=10, what=f"upstream_unavailable_total >= {DOWN_CONNS}")
    st = m.stats()
    v = st.get("meshd_cluster_upstream_unavailable_total", cluster="app")
    assert v == DOWN_CONNS, (
        f"upstream_unavailable_total {v}, expected {DOWN_CONNS} (one per downstream connection); "
        f"connect_fail_total {st.get('meshd_cluster_upstream_cx_connect_fail_total', cluster='app')}, "
        f"outcomes {outcomes}"
    )
