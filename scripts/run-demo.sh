#!/usr/bin/env bash
# Starts the demo gRPC app (test.v1.Echo) on 127.0.0.1:8080 and meshd with its
# built-in default bundle in front of it (h2c on 15006 -> 8080, admin on
# 15000). Ctrl-C stops both.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build/release}
meshd="$build/sidecar/meshd"
[ -x "$meshd" ] || { echo "run-demo: $meshd not built (make build)" >&2; exit 1; }

stubs=$(mktemp -d)
/usr/bin/python3 -c "import sys; sys.path.insert(0, '$root/integration/env'); import grpc_backend; grpc_backend.generate_stubs('$root/proto', '$stubs')"
/usr/bin/python3 "$root/integration/env/grpc_backend.py" --stubs "$stubs" --port 8080 --control-port 8081 --name demo-app &
app=$!
"$meshd" &
md=$!
cleanup() { kill -TERM "$md" 2>/dev/null || true; kill "$app" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$stubs"; }
trap cleanup EXIT INT TERM

for _ in $(seq 200); do
  curl -sf http://127.0.0.1:15000/ready >/dev/null 2>&1 && break
  kill -0 "$md" 2>/dev/null || { echo "run-demo: meshd exited (is port 15006 or 15000 in use?)" >&2; exit 1; }
  sleep 0.05
done
cat <<MSG

meshd is running with its built-in default bundle, in front of a gRPC demo app
(test.v1.Echo from proto/test/v1/echo.proto on 127.0.0.1:8080).
  a gRPC call through meshd:    /usr/bin/python3 scripts/demo_client.py
  with grpcurl, if installed:   grpcurl -plaintext -import-path proto/test/v1 -proto echo.proto \\
                                  -d '{"payload": "aGVsbG8="}' 127.0.0.1:15006 test.v1.Echo/Unary
  plain HTTP/2:                 curl --http2-prior-knowledge -i http://127.0.0.1:15006/
  readiness / metrics / config: curl http://127.0.0.1:15000/ready  (/stats/prometheus, /config_dump)
Ctrl-C stops meshd (graceful drain) and the demo app.

MSG
wait "$md"
