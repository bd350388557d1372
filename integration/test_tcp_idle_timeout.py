# SPDX-License-Identifier: Apache-2.0
"""idle_timeout_ms closes an idle connection, on both sides."""
from env.clients import connect, echo_roundtrip, expect_closed, wait_until

IDLE_MS = 300


def test_idle_connection_closed(meshd, backends):
    echo = backends.echo()
    m = meshd("tcp_basic", upstream_port=echo.port, idle_timeout_ms=IDLE_MS)

    s = connect(m.listen_port)
    with s:
        echo_roundtrip(s, b"ping\n")
        # Then nothing either way: meshd closes the downstream side. The
        # deadline only keeps a broken meshd from hanging the test.
        how = expect_closed(s, timeout=15.0)
    # ...and the upstream side: the echo server sees EOF (or a reset).
    wait_until(lambda: echo.finished == 1, timeout=10, what="upstream connection closed by meshd")
    res = echo.next_result(timeout=1)
    assert res.get("bytes") == 5 or "error" in res, res
    print("downstream close:", how)
