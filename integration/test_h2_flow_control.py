# SPDX-License-Identifier: Apache-2.0
"""End-to-end flow control and bounded memory (README "HTTP/2 and gRPC
behaviour", Flow control): meshd acknowledges DATA to one side only when the
other side has taken it, so it holds at most one stream window (256 KiB by
default) per stream and direction. A reader that stops reading stalls its
writer through meshd, meshd's resident memory stays flat, and once the
reader goes on every byte arrives intact.

Both directions, with a large body streamed by env.h2_backend (generated as
it is sent, checked by sha256):
  download: the client stops reading the socket after the response headers;
  upload:   the upstream stops acknowledging the request body (ack_wait)."""
import pytest

from env.clients import H2MultiClient, h2_get, wait_stalled
from env.h2_backend import DetSource, det_body_sha256

pytestmark = pytest.mark.proxy_only

MIB = 1024 * 1024
SIZE = 256 * MIB
STREAM_WINDOW = 256 * 1024  # meshd's default initial_stream_window
H2_DEFAULT_WINDOW = 65535  # the peers' (python3-h2) initial stream window
RSS_SLACK_KIB = 32 * 1024
HANG_GUARD = 20.0
TRANSFER_GUARD = 180.0  # the transfer itself takes seconds


def _warm(m):
    """One request first: the pool's connection and buffers exist before
    the baseline is taken."""
    r = h2_get(m.listen_port, "/warm?size=1000000", timeout=HANG_GUARD)
    assert r.status == 200 and len(r.data) == 1000000


def _sanitized(m):
    """An ASan build keeps freed memory in its quarantine (256 MiB by
    default): after a long transfer its RSS measures the quarantine, not
    what meshd holds."""
    with open(m.meshd_bin, "rb") as f:
        return b"__asan_init" in f.read()


def _assert_rss_bounded(m, rss0, when, peak=False):
    """VmRSS now (peak=False) or VmHWM, the peak since meshd started
    (peak=True: bounded all along), at most RSS_SLACK_KIB above rss0."""
    rss, hwm = m.memory_kib()
    print(f"{when}: VmRSS {rss} KiB, VmHWM {hwm} KiB (baseline VmRSS {rss0} KiB)")
    val, what = (hwm, "VmHWM") if peak else (rss, "VmRSS")
    assert val - rss0 <= RSS_SLACK_KIB, f"{when}: meshd's {what} is {val - rss0} KiB over the baseline (limit {RSS_SLACK_KIB} KiB)"


def _assert_peak_bounded(m, rss0, when):
    if _sanitized(m):
        print(f"{when}: ASan build, peak memory not checked (quarantine)")
        return
    _assert_rss_bounded(m, rss0, when, peak=True)


def test_download_to_a_reader_that_stops_stalls_the_upstream(h2_limits):
    b, m = h2_limits()
    _warm(m)
    rss0, hwm0 = m.memory_kib()
    rss0 = max(rss0, hwm0)
    with H2MultiClient(m.listen_port, timeout=HANG_GUARD, keep_data=False) as c:
        sid = c.start([(":method", "GET"), (":scheme", "http"), (":path", f"/big?size={SIZE}"),
                       (":authority", "localhost")])
        r = c.responses[sid]
        c.wait(lambda: r.headers is not None, HANG_GUARD, what="the response headers")
        assert r.status == 200 and int(r.header("content-length")) == SIZE, r
        read_so_far = r.length  # read and acknowledged: the client's window grew by this much
        # From here on the client reads nothing: its stream window closes.
        rec = b.streams_for("/big")[0]
        sent = wait_stalled(lambda: rec["tx_bytes"], quiet=1.0, timeout=60.0, what="the upstream's sending")
        bound = H2_DEFAULT_WINDOW + read_so_far + STREAM_WINDOW
        print(f"upstream stalled after {sent} bytes (client read {read_so_far}; bound {bound})")
        assert sent <= bound, (
            f"the upstream sent {sent} bytes to a client that stopped reading: more than the client's window "
            f"({H2_DEFAULT_WINDOW} + {read_so_far}) plus one meshd stream window ({STREAM_WINDOW})"
        )
        _assert_rss_bounded(m, rss0, "download stalled")
        # The client reads again: everything arrives, intact.
        c.wait(lambda: c.done(sid), TRANSFER_GUARD, what=f"the {SIZE} byte response")
        assert r.ended and r.reset is None, r
        assert r.length == SIZE and r.sha256() == det_body_sha256(SIZE), f"{r.length} bytes, sha256 mismatch"
    _assert_peak_bounded(m, rss0, "download done")
    assert rec["state"] == "answered"


def test_upload_to_an_upstream_that_stops_reading_stalls_the_client(h2_limits):
    b, m = h2_limits()
    _warm(m)
    rss0, hwm0 = m.memory_kib()
    rss0 = max(rss0, hwm0)
    with H2MultiClient(m.listen_port, timeout=HANG_GUARD) as c:
        hdrs = [(":method", "POST"), (":scheme", "http"), (":path", "/up?ack_wait=take&sink=1"),
                (":authority", "localhost")]
        sid = c.start(hdrs, body=DetSource(SIZE))
        r = c.responses[sid]
        c.wait(lambda: b.streams_for("/up"), HANG_GUARD, what="the upload at the upstream")
        rec = b.streams_for("/up")[0]

        def client_sent():
            c.pump(0.05)  # reads meshd's WINDOW_UPDATEs, sends what they allow
            return c.body_sent[sid]

        sent = wait_stalled(client_sent, quiet=1.0, timeout=60.0, what="the client's sending")
        upstream_got = rec["rx_bytes"]
        print(f"client stalled after {sent} bytes; the upstream took {upstream_got}")
        assert upstream_got <= H2_DEFAULT_WINDOW, f"the upstream got {upstream_got} bytes past its window"
        assert sent <= upstream_got + STREAM_WINDOW, (
            f"the client could send {sent} bytes: more than what the upstream took ({upstream_got}) plus one "
            f"meshd stream window ({STREAM_WINDOW})"
        )
        assert r.headers is None and not c.done(sid)
        _assert_rss_bounded(m, rss0, "upload stalled")
        # The upstream reads again: the whole body arrives, intact.
        b.release("take")
        c.wait(lambda: c.done(sid), TRANSFER_GUARD, what=f"the {SIZE} byte upload's response")
        assert r.status == 200 and r.ended, r
        assert c.body_sent[sid] == SIZE
        assert r.header("x-body-sha256") == det_body_sha256(SIZE), "the upstream received different bytes"
    assert b.requests_for("/up")[0]["body_len"] == SIZE
    _assert_peak_bounded(m, rss0, "upload done")
