# SPDX-License-Identifier: Apache-2.0
"""Backpressure across the HTTP/1.1 <-> HTTP/2 boundary: meshd holds a
bounded amount per direction and passes a stall on.
  - download: a client asks for a 256 MiB streamed response and does not
    read: the upstream is held back by HTTP/2 flow control (it stops far
    short of 256 MiB), meshd's RSS stays within a generous bound, meshd
    keeps serving others; then the client reads it all, sha256 intact;
  - upload: the upstream stops reading (it takes no more DATA without
    acknowledging it): meshd stops reading the client, whose sends stall;
    once the upstream reads again, the 256 MiB body arrives whole.
The stalls are observed by polling byte counters until they stop moving
(env.clients.wait_stalled), never by sleeping."""
import socket

import pytest

from env.clients import BackgroundSender, wait_stalled, wait_until
from env.h1 import HANG_GUARD, H1Conn, h1_service, request_bytes  # noqa: F401 - fixture
from env.h2_backend import KNOWN_BODY, DetSource, det_body_sha256

pytestmark = pytest.mark.proxy_only

MIB = 1024 * 1024
TOTAL = 256 * MIB
RSS_BOUND_KIB = 32 * 1024  # meshd's growth while a transfer is stalled: generous
STALL_QUIET = 1.0  # seconds without progress that count as stalled
IO_GUARD = 120.0  # hang guard for moving 256 MiB (ASan build included)


def _warm_up(svc):
    """One exchange each way, so pools, buffers and arenas exist before the
    baseline is taken."""
    with H1Conn(svc.port) as c:
        c.send(request_bytes("POST", "/plain/warm", body=b"w" * 300_000))
        assert c.read_response().status == 200
        c.send(request_bytes("GET", f"/plain/warm2?size={4 * MIB}&chunked=1"))
        assert c.read_response(keep=False).length == 4 * MIB


def _sanitized(meshd):
    """True for a meshd built with AddressSanitizer."""
    with open(meshd.meshd_bin, "rb") as f:
        return b"__asan_init" in f.read()


def _still_serving(svc):
    with H1Conn(svc.port) as c:
        c.send(request_bytes("GET", "/plain/meanwhile"))
        r = c.read_response()
        assert r.status == 200 and r.body == KNOWN_BODY, r


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
def test_slow_reader_download(h1_service, chunked):
    svc = h1_service(concurrency=1)
    _warm_up(svc)
    base_rss, _ = svc.meshd.memory_kib()
    q = "&chunked=1" if chunked else ""
    c = H1Conn(svc.port, timeout=IO_GUARD)
    try:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
        c.send(request_bytes("GET", f"/plain/big?size={TOTAL}{q}"))
        live = wait_until(lambda: svc.upstream.streams_for("/plain/big"), timeout=HANG_GUARD,
                          what="the stream at the upstream")[0]
        sent = wait_stalled(lambda: live["tx_bytes"], quiet=STALL_QUIET, timeout=60,
                            what="the upstream's sending (the client reads nothing)")
        assert sent < 32 * MIB, f"the upstream sent {sent} bytes to a client that reads nothing"
        rss, _ = svc.meshd.memory_kib()
        assert rss - base_rss < RSS_BOUND_KIB, f"meshd grew by {rss - base_rss} KiB holding a stalled response"
        _still_serving(svc)
        assert live["tx_bytes"] == sent, "still moving: not a stall"
        r = c.read_response(keep=False, timeout=IO_GUARD)
    finally:
        c.close()
    assert r.status == 200 and r.framing == ("chunked" if chunked else "length"), r
    assert (r.length, r.sha256) == (TOTAL, det_body_sha256(TOTAL)), "the body changed"
    if not _sanitized(svc.meshd):  # ASan keeps freed memory in quarantine (256 MiB)
        rss, _ = svc.meshd.memory_kib()
        assert rss - base_rss < RSS_BOUND_KIB, f"meshd grew by {rss - base_rss} KiB after a 256 MiB response"


def _body_chunks(n, head):
    yield head
    src = DetSource(n)
    for _ in range(n // 65536 + 2):
        if not len(src):
            break
        yield src.take(65536)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_upstream_stops_reading_upload(h1_service, chunked):
    svc = h1_service(concurrency=1)
    _warm_up(svc)
    base_rss, _ = svc.meshd.memory_kib()
    path = "/plain/up?sink=1&ack_wait=up"
    if chunked:
        head = request_bytes("POST", path, headers=["Transfer-Encoding: chunked"])
        chunks = (b"%x\r\n%s\r\n" % (len(b), b) for b in _body_chunks(TOTAL, b"") if b)
        chunks = _chain([head], chunks, [b"0\r\n\r\n"])
    else:
        chunks = _body_chunks(TOTAL, request_bytes("POST", path, headers=[f"Content-Length: {TOTAL}"]))
    c = H1Conn(svc.port, timeout=IO_GUARD)
    sender = BackgroundSender(c.sock, chunks, shut_wr=False).start()
    try:
        live = wait_until(lambda: svc.upstream.streams_for("/plain/up"), timeout=HANG_GUARD,
                          what="the stream at the upstream")[0]
        sent = wait_stalled(lambda: sender.progress, quiet=STALL_QUIET, timeout=60,
                            what="the client's sending (the upstream reads nothing)")
        assert sent < 32 * MIB, f"the client could send {sent} bytes to an upstream that reads nothing"
        assert live["rx_bytes"] < 2 * MIB, f"the upstream got {live['rx_bytes']} bytes past its window"
        rss, _ = svc.meshd.memory_kib()
        assert rss - base_rss < RSS_BOUND_KIB, f"meshd grew by {rss - base_rss} KiB holding a stalled upload"
        _still_serving(svc)
        assert sender.progress == sent, "still moving: not a stall"
        svc.upstream.release("up")
        sender.join(timeout=IO_GUARD)
        r = c.read_response(timeout=IO_GUARD)
    finally:
        c.close()
    assert r.status == 200, r
    want = det_body_sha256(TOTAL)
    assert r.header("x-body-sha256") == want, "the upstream got other bytes"
    rec = [q for q in svc.upstream.requests if q["path"] == path][0]
    assert (rec["body_len"], rec["body_sha256"]) == (TOTAL, want)


def _chain(*its):
    for it in its:
        yield from it
