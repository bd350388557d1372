# SPDX-License-Identifier: Apache-2.0
"""Large gRPC messages through meshd: one 64 MiB message each way (far
beyond every HTTP/2 window, so flow control has to work end to end), and
32 MiB streamed both ways at once in 1 MiB messages."""
import hashlib
import threading

from env.grpc_backend import det_payload

MIB = 1024 * 1024
HANG_GUARD = 180  # per call; the transfer itself takes seconds


def test_64mib_message_both_ways(echo_service):
    svc = echo_service()
    payload = det_payload(64 * MIB, seed=64)
    want = hashlib.sha256(payload).hexdigest()
    r = svc.stub().Unary(svc.pb.EchoRequest(id="big", payload=payload), timeout=HANG_GUARD)
    assert r.payload_sha256 == want, "the server received a different 64 MiB"
    assert len(r.payload) == len(payload) and hashlib.sha256(r.payload).hexdigest() == want, (
        f"the client received {len(r.payload)} different bytes"
    )


def test_64mib_response_to_small_request(echo_service):
    svc = echo_service()
    r = svc.stub().Unary(svc.pb.EchoRequest(id="bigr", response_size=64 * MIB), timeout=HANG_GUARD)
    assert len(r.payload) == 64 * MIB
    assert hashlib.sha256(r.payload).hexdigest() == hashlib.sha256(det_payload(64 * MIB)).hexdigest()


def test_32mib_streamed_both_ways_at_once(echo_service):
    svc = echo_service()
    n = 32
    chunks = [det_payload(MIB, seed=i) for i in range(n)]
    sent = threading.Event()

    def reqs():
        for i, c in enumerate(chunks):
            yield svc.pb.EchoRequest(id="bidi" if i == 0 else "", payload=c)
        sent.set()

    got = hashlib.sha256()
    count = 0
    for r in svc.stub().BidiStream(reqs(), timeout=HANG_GUARD):
        assert r.seq == count
        got.update(r.payload)
        count += 1
    want = hashlib.sha256(b"".join(chunks)).hexdigest()
    assert (count, got.hexdigest()) == (n, want)
    assert sent.is_set()
