#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Checks one example as a user would use it: in a fresh directory (TLS file
# paths in examples are relative to meshd's working directory), the
# certs/mint commands its header lists ("#   certs/mint ..."), then meshctl
# encode and meshctl validate. Run by CTest (example.NAME).
#   proto/examples/check.sh MESHCTL EXAMPLE.textproto
set -eu
meshctl=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
ex=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
root=$(cd "$(dirname "$0")/../.." && pwd)
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
cd "$d"
sed -n "s|^#   certs/mint |bash '$root/certs/mint' |p" "$ex" | sh -e >/dev/null
"$meshctl" encode "$ex" > example.pb
"$meshctl" validate example.pb
