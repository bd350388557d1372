#!/usr/bin/env bash
# Installs every Debian package meshd needs to build, test, demo and benchmark.
# Idempotent: installs only what is missing. Quiet on success, loud on failure.
set -euo pipefail

pkgs=(
  # build
  build-essential cmake pkg-config ninja-build
  libnghttp2-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler
  libssl-dev libc-ares-dev libev-dev node-llhttp libcmocka-dev libmimalloc-dev
  # tests and demo
  python3 python3-grpcio python3-grpc-tools python3-pytest python3-websockets python3-h2
  curl nghttp2-client dnsmasq-base iptables iproute2 openssl procps
  # benchmark peers and load generators (bench/)
  nghttp2-proxy haproxy nginx libnginx-mod-stream wrk iperf3
)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
stamp=/var/lib/apt/periodic/meshd-update-stamp
if [ ! -e "$stamp" ] || [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v lock)" ]; then
  $SUDO apt-get update -qq >/dev/null || { echo "install-deps: apt-get update failed" >&2; exit 1; }
  $SUDO mkdir -p "$(dirname "$stamp")" && $SUDO touch "$stamp"
fi
if ! $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/meshd-apt.log 2>&1; then
  echo "install-deps: apt-get install failed; log follows" >&2
  tail -n 40 /tmp/meshd-apt.log >&2
  exit 1
fi
