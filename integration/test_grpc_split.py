# SPDX-License-Identifier: Apache-2.0
"""Weighted cluster split for gRPC: 80/20 over 2,000 calls lands within a
statistical tolerance; a weight of 0 gets nothing."""
import math
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import EchoService

CALLS = 2000
CALL_TIMEOUT = 30
PARALLEL = 8  # client threads (one channel); only to keep the run short


def _split(grpc_backend, through, echo_stubs, weight_a, weight_b):
    a, b = grpc_backend("a"), grpc_backend("b")
    port = through("grpc_split", a.port, a_port=a.port, b_port=b.port, weight_a=weight_a, weight_b=weight_b)
    return a, b, EchoService(a, port, through.meshd, echo_stubs)


def _run(svc, n):
    stub = svc.stub()

    def one(i):
        return stub.Unary(svc.pb.EchoRequest(id=f"w{i}"), timeout=CALL_TIMEOUT).server

    try:
        with ThreadPoolExecutor(PARALLEL) as ex:
            servers = list(ex.map(one, range(n)))
    finally:
        svc.close()
    return {s: servers.count(s) for s in set(servers)}


@pytest.mark.proxy_only
def test_weighted_split_80_20(grpc_backend, through, echo_stubs):
    a, b, svc = _split(grpc_backend, through, echo_stubs, 80, 20)
    counts = _run(svc, CALLS)
    assert set(counts) <= {"a", "b"} and sum(counts.values()) == CALLS, counts
    # Binomial(2000, 0.8): mean 1600, sd ~17.9. +-5 sd fails a fair random
    # split about once in 1.7 million runs; a deterministic one is exact.
    sd = math.sqrt(CALLS * 0.8 * 0.2)
    lo, hi = CALLS * 0.8 - 5 * sd, CALLS * 0.8 + 5 * sd
    assert lo <= counts.get("a", 0) <= hi, f"cluster a got {counts.get('a', 0)} of {CALLS}, expected {lo:.0f}..{hi:.0f}: {counts}"
    # Each backend saw exactly the calls it answered.
    assert len([c for c in a.calls() if c["method"] == "Unary"]) == counts.get("a", 0)
    assert len([c for c in b.calls() if c["method"] == "Unary"]) == counts.get("b", 0)


@pytest.mark.proxy_only
def test_weight_zero_gets_nothing(grpc_backend, through, echo_stubs):
    a, b, svc = _split(grpc_backend, through, echo_stubs, 1, 0)
    counts = _run(svc, 200)
    assert counts == {"a": 200}
    assert b.calls() == []
