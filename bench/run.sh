#!/usr/bin/env bash
# The one benchmark command (`make bench` runs it): installs what is missing
# (scripts/install-deps.sh: the peers and load generators are on its list),
# builds meshd and the harness's programs in Release, then runs bench/run.py,
# which writes bench/results/YYYY-MM-DD-HOST.md. Arguments go to run.py
# (e.g. --quick, --only unary,latency, --targets meshd,nghttpx).
# Exit: 0 when every scenario ran; 1 when one could not run; never for a slow figure.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
quiet() {  # run a step quietly; on failure show its output and stop
  local out
  if ! out=$("$@" 2>&1); then
    printf '%s\n' "$out" | tail -n 40 >&2
    echo "bench: failed: $*" >&2
    exit 1
  fi
}
quiet cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release
quiet cmake --build build/release --target meshd meshctl bench_backend bench_pingpong bench_idleconns
exec /usr/bin/python3 bench/run.py --build build/release "$@"
