# SPDX-License-Identifier: Apache-2.0
"""Every gRPC status code 0-16 from the server reaches the client through
meshd with its message intact: Unicode, characters that grpc-message must
percent-encode, and text that already looks percent-encoded. On the wire,
meshd's grpc-status / grpc-message are byte for byte the server's own."""
import grpc
import pytest

from env.clients import H2Client, grpc_frame, grpc_messages, grpc_request_headers

CALL_TIMEOUT = 30
CODES = {c.value[0]: c for c in grpc.StatusCode}


def message_for(code):
    return (
        f"code {code}: héllo wörld ✓ 日本語 🚀 | literal %41 %% 100% %zz %E2%9C%93 "
        f"| ctl\ttab\nnewline | quote\" back\\slash | end"
    )


@pytest.mark.parametrize("code", range(17), ids=[CODES[c].name for c in range(17)])
def test_unary_status_and_message(echo_service, code):
    svc = echo_service()
    msg = message_for(code)
    req = svc.pb.EchoRequest(id=f"s{code}", status_code=code, status_message=msg)
    try:
        _, call = svc.stub().Unary.with_call(req, timeout=CALL_TIMEOUT)
        got = (call.code(), call.details())
    except grpc.RpcError as e:
        got = (e.code(), e.details())
    assert got == (CODES[code], msg)


@pytest.mark.parametrize("code", [0, 2, 5, 13, 14, 16], ids=lambda c: CODES[c].name)
def test_status_after_streamed_messages(echo_service, code):
    svc = echo_service()
    msg = message_for(code)
    req = svc.pb.EchoRequest(id=f"ss{code}", repeat=3, payload=b"p", status_code=code, status_message=msg)
    call = svc.stub().ServerStream(req, timeout=CALL_TIMEOUT)
    seqs = []
    try:
        for r in call:
            seqs.append(r.seq)
    except grpc.RpcError:
        pass
    assert seqs == [0, 1, 2]
    assert (call.code(), call.details()) == (CODES[code], msg)


def _raw_status(port, pb, code, msg, streaming=False):
    req = pb.EchoRequest(id="raw", status_code=code, status_message=msg, repeat=2)
    method = "ServerStream" if streaming else "Unary"
    with H2Client(port) as c:
        r = c.request(grpc_request_headers(f"/test.v1.Echo/{method}"), body=grpc_frame(req.SerializeToString()))
    assert r.ended and r.reset is None, r
    return (
        r.trailers_only,
        r.header(":status"),
        r.header("content-type"),
        r.grpc_field("grpc-status"),
        r.grpc_field("grpc-message"),
        len(grpc_messages(bytes(r.data))),
    )


@pytest.mark.proxy_only
@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "server_stream"])
def test_wire_status_identical_to_server(echo_service, streaming):
    """grpc-status and the percent-encoded grpc-message through meshd equal
    what the server itself puts on the wire (asked directly), and so does the
    response's shape (a trailers-only answer stays trailers-only)."""
    svc = echo_service()
    for code in (0, 3, 8, 14, 16):
        msg = message_for(code)
        direct = _raw_status(svc.backend.port, svc.pb, code, msg, streaming)
        proxied = _raw_status(svc.port, svc.pb, code, msg, streaming)
        assert direct[3] == str(code), direct  # the reference itself is right
        assert proxied == direct, f"code {code}: through meshd {proxied} != direct {direct}"
