# SPDX-License-Identifier: Apache-2.0
"""Admin: grpc.health.v1.Health/Check over h2c on the admin port, beside
HTTP/1.1. "" follows /ready (SERVING, NOT_SERVING after POST /drain), a
listener's name reports that listener, other names are NOT_FOUND; Watch and
other methods are UNIMPLEMENTED, bad request messages INVALID_ARGUMENT. The
protobuf is encoded by hand (grpc_health is not packaged in Debian)."""
import concurrent.futures
import http.client

import grpc
import pytest

from env.clients import H2Client, grpc_channel, grpc_frame, grpc_request_headers, grpc_messages, nghttp

CHECK = "/grpc.health.v1.Health/Check"
WATCH = "/grpc.health.v1.Health/Watch"
SERVING, NOT_SERVING = 1, 2


def encode_request(service):
    """HealthCheckRequest{service = 1}; the default ("") is not encoded."""
    b = service.encode()
    if not b:
        return b""
    assert len(b) < 128
    return bytes([0x0A, len(b)]) + b


def decode_response(msg):
    """HealthCheckResponse{status = 1}: exactly one varint field, < 128."""
    assert len(msg) == 2 and msg[0] == 0x08, msg
    return msg[1]


def raw_unary(channel, path):
    return channel.unary_unary(path, request_serializer=lambda b: b, response_deserializer=lambda b: b)


def check(channel, service="", timeout=5):
    return decode_response(raw_unary(channel, CHECK)(encode_request(service), timeout=timeout))


def check_error(channel, path=CHECK, request=b"", timeout=5):
    with pytest.raises(grpc.RpcError) as ei:
        raw_unary(channel, path)(request, timeout=timeout)
    return ei.value.code()


@pytest.fixture
def started(meshd, backends):
    echo = backends.echo()
    return meshd("tcp_basic", upstream_port=echo.port)


def test_serving_then_not_serving_after_drain(started):
    m = started
    with grpc_channel(m.admin_port) as ch:
        assert check(ch) == SERVING
        assert check(ch, "in") == SERVING  # the listener's name
        status, body = m.admin_post("/drain")
        assert status == 200, body
        assert check(ch) == NOT_SERVING
        assert check(ch, "in") == NOT_SERVING
    assert m.admin_get("/ready")[0] == 503
    assert m.alive()


def test_unknown_service_is_not_found(started):
    with grpc_channel(started.admin_port) as ch:
        assert check_error(ch, request=encode_request("no.such.Service")) == grpc.StatusCode.NOT_FOUND
        assert check_error(ch, request=encode_request("app")) == grpc.StatusCode.NOT_FOUND  # a cluster
        assert check(ch) == SERVING  # the connection goes on


def test_watch_and_other_methods_are_unimplemented(started):
    with grpc_channel(started.admin_port) as ch:
        watch = ch.unary_stream(WATCH, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as ei:
            list(watch(b"", timeout=5))
        assert ei.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert check_error(ch, "/grpc.health.v1.Health/List") == grpc.StatusCode.UNIMPLEMENTED
        assert check_error(ch, "/foo.Bar/Baz") == grpc.StatusCode.UNIMPLEMENTED
        assert check(ch) == SERVING


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"\x0a\x05ab",  # truncated string
        b"\x08\x01",  # service as a varint
        b"\x0b",  # a group (not proto3)
        b"\x80",  # truncated tag
        b"\x02\x00",  # field number 0
    ],
    ids=["truncated", "wrong-wire-type", "group", "bad-tag", "field-zero"],
)
def test_malformed_request_is_invalid_argument(started, request_bytes):
    with grpc_channel(started.admin_port) as ch:
        assert check_error(ch, request=request_bytes) == grpc.StatusCode.INVALID_ARGUMENT


def test_unknown_fields_are_skipped(started):
    # field 2 varint, field 3 fixed64, field 4 bytes, field 5 fixed32, then service ""
    extra = b"\x10\x96\x01" + b"\x19" + bytes(8) + b"\x22\x02hi" + b"\x2d" + bytes(4) + b"\x0a\x00"
    with grpc_channel(started.admin_port) as ch:
        assert decode_response(raw_unary(ch, CHECK)(extra, timeout=5)) == SERVING


def test_wire_shape(started):
    """HEADERS, one DATA message, trailers grpc-status 0; errors are trailers-only."""
    with H2Client(started.admin_port) as c:
        r = c.request(grpc_request_headers(CHECK), body=grpc_frame(b""))
        assert r.events == ["headers", "data", "trailers", "end"], r
        assert r.status == 200 and r.header("content-type") == "application/grpc", r
        assert grpc_messages(bytes(r.data)) == [bytes([0x08, SERVING])]
        assert r.trailers == [("grpc-status", "0")], r

        r = c.request(grpc_request_headers(WATCH), body=grpc_frame(b""))
        assert r.trailers_only and r.grpc_status == 12, r

        r = c.request(grpc_request_headers(CHECK), body=grpc_frame(encode_request("nope")))
        assert r.trailers_only and r.grpc_status == 5, r

        r = c.request(grpc_request_headers(CHECK), body=b"")  # no message at all
        assert r.trailers_only and r.grpc_status == 3, r

        r = c.request(grpc_request_headers(CHECK), body=grpc_frame(b"", compressed=True))
        assert r.trailers_only and r.grpc_status == 3, r

        r = c.request(grpc_request_headers(CHECK), body=grpc_frame(b"") * 2)  # two messages
        assert r.trailers_only and r.grpc_status == 3, r

        # Over 4 KiB: answered at once, the rest is read and dropped.
        r = c.request(grpc_request_headers(CHECK), body=grpc_frame(b"\x0a\x7f" + b"x" * 127) * 64)
        assert r.trailers_only and r.grpc_status == 8, r

        r = c.request(grpc_request_headers(CHECK), body=grpc_frame(b""))
        assert r.trailers == [("grpc-status", "0")], r
        assert c.closed is None


def test_many_checks_share_connections(started):
    """More calls in flight than the 8 streams allowed: the client queues."""
    with grpc_channel(started.admin_port) as ch:
        with concurrent.futures.ThreadPoolExecutor(32) as ex:
            results = list(ex.map(lambda i: check(ch, "" if i % 2 else "in"), range(400)))
    assert results == [SERVING] * 400


def test_http1_and_grpc_interleaved(started):
    m = started
    h1 = http.client.HTTPConnection("127.0.0.1", m.admin_port, timeout=5)
    try:
        with grpc_channel(m.admin_port) as ch:
            for _ in range(10):
                h1.request("GET", "/ready")
                r = h1.getresponse()
                assert (r.status, r.read()) == (200, b"ready\n")
                assert check(ch) == SERVING
            h1.request("GET", "/")
            r = h1.getresponse()
            assert r.status == 200 and b"grpc.health.v1.Health/Check" in r.read()
            status, _ = m.admin_post("/drain")
            assert status == 200
            h1.request("GET", "/ready")
            r = h1.getresponse()
            assert (r.status, r.read()) == (503, b"draining\n")
            assert check(ch) == NOT_SERVING
    finally:
        h1.close()


def test_http1_byte_by_byte_still_works(started):
    """Detection waits for enough bytes: a request sent one byte at a time is
    still HTTP/1.1, and bytes that are neither protocol get HTTP/1.1's 400."""
    import socket
    import time

    with socket.create_connection(("127.0.0.1", started.admin_port), timeout=5) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for b in b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n":
            s.sendall(bytes([b]))
            time.sleep(0.002)
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
    with socket.create_connection(("127.0.0.1", started.admin_port), timeout=5) as s:
        s.sendall(b"\x16\x03\x01\x00\x10" + bytes(16))  # a TLS record
        assert s.recv(4096).startswith(b"HTTP/1.1 400")


def test_nghttp_prior_knowledge(started, workdir):
    body = workdir / "req.bin"
    body.write_bytes(grpc_frame(b""))
    r = nghttp(started.admin_port, CHECK, headers=("content-type: application/grpc", "te: trailers"),
               data_file=body)
    assert r.rc == 0, r
    assert r.status == 200, r
    hdrs = next(iter(r.streams.values()))
    assert ("grpc-status", "0") in hdrs, hdrs  # the trailers are printed as headers


def h2_frames(data):
    """(type, flags, stream_id, payload) of each whole frame in |data|."""
    out, i = [], 0
    while len(data) - i >= 9:
        n = int.from_bytes(data[i : i + 3], "big")
        if len(data) - i - 9 < n:
            break
        out.append((data[i + 3], data[i + 4], int.from_bytes(data[i + 5 : i + 9], "big") & 0x7FFFFFFF,
                    data[i + 9 : i + 9 + n]))
        i += 9 + n
    return out


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def test_protocol_error_closes_with_goaway(started):
    """Bad frames end that connection only (with GOAWAY), also with a stream
    left open; HTTP/1.1 and gRPC go on."""
    from env.clients import recv_to_eof
    import socket

    # HEADERS (stream 1, END_HEADERS, no END_STREAM; :method POST, :path /,
    # :scheme http from the HPACK static table), then a SETTINGS frame of
    # length 1: FRAME_SIZE_ERROR.
    headers = b"\x00\x00\x03\x01\x04\x00\x00\x00\x01" + bytes([0x83, 0x84, 0x86])
    bad_settings = b"\x00\x00\x01\x04\x00\x00\x00\x00\x00\x00"
    with socket.create_connection(("127.0.0.1", started.admin_port), timeout=5) as s:
        s.sendall(PREFACE + EMPTY_SETTINGS + headers + bad_settings)
        data = recv_to_eof(s, keep=True, limit=1 << 16)[2]
    goaway = [f for f in h2_frames(data) if f[0] == 7]
    assert goaway and int.from_bytes(goaway[0][3][4:8], "big") != 0, h2_frames(data)
    with grpc_channel(started.admin_port) as ch:
        assert check(ch) == SERVING
    assert started.admin_get("/ready")[0] == 200


def test_connection_limit_covers_h2(started):
    """HTTP/2 connections count against the admin's 64 like HTTP/1.1 ones."""
    import socket

    from env.clients import expect_closed, wait_until

    held = []
    try:
        for _ in range(64):
            s = socket.create_connection(("127.0.0.1", started.admin_port), timeout=5)
            held.append(s)
            s.sendall(PREFACE + EMPTY_SETTINGS)
            assert h2_frames(s.recv(4096))[0][0] == 4  # our SETTINGS: accepted
        with socket.create_connection(("127.0.0.1", started.admin_port), timeout=5) as s:
            s.sendall(PREFACE + EMPTY_SETTINGS)
            expect_closed(s)
        held.pop().close()

        def one_check():
            try:
                with grpc_channel(started.admin_port) as ch:
                    return check(ch, timeout=2) == SERVING
            except grpc.RpcError:
                return False

        wait_until(one_check, what="a check once a slot is free")
    finally:
        for s in held:
            s.close()
