# SPDX-License-Identifier: Apache-2.0
"""Pre-flight check of one target with a real gRPC client (Debian's grpcio):
a unary call and a server-streaming call to bench_backend, through the proxy
or direct. Exit 0 if both end with status OK and the expected messages.

    /usr/bin/python3 bench/grpc_check.py PORT [STREAM_MESSAGES] [STREAM_SIZE]
"""
import sys

import grpc


def main():
    port = int(sys.argv[1])
    n_msgs = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 1 << 20
    opts = [("grpc.max_receive_message_length", 64 << 20), ("grpc.enable_http_proxy", 0)]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=opts) as ch:
        unary = ch.unary_unary("/bench.v1.Bench/Unary")  # raw bytes in and out
        reply, call = unary.with_call(b"a" * 16, timeout=10)
        if call.code() != grpc.StatusCode.OK or len(reply) != 16:
            print(f"unary: status {call.code()}, {len(reply)} bytes", file=sys.stderr)
            return 1
        stream = ch.unary_stream("/bench.v1.Bench/Stream")
        call = stream(b"a" * 16, timeout=20)
        sizes = [len(m) for m in call]
        if call.code() != grpc.StatusCode.OK or sizes != [size] * n_msgs:
            print(f"stream: status {call.code()}, message sizes {sizes[:8]}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except grpc.RpcError as e:
        print(f"gRPC error: {e.code()} {e.details()}", file=sys.stderr)
        sys.exit(1)
