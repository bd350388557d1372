#!/usr/bin/env bash
# Starts the demo app on 127.0.0.1:8080 and meshd with its built-in default
# bundle in front of it (15006 -> 8080, admin on 15000). Ctrl-C stops both.
set -euo pipefail
build=${1:-build/release}
meshd="$build/sidecar/meshd"
[ -x "$meshd" ] || { echo "run-demo: $meshd not built (make build)" >&2; exit 1; }

/usr/bin/python3 "$(dirname "$0")/demo_app.py" 8080 &
app=$!
"$meshd" &
md=$!
cleanup() { kill -TERM "$md" 2>/dev/null || true; kill "$app" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

for _ in $(seq 100); do
  curl -sf http://127.0.0.1:15000/ready >/dev/null 2>&1 && break
  kill -0 "$md" 2>/dev/null || { echo "run-demo: meshd exited (is port 15006 or 15000 in use?)" >&2; exit 1; }
  sleep 0.05
done
cat <<MSG

meshd is running with its built-in default bundle, in front of the demo app.
  call the app through meshd:   curl http://127.0.0.1:15006/hello
  readiness:                    curl http://127.0.0.1:15000/ready
  metrics:                      curl http://127.0.0.1:15000/stats/prometheus
  running configuration:        curl http://127.0.0.1:15000/config_dump
Ctrl-C stops meshd (graceful drain) and the demo app.

MSG
wait "$md"
