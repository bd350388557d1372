# SPDX-License-Identifier: Apache-2.0
"""Request and response bodies over HTTP/1.1 through meshd, checked by
sha256 at the far end:
  - a 100 MiB chunked upload (curl) and Content-Length uploads (curl, raw
    with odd chunk sizes and chunk extensions);
  - a response of unknown length (the upstream sends no content-length)
    arrives chunked and intact; a 64 MiB download;
  - Expect: 100-continue is answered with 100 before the body is sent (raw
    socket: the body is only sent once the 100 arrived; curl: it is told to
    wait 60 s for the 100 and finishes well inside its --max-time);
  - upstream trailers become a chunked trailer section;
  - an HTTP/1.0 client never gets chunked coding."""
import hashlib
import random

import pytest

from env.clients import wait_until
from env.curl import curl_h1
from env.h1 import HANG_GUARD, H1Conn, chunked, file_sha256, h1_service, request_bytes  # noqa: F401
from env.h2_backend import KNOWN_BODY, det_body, det_body_sha256

pytestmark = pytest.mark.proxy_only

MIB = 1024 * 1024


def _rec(up, path):
    recs = wait_until(lambda: [r for r in up.requests if r["path"] == path], timeout=HANG_GUARD,
                      what=f"{path} at the upstream")
    assert len(recs) == 1, recs
    return recs[0]


def _random_file(path, nbytes, seed):
    """nbytes of seeded random data (no period to hide a reordering);
    returns its sha256."""
    rnd = random.Random(seed)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = nbytes
        for _ in range(nbytes // MIB + 2):
            if left <= 0:
                break
            b = rnd.randbytes(min(MIB, left))
            f.write(b)
            h.update(b)
            left -= len(b)
    return h.hexdigest()


# -- uploads -----------------------------------------------------------------------------


def test_chunked_upload_100mib(h1_service, workdir):
    svc = h1_service()
    f = workdir / "up100.bin"
    sha = _random_file(f, 100 * MIB, seed=100)
    r = curl_h1(svc.port, "/plain/up100?sink=1", workdir, data_file=f,
                headers=["Transfer-Encoding: chunked", "Content-Type: application/octet-stream"], max_time=120)
    assert r.rc == 0 and r.transfers[0]["http_code"] == 200, r
    assert r.transfers[0]["size_upload"] > 100 * MIB, r  # chunk framing included
    rec = _rec(svc.upstream, "/plain/up100?sink=1")
    assert rec["body_len"] == 100 * MIB, "the upstream got another length"
    assert rec["body_sha256"] == sha, "the upstream got other bytes"
    assert dict(r.final_blocks()[0][1])["x-body-sha256"] == sha
    names = {k for k, _ in rec["headers"]}
    assert not names & {"transfer-encoding", "expect", "content-length", "host"}, rec["headers"]
    f.unlink()


def test_content_length_upload_curl(h1_service, workdir):
    svc = h1_service()
    f = workdir / "up8.bin"
    sha = _random_file(f, 8 * MIB + 3, seed=8)
    r = curl_h1(svc.port, "/plain/up8", workdir, data_file=f)
    assert r.rc == 0 and r.transfers[0]["http_code"] == 200, r
    rec = _rec(svc.upstream, "/plain/up8")
    assert (rec["body_len"], rec["body_sha256"]) == (8 * MIB + 3, sha)
    assert file_sha256(r.bodies[0]) == (8 * MIB + 3, sha), "the echo changed on the way back"


@pytest.mark.parametrize("framing", ["length", "chunked", "chunked-ext"])
def test_upload_raw(h1_service, framing):
    """A body sent in uneven pieces (so meshd sees partial chunk lines), with
    chunk sizes 1, 7, 1000, 65536 and, for chunked-ext, chunk extensions."""
    svc = h1_service()
    data = random.Random(3).randbytes(2 * MIB + 11)
    if framing == "length":
        wire = request_bytes("POST", "/plain/raw-up", body=data)
    else:
        body = chunked(data, sizes=(1, 7, 1000, 65536))
        if framing == "chunked-ext":
            body = body.replace(b"\r\n", b';name="v";x\r\n', 1)  # the first size line
        wire = request_bytes("POST", "/plain/raw-up", headers=["Transfer-Encoding: chunked"]) + body
    with H1Conn(svc.port) as c:
        for i in range(0, len(wire), 9973):
            c.send(wire[i : i + 9973])
        r = c.read_response()
    assert r.status == 200, r
    assert r.body == data, "the echoed body changed"
    rec = _rec(svc.upstream, "/plain/raw-up")
    assert rec["body_sha256"] == hashlib.sha256(data).hexdigest()


# -- downloads ---------------------------------------------------------------------------


def test_response_of_unknown_length_is_chunked(h1_service, workdir):
    svc = h1_service()
    n = 5 * MIB + 7
    with H1Conn(svc.port) as c:
        c.send(request_bytes("GET", f"/plain/unk?size={n}&chunked=1"))
        r = c.read_response(keep=False)
        assert r.framing == "chunked", f"no content-length upstream: expected chunked, got {r!r}"
        assert (r.length, r.sha256) == (n, det_body_sha256(n))
        assert len(r.chunk_sizes) > 2, "one chunk only: not streamed"
        # Known length: Content-Length framing, on the same connection.
        c.send(request_bytes("GET", "/plain/known?size=1000"))
        k = c.read_response()
        assert k.framing == "length" and k.body == det_body(1000), k
    r = curl_h1(svc.port, f"/plain/unk-curl?size={n}&chunked=1", workdir)
    assert r.rc == 0 and r.transfers[0]["http_code"] == 200, r
    assert dict(r.final_blocks()[0][1]).get("transfer-encoding") == "chunked", r
    assert file_sha256(r.bodies[0]) == (n, det_body_sha256(n))


@pytest.mark.parametrize("chunked_resp", [False, True], ids=["content-length", "chunked"])
def test_large_download_64mib(h1_service, workdir, chunked_resp):
    svc = h1_service()
    n = 64 * MIB
    q = "&chunked=1" if chunked_resp else ""
    r = curl_h1(svc.port, f"/plain/big?size={n}{q}", workdir, max_time=120)
    assert r.rc == 0 and r.transfers[0]["http_code"] == 200, r
    assert file_sha256(r.bodies[0]) == (n, det_body_sha256(n))
    r.bodies[0].unlink()


def test_empty_bodies(h1_service):
    svc = h1_service()
    with H1Conn(svc.port) as c:
        c.send(request_bytes("POST", "/plain/e1", body=b""))
        r = c.read_response()
        assert r.status == 200 and r.body == b"" and r.header("content-length") == "0", r
        c.send(request_bytes("POST", "/plain/e2", headers=["Transfer-Encoding: chunked"]) + b"0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.body == b"", r
        c.send(request_bytes("GET", "/plain/e3?size=0&chunked=1"))
        r = c.read_response()
        assert r.status == 200 and r.body == b"", r
    assert _rec(svc.upstream, "/plain/e2")["body_len"] == 0


# -- Expect: 100-continue ----------------------------------------------------------------


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_expect_100_continue_raw(h1_service, framing):
    """The 100 must come before any body byte is sent: this client waits
    for it (hang guard only), then sends the body."""
    svc = h1_service()
    data = random.Random(5).randbytes(300 * 1024)
    hdrs = ["Expect: 100-continue"]
    hdrs.append(f"Content-Length: {len(data)}" if framing == "length" else "Transfer-Encoding: chunked")
    with H1Conn(svc.port) as c:
        c.send(request_bytes("POST", "/plain/expect", headers=hdrs))
        version, status, reason, headers, raw = c.read_head()
        assert status == 100, f"expected 100 Continue before the body, got {raw!r}"
        assert raw == b"HTTP/1.1 100 Continue\r\n\r\n", raw
        c.send(data if framing == "length" else chunked(data))
        r = c.read_response()
        assert r.status == 200 and r.body == data, r
        assert r.informational == [], "a second 100"
    rec = _rec(svc.upstream, "/plain/expect")
    assert rec["body_sha256"] == hashlib.sha256(data).hexdigest()
    assert "expect" not in {k for k, _ in rec["headers"]}, rec["headers"]


def test_expect_100_continue_curl(h1_service, workdir):
    """curl waits up to --expect100-timeout for the 100 before sending the
    body: 60 s here, against --max-time 30; it succeeds only if meshd sent
    the 100 (and the 100 shows in its header dump)."""
    svc = h1_service()
    f = workdir / "expect.bin"
    sha = _random_file(f, 2 * MIB, seed=9)
    r = curl_h1(svc.port, "/plain/expect-curl?sink=1", workdir, data_file=f, max_time=30,
                extra=["--expect100-timeout", "60", "-H", "Expect: 100-continue"])
    assert r.rc == 0, f"curl did not finish (was the 100 Continue sent?): {r!r}"
    assert [b[0].split()[1] for b in r.blocks] == ["100", "200"], r.blocks
    assert _rec(svc.upstream, "/plain/expect-curl?sink=1")["body_sha256"] == sha


def test_expect_on_http10_gets_no_100(h1_service):
    """RFC 9110 §10.1.1: no 100 (Continue) to an HTTP/1.0 client."""
    svc = h1_service()
    with H1Conn(svc.port) as c:
        c.send(request_bytes("POST", "/plain/e10", headers=["Expect: 100-continue"], body=b"hello", version="1.0"))
        r = c.read_response()
        assert r.status == 200 and r.body == b"hello", r
        assert r.informational == [], r


# -- trailers ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 100, 300 * 1024])
def test_upstream_trailers_become_a_chunked_trailer_section(h1_service, size):
    svc = h1_service()
    with H1Conn(svc.port) as c:
        c.send(request_bytes("GET", f"/plain/tr?size={size}&trailer=x-checksum:abc123&trailer=x-count:{size}",
                             headers=["TE: trailers"]))
        r = c.read_response()
        assert r.status == 200 and r.framing == "chunked", r
        assert r.body == det_body(size), "body changed"
        assert r.trailers == [("x-checksum", "abc123"), ("x-count", str(size))], r
        assert r.header("x-checksum") is None, "a trailer went into the header section"
        # The connection goes on after the trailer section.
        c.send(request_bytes("GET", "/plain/after-tr"))
        assert c.read_response().body == KNOWN_BODY


# -- HTTP/1.0 ------------------------------------------------------------------------------


def test_http10_client_never_gets_chunked(h1_service):
    svc = h1_service()
    with H1Conn(svc.port) as c:
        c.send(request_bytes("GET", "/plain/old?size=5000&chunked=1", version="1.0"))
        version, status, reason, headers, raw = c.read_head()
        assert status == 200, raw
        assert "transfer-encoding" not in {k for k, _ in headers}, f"chunked to an HTTP/1.0 client: {raw!r}"


def test_long_trailer_value_intact(h1_service):
    """A 3000-byte trailer value crosses whole, on its own trailer line."""
    svc = h1_service()
    value = "t" * 2990 + "0123456789"
    with H1Conn(svc.port) as c:
        c.send(request_bytes("GET", f"/plain/trl?size=10&trailer=x-long:{value}&trailer=x-after:1"))
        r = c.read_response()
    assert r.status == 200 and r.body == det_body(10), r
    assert r.trailers == [("x-long", value), ("x-after", "1")], [(k, v[-20:]) for k, v in r.trailers]


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_client_gone_mid_upload_resets_the_upstream_stream(h1_service, how):
    """The client sends half of a Content-Length body and goes away: the
    upstream stream is reset (not left waiting for the rest), and the
    connection count returns to zero."""
    svc = h1_service()
    c = H1Conn(svc.port)
    c.send(request_bytes("POST", "/plain/gone", headers=["Content-Length: 1000000"]) + b"x" * 300_000)
    live = wait_until(lambda: [s for s in svc.upstream.streams_for("/plain/gone") if s["rx_bytes"] > 0],
                      timeout=HANG_GUARD, what="the upload at the upstream")[0]
    if how == "rst":
        c.abort()
    else:
        c.close()
    wait_until(lambda: live["state"] != "open", timeout=HANG_GUARD, what="the upstream stream to end")
    assert live["state"] == "reset_by_peer", live
    wait_until(lambda: svc.stat("meshd_listener_downstream_cx_active") == 0, timeout=HANG_GUARD,
               what="downstream_cx_active back to 0")
