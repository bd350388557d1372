# SPDX-License-Identifier: Apache-2.0
"""gRPC metadata through meshd, byte-exact both ways: request metadata as the
server receives it, response headers (initial metadata) and trailers as the
client receives them, ASCII and binary ("-bin") values, repeated keys, in
unary, streaming and failing calls."""
import base64

import grpc

CALL_TIMEOUT = 30

ASCII_ALL = "".join(chr(c) for c in range(0x21, 0x7F))  # every printable but space
ASCII_VALUE = f"{ASCII_ALL} with inner  spaces {ASCII_ALL}"
BIN_ALL = bytes(range(256))

# Request metadata sent by the client (keys we own; meshd may add others).
REQUEST_MD = [
    ("x-ascii", ASCII_VALUE),
    ("x-empty", ""),
    ("x-long", "L" * 3000),
    ("x-all-bin", BIN_ALL),
    ("x-zeros-bin", b"\0" * 17),
    ("x-one-bin", b"\xff"),
    ("x-rep", "first"),
    ("x-rep", "second"),
    ("x-rep", "third, with comma"),
]
# Response metadata the server is asked to send.
INITIAL_MD = [
    ("x-init", ASCII_VALUE),
    ("x-init-bin", bytes(reversed(BIN_ALL))),
    ("x-init-rep", "a"),
    ("x-init-rep", "b"),
]
TRAILING_MD = [
    ("x-trail", "trailer " + ASCII_ALL),
    ("x-trail-bin", BIN_ALL * 3),
    ("x-trail-empty-bin", b""),
    ("x-trail-rep", "1"),
    ("x-trail-rep", "2"),
]


def _headers(pb, md):
    return [pb.Header(key=k, value=v if isinstance(v, bytes) else v.encode()) for k, v in md]


def _by_key(md, keys):
    """{key: value} for the given keys: binary values as bytes; repeated ASCII
    values joined with "," (gRPC allows a proxy to join them so)."""
    out = {}
    for k, v in md:
        if k not in keys:
            continue
        if isinstance(v, str):
            v = v.encode("latin-1")
        if k in out:
            assert not k.endswith("-bin"), f"binary key {k} repeated"
            out[k] = out[k] + b"," + v
        else:
            out[k] = v
    return out


def _observed(call_record):
    return [(k, base64.b64decode(v)) for k, v in call_record["metadata"]]


def _keys(md):
    return {k for k, _ in md}


def _comma_join_ok(got, want):
    """Repeated ASCII values: "a" "b" may arrive as "a" "b" or as "a,b" (or "a, b")."""
    return got.replace(b", ", b",") == want.replace(b", ", b",")


def _assert_md(got_md, want_md, what):
    keys = _keys(want_md)
    got, want = _by_key(got_md, keys), _by_key(want_md, keys)
    assert set(got) == set(want), f"{what}: keys missing {set(want) - set(got)} (got {sorted(got)})"
    for k in want:
        if k.endswith("-bin"):
            assert got[k] == want[k], f"{what}: {k}: {got[k]!r} != {want[k]!r}"
        else:
            assert got[k] == want[k] or _comma_join_ok(got[k], want[k]), f"{what}: {k}: {got[k]!r} != {want[k]!r}"


def test_request_metadata_reaches_server_byte_exact(echo_service):
    svc = echo_service()
    svc.stub().Unary(svc.pb.EchoRequest(id="md"), metadata=REQUEST_MD, timeout=CALL_TIMEOUT)
    rec = svc.backend.wait_call("md", lambda c: c["ended"])
    _assert_md(_observed(rec), REQUEST_MD, "request metadata at the server")


def test_request_metadata_repeated_key_keeps_order(echo_service):
    svc = echo_service()
    md = [("x-order", str(i)) for i in range(10)]
    svc.stub().Unary(svc.pb.EchoRequest(id="ord"), metadata=md, timeout=CALL_TIMEOUT)
    rec = svc.backend.wait_call("ord", lambda c: c["ended"])
    got = b",".join(v for k, v in _observed(rec) if k == "x-order").replace(b", ", b",")
    assert got == b",".join(str(i).encode() for i in range(10))


def test_unary_response_metadata_and_trailers_byte_exact(echo_service):
    svc = echo_service()
    req = svc.pb.EchoRequest(
        id="rt", initial_metadata=_headers(svc.pb, INITIAL_MD), trailing_metadata=_headers(svc.pb, TRAILING_MD)
    )
    resp, call = svc.stub().Unary.with_call(req, timeout=CALL_TIMEOUT)
    assert resp.id == "rt"
    _assert_md(call.initial_metadata(), INITIAL_MD, "initial metadata")
    _assert_md(call.trailing_metadata(), TRAILING_MD, "trailing metadata")
    # Nothing of ours leaks from one to the other.
    assert not _keys(TRAILING_MD) & {k for k, _ in call.initial_metadata()}
    assert not _keys(INITIAL_MD) & {k for k, _ in call.trailing_metadata()}


def test_server_stream_metadata_and_trailers(echo_service):
    svc = echo_service()
    req = svc.pb.EchoRequest(
        id="st",
        repeat=5,
        payload=b"x" * 1000,
        initial_metadata=_headers(svc.pb, INITIAL_MD),
        trailing_metadata=_headers(svc.pb, TRAILING_MD),
    )
    call = svc.stub().ServerStream(req, metadata=REQUEST_MD, timeout=CALL_TIMEOUT)
    _assert_md(call.initial_metadata(), INITIAL_MD, "initial metadata")
    assert [r.seq for r in call] == list(range(5))
    assert call.code() == grpc.StatusCode.OK
    _assert_md(call.trailing_metadata(), TRAILING_MD, "trailing metadata")
    rec = svc.backend.wait_call("st", lambda c: c["ended"])
    _assert_md(_observed(rec), REQUEST_MD, "request metadata at the server")


def test_bidi_metadata_and_trailers(echo_service):
    svc = echo_service()
    first = svc.pb.EchoRequest(
        id="bd", payload=b"1", initial_metadata=_headers(svc.pb, INITIAL_MD), trailing_metadata=_headers(svc.pb, TRAILING_MD)
    )
    call = svc.stub().BidiStream(iter([first, svc.pb.EchoRequest(payload=b"2")]), metadata=REQUEST_MD, timeout=CALL_TIMEOUT)
    assert [r.payload for r in call] == [b"1", b"2"]
    _assert_md(call.initial_metadata(), INITIAL_MD, "initial metadata")
    _assert_md(call.trailing_metadata(), TRAILING_MD, "trailing metadata")


def test_error_status_carries_trailers(echo_service):
    svc = echo_service()
    req = svc.pb.EchoRequest(
        id="err", status_code=9, status_message="precondition failed", trailing_metadata=_headers(svc.pb, TRAILING_MD)
    )
    try:
        svc.stub().Unary(req, timeout=CALL_TIMEOUT)
        raise AssertionError("the call succeeded")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.FAILED_PRECONDITION, (e.code(), e.details())
        assert e.details() == "precondition failed"
        _assert_md(e.trailing_metadata(), TRAILING_MD, "trailing metadata of a failed call")
