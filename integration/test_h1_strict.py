# SPDX-License-Identifier: Apache-2.0
"""Malformed and oversized HTTP/1.1 requests, sent as raw bytes: each gets
the right status (400 / 414 / 431; 501 for a transfer coding meshd does
not implement, 505 for an HTTP version other than 1.0 and 1.1) with
Connection: close and a reason in
the body, then the connection closes; whatever was smuggled behind it never
reaches the upstream; meshd goes on serving (a normal request on a new
connection works); and the gauges come back to zero.

Bare LF: RFC 9112 §2.2 lets a recipient accept a bare LF ending the request
line or a header line, so only the chunked framing (§7.1: CRLF, no
exception) is a "forbidden" place here.

meshd has no counter for HTTP/1 requests refused while parsing; the one
specific counter that applies, meshd_listener_http_rq_header_too_large_total
(431), is checked below."""
import pytest

from env.clients import wait_until
from env.h1 import HANG_GUARD, H1Conn, h1_service, request_bytes  # noqa: F401 - fixture
from env.h2_backend import KNOWN_BODY

pytestmark = pytest.mark.proxy_only

SMUGGLED = b"GET /plain/smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
CHUNKED_POST = b"POST /plain/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"



# (id, request bytes, expected status, marks)
CASES = [
    ("cl-and-te", b"POST /plain/x HTTP/1.1\r\nHost: a\r\nContent-Length: 48\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n" + SMUGGLED, 400, ()),
    ("te-and-cl", b"POST /plain/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
     b"0\r\n\r\n" + SMUGGLED, 400, ()),
    ("te-chunked-and-cl-0", b"POST /plain/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n"
     b"2e\r\n" + SMUGGLED + b"\r\n0\r\n\r\n", 400, ()),
    ("two-differing-cl", b"POST /plain/x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 45\r\n\r\n"
     + SMUGGLED, 400, ()),
    ("cl-list", b"POST /plain/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 45\r\n\r\nhello" + SMUGGLED, 400, ()),
    ("cl-plus-sign", b"POST /plain/x HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello", 400, ()),
    ("te-not-chunked-last", b"POST /plain/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"
     b"0\r\n\r\n" + SMUGGLED, 400, ()),
    ("te-gzip", b"POST /plain/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nhello", 400, ()),
    ("te-chunked-twice", b"POST /plain/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"
     b"0\r\n\r\n", 400, ()),
    ("te-space-before-colon", b"POST /plain/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n"
     b"0\r\n\r\n" + SMUGGLED, 400, ()),
    ("invalid-chunk-size", CHUNKED_POST + b"zz\r\nhello\r\n0\r\n\r\n" + SMUGGLED, 400, ()),
    ("negative-chunk-size", CHUNKED_POST + b"-5\r\nhello\r\n0\r\n\r\n", 400, ()),
    ("chunk-size-overflow", CHUNKED_POST + b"10000000000000005\r\nhello\r\n0\r\n\r\n" + SMUGGLED, 400, ()),
    ("chunk-data-without-crlf", CHUNKED_POST + b"5\r\nhelloXX0\r\n\r\n", 400, ()),
    ("obs-fold", b"GET /plain/x HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n b\r\n\r\n", 400, ()),
    ("obs-fold-tab", b"GET /plain/x HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n\tb\r\n\r\n", 400, ()),
    ("ws-before-first-field", b"GET /plain/x HTTP/1.1\r\n X-A: b\r\nHost: a\r\n\r\n", 400, ()),
    ("ws-before-colon-host", b"GET /plain/x HTTP/1.1\r\nHost : a\r\n\r\n", 400, ()),
    ("ws-before-colon-other", b"GET /plain/x HTTP/1.1\r\nHost: a\r\nX-Foo : bar\r\n\r\n", 400, ()),
    ("bare-lf-in-header-line", b"GET /plain/x HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n", 400, ()),
    ("bare-lf-chunk-size-line", CHUNKED_POST + b"5\nhello\r\n0\r\n\r\n", 400, ()),
    ("bare-lf-after-chunk-data", CHUNKED_POST + b"5\r\nhello\n0\r\n\r\n", 400, ()),
    ("bare-lf-last-chunk", CHUNKED_POST + b"5\r\nhello\r\n0\n\n", 400, ()),
    ("bare-cr-in-value", b"GET /plain/x HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n", 400, ()),
    ("nul-in-value", b"GET /plain/x HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n", 400, ()),
    ("uri-over-8kib", b"GET /plain/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414, ()),
    ("uri-8192", b"GET /plain/" + b"a" * (8192 - 7) + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414, ()),
    ("header-section-over-64kib", b"GET /plain/x HTTP/1.1\r\nHost: a\r\n"
     + b"".join(b"X-Big-%d: %s\r\n" % (i, b"v" * 8200) for i in range(8)) + b"\r\n", 431, ()),
    ("header-section-256kib", b"GET /plain/x HTTP/1.1\r\nHost: a\r\n"
     + b"".join(b"X-Big-%d: %s\r\n" % (i, b"v" * 8000) for i in range(32)) + b"\r\n", 431, ()),
    ("101-header-fields", b"GET /plain/x HTTP/1.1\r\nHost: a\r\n"
     + b"".join(b"X-F%d: v\r\n" % i for i in range(100)) + b"\r\n", 431, ()),
    ("absolute-form", b"GET http://a/plain/x HTTP/1.1\r\nHost: a\r\n\r\n", 400, ()),
    ("absolute-form-other-host", b"GET http://evil.example/plain/smuggled HTTP/1.1\r\nHost: a\r\n\r\n", 400, ()),
    ("authority-form-connect", b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 400, ()),
    ("garbage", b"\x00\x01garbage \xff\xfe\r\n\r\n", 400, ()),
    ("tls-client-hello", bytes.fromhex("16030100a5010000a10303") + b"\x00" * 64, 400, ()),
    ("lower-case-method", b"get /plain/x HTTP/1.1\r\nHost: a\r\n\r\n", 400, ()),
    ("space-before-request-line", b" GET /plain/x HTTP/1.1\r\nHost: a\r\n\r\n", 400, ()),
    ("no-host", b"GET /plain/x HTTP/1.1\r\nX-A: b\r\n\r\n", 400, ()),
    ("two-hosts", b"GET /plain/x HTTP/1.1\r\nHost: a\r\nHost: evil.example\r\n\r\n", 400, ()),
    ("te-on-http10", b"POST /plain/x HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
     400, ()),
    # RFC 9112 §6.3: chunked not the last coding (or absent): 400.
    ("te-identity", b"DELETE /plain/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n" + SMUGGLED, 400, ()),
    ("te-unknown", b"DELETE /plain/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: x-made-up\r\n\r\n" + SMUGGLED, 400, ()),
    ("te-empty", b"POST /plain/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n0\r\n\r\n" + SMUGGLED, 400, ()),
    ("te-chunked-with-parameter", b"POST /plain/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;q=1\r\n\r\n"
     b"0\r\n\r\n" + SMUGGLED, 400, ()),
    ("te-on-http10-gzip", b"POST /plain/x HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nhello", 400, ()),
    # RFC 9112 §6.1: a coding meshd does not implement, chunked last: 501.
    ("te-gzip-chunked", b"POST /plain/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
     b"5\r\nhello\r\n0\r\n\r\n" + SMUGGLED, 501, ()),
    ("te-identity-chunked", b"POST /plain/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity, chunked\r\n\r\n"
     b"5\r\nhello\r\n0\r\n\r\n" + SMUGGLED, 501, ()),
    ("te-unknown-chunked-two-fields", b"POST /plain/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: X-Made-Up\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + SMUGGLED, 501, ()),
    # RFC 9112 §3: one SP between the parts of the request line.
    ("two-spaces-after-method", b"GET  /plain/x HTTP/1.1\r\nHost: a\r\n\r\n", 400, ()),
    ("two-spaces-before-version", b"GET /plain/x  HTTP/1.1\r\nHost: a\r\n\r\n", 400, ()),
    # RFC 9112 §3.2: origin-form has no fragment.
    ("fragment", b"GET /plain/x#frag HTTP/1.1\r\nHost: a\r\n\r\n", 400, ()),
    ("fragment-after-query", b"GET /plain/x?a=1#frag HTTP/1.1\r\nHost: a\r\n\r\n", 400, ()),
    # HTTP/1.0 and 1.1 only (RFC 9110 §15.6.6: 505).
    ("version-2.0", b"GET /plain/x HTTP/2.0\r\nHost: a\r\n\r\n", 505, ()),
    ("version-0.9", b"GET /plain/x HTTP/0.9\r\nHost: a\r\n\r\n", 505, ()),
    ("version-1.2", b"GET /plain/x HTTP/1.2\r\nHost: a\r\n\r\n", 505, ()),
    ("version-3.0", b"GET /plain/x HTTP/3.0\r\nHost: a\r\n\r\n", 505, ()),
    ("h2-preface-on-http1", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, ()),
]


def _send_tolerant(c, data):
    """meshd may close while a big request is still being sent."""
    try:
        c.send(data)
    except (BrokenPipeError, ConnectionResetError):
        pass


def _refused(port, data, status):
    with H1Conn(port) as c:
        _send_tolerant(c, data)
        r = c.read_response()
        assert r.status == status, f"expected {status}, got {r!r}"
        assert r.closes, f"no Connection: close on a refusal: {r!r}"
        assert r.body and r.header("x-backend") is None, r
        # The connection ends (a reset is possible when the request had
        # bytes meshd did not read).
        assert c.expect_closed() in ("eof", "rst")
    return r


@pytest.mark.parametrize("data,status", [pytest.param(d, s, marks=m, id=i) for i, d, s, m in CASES])
def test_refused_then_closed(h1_service, data, status):
    svc = h1_service()
    _refused(svc.port, data, status)
    # meshd goes on serving.
    with H1Conn(svc.port) as c:
        c.send(request_bytes("GET", "/plain/after"))
        r = c.read_response()
        assert r.status == 200 and r.body == KNOWN_BODY, r
    wait_until(lambda: [q for q in svc.upstream.requests if q["path"] == "/plain/after"], timeout=HANG_GUARD,
               what="the follow-up request upstream")
    paths = [q["path"] for q in svc.upstream.requests]
    assert "/plain/smuggled" not in paths, f"a smuggled request reached the upstream: {paths}"
    assert paths[-1] == "/plain/after" and "/plain/x" not in paths, f"the refused request was forwarded: {paths}"


def test_limits_are_not_refused_below_them(h1_service):
    """Just below each limit the request is served: an 8191-byte target, 100
    header fields, a 60 KiB header section."""
    svc = h1_service()
    target = "/plain/" + "a" * (8191 - 7)
    fields = [f"X-F{i}: v" for i in range(99)]  # + Host = 100
    big = [f"X-Big-{i}: {'v' * 7600}" for i in range(8)]  # ~60 KiB
    with H1Conn(svc.port) as c:
        for req, what in ((request_bytes("GET", target), "8191-byte target"),
                          (request_bytes("GET", "/plain/fields", headers=fields), "100 fields"),
                          (request_bytes("GET", "/plain/big-headers", headers=big), "60 KiB of fields")):
            c.send(req)
            r = c.read_response()
            assert r.status == 200, f"{what}: {r!r}"


def test_bare_lf_in_request_line_and_header_section(h1_service):
    """RFC 9112 §2.2 lets a recipient accept a bare LF ending the request
    line; meshd (llhttp 8.1) accepts it there and at the end of the header
    section, and refuses it ending a header field line (the case in the
    table above). Whatever it does, the request is answered once, in one
    piece, and nothing is smuggled."""
    svc = h1_service()
    for wire in (b"GET /plain/lf1 HTTP/1.1\nHost: a\r\n\r\n" + SMUGGLED,
                 b"GET /plain/lf2 HTTP/1.1\r\nHost: a\r\n\n" + SMUGGLED):
        with H1Conn(svc.port) as c:
            c.send(wire)
            r = c.read_response()
            assert r.status in (200, 400), r
            if r.status == 200:
                # then the smuggled-looking request is just the next request
                assert c.read_response().status == 200
            c.abort()


def test_gauges_back_to_zero_after_refusals(h1_service):
    svc = h1_service()
    for _, data, status, marks in CASES:
        if not marks:
            _refused(svc.port, data, status)
    # A client that goes away in the middle of a request, too.
    with H1Conn(svc.port) as c:
        c.send(b"POST /plain/x HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nhalf")
    wait_until(lambda: svc.stat("meshd_listener_downstream_cx_active") == 0, timeout=HANG_GUARD,
               what="downstream_cx_active back to 0")
    assert svc.stat("meshd_listener_http_rq_active") == 0


def test_431_is_counted(h1_service):
    svc = h1_service()
    before = svc.stat("meshd_listener_http_rq_header_too_large_total")
    data = dict((i, d) for i, d, _, _ in CASES)["header-section-over-64kib"]
    _refused(svc.port, data, 431)
    assert svc.stat("meshd_listener_http_rq_header_too_large_total") - before == 1
