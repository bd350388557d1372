#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# certs/mint against openssl itself: the CA and workload certificates verify
# against the bundle, carry exactly the SPIFFE URI SAN asked for, are ECDSA
# P-256 with the usages a mesh needs, keys are private to their owner, an
# --expired certificate fails verification as expired, and bad input is
# refused with exit 2. Run by CTest (unit.certs_mint).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mint=$here/mint
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$mint" ca "$d" --trust-domain mesh.test --days 30
"$mint" workload "$d" web --ns shop --sa web --dns web.shop.svc
"$mint" workload "$d" gone --ns shop --sa gone --expired
"$mint" workload "$d" client --ns shop --sa cli --client-only

openssl verify -CAfile "$d/bundle.pem" "$d/web.pem" "$d/client.pem" >/dev/null || fail "leaf does not verify"
openssl verify -purpose sslserver -CAfile "$d/bundle.pem" "$d/web.pem" >/dev/null || fail "web is not a server cert"
if openssl verify -purpose sslserver -CAfile "$d/bundle.pem" "$d/client.pem" >/dev/null 2>&1; then
  fail "--client-only certificate passes as a server"
fi
out=$(openssl verify -CAfile "$d/bundle.pem" "$d/gone.pem" 2>&1) && fail "expired certificate verifies"
grep -q "certificate has expired" <<<"$out" || fail "expired: $out"

text=$(openssl x509 -in "$d/web.pem" -noout -text)
grep -q "URI:spiffe://mesh.test/ns/shop/sa/web, DNS:web.shop.svc" <<<"$text" || fail "SAN: $text"
grep -q "ASN1 OID: prime256v1" <<<"$text" || fail "not P-256"
grep -q "CA:FALSE" <<<"$text" || fail "leaf is a CA"
grep -q "TLS Web Server Authentication, TLS Web Client Authentication" <<<"$text" || fail "EKU"
grep -q "URI:spiffe://mesh.test$" <<<"$(openssl x509 -in "$d/ca.pem" -noout -ext subjectAltName)" || fail "CA SAN"
# short-lived by default: one day
end=$(date -d "$(openssl x509 -in "$d/web.pem" -noout -enddate | cut -d= -f2)" +%s)
[ $((end - $(date +%s))) -le 90000 ] || fail "workload valid longer than a day"
# the chain is leaf then CA; keys are owner-only and match their certificates
[ "$(openssl crl2pkcs7 -nocrl -certfile "$d/web-chain.pem" | openssl pkcs7 -print_certs -noout | grep -c subject=)" = 2 ] \
  || fail "chain"
[ "$(stat -c %a "$d/web.key")" = 600 ] || fail "key mode $(stat -c %a "$d/web.key")"
[ "$(openssl pkey -in "$d/web.key" -pubout)" = "$(openssl x509 -in "$d/web.pem" -noout -pubkey)" ] || fail "key mismatch"
# two mints never share a serial
[ "$(openssl x509 -in "$d/web.pem" -noout -serial)" != "$(openssl x509 -in "$d/client.pem" -noout -serial)" ] \
  || fail "serials repeat"

# refusals: exit 2 with a reason
for bad in "workload $d x --ns shop" "workload $d x --ns s/x --sa a" "ca $d/td --trust-domain Mesh.Test" \
           "workload $d/none x --ns a --sa b" "frobnicate $d"; do
  set +e
  msg=$("$mint" $bad 2>&1); rc=$?
  set -e
  [ $rc = 2 ] || fail "mint $bad: exit $rc ($msg)"
  [ -n "$msg" ] || fail "mint $bad: no message"
done
echo "certs/mint: ok"
