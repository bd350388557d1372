# SPDX-License-Identifier: Apache-2.0
"""Bounded memory with a slow reader, with splice(2) on and off.

A fast writer sends 256 MiB through meshd to a reader that reads nothing for
a while. meshd holds at most buffer_limit_bytes (default 64 KiB) per
direction and then stops reading the writer, so the writer is blocked by
TCP flow control once the kernel's socket buffers are full (those are
kernel memory, not meshd's RSS). The test waits until the writer makes no
progress, then checks meshd's own memory, and that exactly what meshd has
read but not written is within the limit; then the reader reads everything
and the sha256 matches."""
import pytest

from env.backends import det_chunks, det_digest
from env.clients import BackgroundSender, connect, recv_to_eof, wait_stalled, wait_until

SIZE = 256 * 1024 * 1024
CHUNK = 64 * 1024  # writer granularity, hence of its progress counter
BUFFER_LIMIT = 64 * 1024  # tcp_proxy.buffer_limit_bytes default
RSS_GROWTH_LIMIT_KIB = 32 * 1024  # generous: meshd itself may hold 2 x 64 KiB
STALL_QUIET = 1.0  # seconds without progress that count as "blocked"
SPLICE = [pytest.param("false", id="splice"), pytest.param("true", id="nosplice")]


def check_bounded(m, rss0, held, what):
    """meshd's RSS (now and its peak) has not grown past the bound over rss0,
    and `held` (bytes meshd read but has not written) is within the limit."""
    rss, hwm = m.memory_kib()
    print(f"{what}: rss0={rss0} KiB rss={rss} KiB hwm={hwm} KiB held={held} B")
    assert held <= BUFFER_LIMIT, f"{what}: meshd holds {held} bytes, more than buffer_limit_bytes {BUFFER_LIMIT}"
    assert rss - rss0 <= RSS_GROWTH_LIMIT_KIB, (
        f"{what}: meshd VmRSS grew from {rss0} KiB to {rss} KiB (limit +{RSS_GROWTH_LIMIT_KIB} KiB)"
    )
    assert hwm - rss0 <= RSS_GROWTH_LIMIT_KIB, (
        f"{what}: meshd VmHWM {hwm} KiB is more than {RSS_GROWTH_LIMIT_KIB} KiB over the "
        f"VmRSS {rss0} KiB before the transfer"
    )


def baseline_rss(m):
    m.stats()  # the admin path's first allocations happen before the baseline
    return m.memory_kib()[0]


@pytest.mark.parametrize("disable_splice", SPLICE)
def test_slow_downstream_reader(meshd, backends, disable_splice):
    src = backends.source(SIZE, seed=31, chunk=CHUNK)
    m = meshd("tcp_basic", upstream_port=src.port, disable_splice=disable_splice)
    rss0 = baseline_rss(m)

    s = connect(m.listen_port, timeout=60)
    with s:
        # The client reads nothing: the source must end up blocked.
        stalled = wait_stalled(
            lambda: src.progress, quiet=STALL_QUIET, timeout=60, what="the upstream source's sends to block"
        )
        assert src.accepted == 1
        assert stalled < SIZE, f"the source sent all {SIZE} bytes while the client read nothing"
        st = m.stats()
        rx = st.get("meshd_cluster_upstream_rx_bytes_total", cluster="app")
        tx = st.get("meshd_listener_downstream_tx_bytes_total", listener="in")
        print(f"source blocked after {stalled} bytes; meshd read {rx}, wrote {tx}")
        check_bounded(m, rss0, rx - tx, "source blocked")

        n, digest, _ = recv_to_eof(s)
    assert n == SIZE, f"client got {n} of {SIZE} bytes"
    assert digest == det_digest(SIZE, seed=31)
    res = src.next_result()
    assert res == {"sent_sha256": det_digest(SIZE, seed=31), "sent_bytes": SIZE}
    check_bounded(m, rss0, 0, "after the transfer")


@pytest.mark.parametrize("disable_splice", SPLICE)
def test_slow_upstream_reader(meshd, backends, disable_splice):
    sink = backends.sink(reply="digest", hold=True)
    m = meshd("tcp_basic", upstream_port=sink.port, disable_splice=disable_splice)
    rss0 = baseline_rss(m)

    s = connect(m.listen_port, timeout=60)
    with s:
        snd = BackgroundSender(s, det_chunks(SIZE, seed=32, chunk=CHUNK), shut_wr=True).start()
        try:
            wait_until(lambda: sink.holding == 1, timeout=10, what="the upstream connection, held unread")
            stalled = wait_stalled(
                lambda: snd.progress, quiet=STALL_QUIET, timeout=60, what="the client's sends to block"
            )
            assert stalled < SIZE, f"the client sent all {SIZE} bytes while the upstream read nothing"
            st = m.stats()
            rx = st.get("meshd_listener_downstream_rx_bytes_total", listener="in")
            tx = st.get("meshd_cluster_upstream_tx_bytes_total", cluster="app")
            print(f"client blocked after {stalled} bytes; meshd read {rx}, wrote {tx}")
            check_bounded(m, rss0, rx - tx, "client blocked")
        finally:
            sink.release()
        sent, digest = snd.join(timeout=120)
        _, _, reply = recv_to_eof(s, keep=True, limit=4096)
    assert sent == SIZE
    assert digest == det_digest(SIZE, seed=32)
    assert reply == f"{digest} {SIZE}\n".encode(), f"sink reported {reply!r}"
    assert sink.next_result() == {"sha256": digest, "bytes": SIZE}
    check_bounded(m, rss0, 0, "after the transfer")
