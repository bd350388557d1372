# SPDX-License-Identifier: Apache-2.0
"""gRPC through meshd: the four call shapes carry every message unchanged and
in order; 1,000 unary calls share one channel (one downstream connection);
100 calls run at the same time as streams of one connection."""
import hashlib
import queue
import random

import grpc

from env.clients import established_to
from env.grpc_backend import det_payload

CALL_TIMEOUT = 60  # hang guard per call


def _payload(n, seed):
    return random.Random(seed).randbytes(n)


def test_unary(echo_service):
    svc = echo_service()
    stub = svc.stub()
    for i, size in enumerate([0, 1, 100, 16 * 1024 - 5, 16 * 1024, 300 * 1024 + 7]):
        p = _payload(size, i)
        r = stub.Unary(svc.pb.EchoRequest(id=f"u{i}", payload=p), timeout=CALL_TIMEOUT)
        assert r.id == f"u{i}"
        assert r.payload == p, f"size {size}: payload changed ({len(r.payload)} bytes back)"
        assert r.payload_sha256 == hashlib.sha256(p).hexdigest()
        assert r.server == "echo"
    calls = [c for c in svc.backend.calls() if c["method"] == "Unary"]
    assert len(calls) == 6 and not any(c["cancelled"] for c in calls), calls


def test_client_stream(echo_service):
    svc = echo_service()
    sizes = [random.Random(5).randrange(0, 70000) for _ in range(60)] + [0, 1, 256 * 1024]
    msgs = [_payload(n, 100 + i) for i, n in enumerate(sizes)]
    h = hashlib.sha256()
    for m in msgs:
        h.update(m)

    def reqs():
        yield svc.pb.EchoRequest(id="cs", payload=msgs[0])
        for m in msgs[1:]:
            yield svc.pb.EchoRequest(payload=m)

    r = svc.stub().ClientStream(reqs(), timeout=CALL_TIMEOUT)
    assert (r.id, r.received_messages, r.received_bytes) == ("cs", len(msgs), sum(sizes))
    assert r.received_sha256 == h.hexdigest(), "messages changed or reordered"


def test_server_stream(echo_service):
    svc = echo_service()
    req = svc.pb.EchoRequest(id="ss", repeat=40, response_size=40000)
    want = det_payload(40000)
    got = list(svc.stub().ServerStream(req, timeout=CALL_TIMEOUT))
    assert [r.seq for r in got] == list(range(40))
    assert all(r.payload == want for r in got), "a streamed message changed"


def test_server_stream_empty_messages(echo_service):
    svc = echo_service()
    got = list(svc.stub().ServerStream(svc.pb.EchoRequest(id="e", repeat=25), timeout=CALL_TIMEOUT))
    assert [(r.seq, r.payload) for r in got] == [(i, b"") for i in range(25)]


def test_bidi_stream_ping_pong(echo_service):
    """Each response arrives before the next request is sent: messages are
    forwarded as they come, not held until the stream ends."""
    svc = echo_service()
    outbox = queue.Queue()

    def reqs():
        for _ in range(1000):  # bounded; ends at the None sentinel
            m = outbox.get(timeout=CALL_TIMEOUT)
            if m is None:
                return
            yield m

    call = svc.stub().BidiStream(reqs(), timeout=CALL_TIMEOUT)
    for i in range(30):
        p = _payload(i * 997, 200 + i)
        outbox.put(svc.pb.EchoRequest(id="bd", payload=p))
        r = next(call)
        assert (r.seq, r.payload) == (i, p), f"round {i}"
    outbox.put(None)
    assert list(call) == []
    assert call.code() == grpc.StatusCode.OK


def test_1000_unary_calls_on_one_channel(echo_service):
    svc = echo_service()
    ch = svc.channel()
    stub = svc.stub(ch)
    for i in range(1000):
        p = i.to_bytes(4, "big") * (i % 7)
        r = stub.Unary(svc.pb.EchoRequest(id=f"n{i}", payload=p), timeout=CALL_TIMEOUT)
        assert (r.id, r.payload) == (f"n{i}", p)
    # One channel, one downstream connection (counted from the client side).
    assert established_to(svc.port) == 1
    calls = svc.backend.calls()
    assert sorted(c["id"] for c in calls if c["method"] == "Unary") == sorted(f"n{i}" for i in range(1000))


def test_100_concurrent_streams_on_one_connection(echo_service):
    """100 calls on one channel, each held by the server until all 100 have
    arrived: they can only complete if all are open at once."""
    n = 100
    svc = echo_service()
    ch = svc.channel()
    stub = svc.stub(ch)
    futs = [
        stub.Unary.future(
            svc.pb.EchoRequest(id=f"c{i}", payload=b"%d" % i, barrier="b", barrier_count=n, barrier_timeout_ms=30000),
            timeout=CALL_TIMEOUT,
        )
        for i in range(n)
    ]
    results = []
    for i, f in enumerate(futs):
        try:
            r = f.result(timeout=CALL_TIMEOUT + 10)
            results.append((r.id, r.payload))
        except grpc.RpcError as e:
            results.append((f"c{i}", f"{e.code()}: {e.details()}"))
    assert results == [(f"c{i}", b"%d" % i) for i in range(n)]
    assert established_to(svc.port) == 1, "the calls did not share one connection"
    assert svc.backend.observations()["barrier_max"]["b"] == n
