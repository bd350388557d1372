#!/usr/bin/env python3
"""Calls the demo app through meshd: a unary call and a server-streaming call
of test.v1.Echo (proto/test/v1/echo.proto). Usage: demo_client.py [HOST:PORT]"""
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "integration" / "env"))
import grpc  # noqa: E402
import grpc_backend  # noqa: E402  (its stub generator; one place for it)

target = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:15006"
with tempfile.TemporaryDirectory() as stubs:
    grpc_backend.generate_stubs(ROOT / "proto", stubs)
    sys.path.insert(0, stubs)
    import echo_pb2
    import echo_pb2_grpc

    with grpc.insecure_channel(target) as ch:
        echo = echo_pb2_grpc.EchoStub(ch)
        r, call = echo.Unary.with_call(echo_pb2.EchoRequest(id="demo", payload=b"hello, mesh"),
                                       timeout=5)
        print(f"Unary        -> payload={r.payload!r} server={r.server!r}")
        for m in echo.ServerStream(echo_pb2.EchoRequest(payload=b"tick", repeat=3), timeout=5):
            print(f"ServerStream -> seq={m.seq} payload={m.payload!r}")
