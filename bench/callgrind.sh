#!/usr/bin/env bash
# Instructions per gRPC unary call in meshd's one worker, by callgrind: the
# stable figure behind the bench's CPU ratios (README "Performance").
#   bench/callgrind.sh [BUILD_DIR]        default build/release
# bench_backend serves h2c gRPC; meshd (--concurrency 1) runs under callgrind
# beside it; h2load (16 connections x 16 streams) warms up with 5,000 calls,
# then the counters are zeroed, CALLS calls (default 20,000) are made, the
# counters dumped, and the worker thread's instructions divided by them.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build/release}
CALLS=${CALLS:-20000}
for t in valgrind callgrind_control h2load; do
    command -v "$t" >/dev/null || { echo "callgrind.sh: $t missing (apt-get install valgrind nghttp2-client)" >&2; exit 1; }
done
WD=$(mktemp -d /tmp/meshd-callgrind.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
BP=$(free_port); LP=$(free_port); AP=$(free_port)
"$BUILD/bench/bench_backend" --h2 "$BP" --h1 "$(free_port)" --echo "$(free_port)" >"$WD/backend.log" 2>&1 &
pids+=($!)
cat >"$WD/b.textproto" <<EOT
listeners { name: "grpc_in" address { address: "127.0.0.1" port: $LP } http { codec: H2C route_config: "bench" } }
route_configs { name: "bench" virtual_hosts { name: "all" domains: "*" routes { name: "all" match { prefix: "/" } route { cluster: "backend" } } } }
clusters { name: "backend" protocol: HTTP2 endpoints { address { address: "127.0.0.1" port: $BP } } }
admin { address { address: "127.0.0.1" port: $AP } }
EOT
MESHCTL_PROTO_PATH=proto "$BUILD/xds/meshctl" encode "$WD/b.textproto" >"$WD/b.pb"
valgrind --tool=callgrind --separate-threads=yes \
    --callgrind-out-file="$WD/cg.out" "$BUILD/sidecar/meshd" --bundle "$WD/b.pb" \
    --concurrency 1 --log-level warn --drain-timeout 1 >"$WD/meshd.log" 2>&1 &
MPID=$!
pids+=($MPID)
for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$AP/ready" >/dev/null && break
    sleep 0.1
done
printf '\x00\x00\x00\x00\x10aaaaaaaaaaaaaaaa' >"$WD/body.bin"
load() { h2load -t 1 -c 16 -m 16 -n "$1" -d "$WD/body.bin" -H 'content-type: application/grpc' \
    -H 'te: trailers' "http://127.0.0.1:$LP/bench.v1.Bench/Unary" >"$WD/h2load.$2.log"; }
load 5000 warm
callgrind_control -z "$MPID" >/dev/null
load "$CALLS" measured
callgrind_control -d measured "$MPID" >/dev/null
grep -q " 0 failed, 0 errored" "$WD/h2load.measured.log" || { echo "h2load had errors: $WD" >&2; exit 1; }
# The worker is the thread that ran the calls: the dump with the most events.
ir=0
for f in "$WD"/cg.out.1-*; do
    n=$(awk '/^summary:|^totals:/ {print $2; exit}' "$f")
    [ -n "$n" ] && [ "$n" -gt "$ir" ] && ir=$n
done
echo "meshd: $((ir / CALLS)) instructions per gRPC unary call ($ir over $CALLS calls; files in $WD)"
