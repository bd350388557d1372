# SPDX-License-Identifier: Apache-2.0
"""Bad TLS configuration is a bundle error: `meshd --bundle` exits 2 and
`meshctl validate` prints the same `error: FILE: RESOURCE: FIELD: REASON`
lines (the mechanics of test_bundle_errors.check_rejected), and the reason
names the certificate file and what is wrong with it: missing or unreadable
files, an expired certificate, a key that does not match, a certificate
without a SPIFFE ID, client certificates asked for without a CA to verify
them, TLS on a tcp_proxy listener, cluster TLS without a CA, invalid
match_spiffe_ids. A valid TLS bundle validates (so the refusals are not
blanket ones). Certificates are minted fresh per test."""
import pytest

from env.meshd import meshctl
from env.tls import (  # noqa: F401 - pki is a fixture
    Workload,
    cluster,
    downstream_tls,
    http_bundle,
    http_listener,
    pki,
    upstream_tls,
)
from test_bundle_errors import TIMEOUT, check_rejected, write_pb

GARBAGE = b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"


@pytest.fixture
def bad(pki, workdir, ports):
    """Files for the cases: .missing (a path that does not exist), .garbage
    (a PEM file that is not a certificate), .expired, .no_spiffe, .mismatch
    (meshd's chain with frontend's key); .ports."""

    class Bad:
        pass

    b = Bad()
    b.missing = workdir / "does-not-exist.pem"
    b.garbage = workdir / "garbage.pem"
    b.garbage.write_bytes(GARBAGE)
    b.expired = pki.ca.workload("expired", sa="meshd", expired=True)
    b.no_spiffe = pki.ca.no_spiffe_cert("nospiffe")
    b.mismatch = Workload("mismatch", pki.frontend.key, pki.meshd.cert, pki.meshd.chain, pki.meshd.spiffe_id)
    b.ports = {"l1": ports.get(), "up": ports.get(), "admin_port": ports.get()}
    return b


def listener_bundle(p, tls, codec="AUTO"):
    return http_bundle([http_listener("tls_in", p["l1"], codec, tls)], [cluster("app", p["up"])])


def cluster_bundle(p, tls, protocol="HTTP2"):
    return http_bundle([http_listener("in", p["l1"], "H2C")], [cluster("app", p["up"], protocol, tls)])


# id -> (bundle builder(pki, bad) -> text, resource prefix, field prefix, substrings of the reason)
CASES = {
    "listener_missing_cert": (
        lambda pki, bad: listener_bundle(bad.ports, downstream_tls(
            Workload("x", pki.meshd.key, bad.missing, bad.missing, None), pki.ca.bundle)),
        "listener", "tls", lambda pki, bad: [str(bad.missing)]),
    "listener_missing_key": (
        lambda pki, bad: listener_bundle(bad.ports, downstream_tls(
            Workload("x", bad.missing, pki.meshd.cert, pki.meshd.chain, None), pki.ca.bundle)),
        "listener", "tls", lambda pki, bad: [str(bad.missing)]),
    "listener_missing_ca": (
        lambda pki, bad: listener_bundle(bad.ports, downstream_tls(pki.meshd, bad.missing)),
        "listener", "tls", lambda pki, bad: [str(bad.missing)]),
    "listener_garbage_cert": (
        lambda pki, bad: listener_bundle(bad.ports, downstream_tls(
            Workload("x", pki.meshd.key, bad.garbage, bad.garbage, None), pki.ca.bundle)),
        "listener", "tls", lambda pki, bad: [str(bad.garbage)]),
    "listener_garbage_ca": (
        lambda pki, bad: listener_bundle(bad.ports, downstream_tls(pki.meshd, bad.garbage)),
        "listener", "tls", lambda pki, bad: [str(bad.garbage)]),
    "listener_expired": (
        lambda pki, bad: listener_bundle(bad.ports, downstream_tls(bad.expired, pki.ca.bundle)),
        "listener", "tls", lambda pki, bad: [str(bad.expired.chain), "expired"]),
    "listener_key_mismatch": (
        lambda pki, bad: listener_bundle(bad.ports, downstream_tls(bad.mismatch, pki.ca.bundle)),
        "listener", "tls", lambda pki, bad: [str(bad.mismatch.key), "does not match"]),
    "listener_no_spiffe": (
        lambda pki, bad: listener_bundle(bad.ports, downstream_tls(bad.no_spiffe, pki.ca.bundle)),
        "listener", "tls", lambda pki, bad: [str(bad.no_spiffe.chain), "SPIFFE"]),
    "require_without_ca": (
        lambda pki, bad: listener_bundle(bad.ports, downstream_tls(pki.meshd, None, "REQUIRE")),
        "listener", "tls.trusted_ca_file", lambda pki, bad: []),
    "optional_without_ca": (
        lambda pki, bad: listener_bundle(bad.ports, downstream_tls(pki.meshd, None, "OPTIONAL")),
        "listener", "tls.trusted_ca_file", lambda pki, bad: []),
    "tls_on_tcp_proxy": (
        lambda pki, bad: (
            f'listeners {{ name: "tcp_in" address {{ address: "127.0.0.1" port: {bad.ports["l1"]} }}\n'
            f'  tcp_proxy {{ cluster: "app" }}\n  {downstream_tls(pki.meshd, pki.ca.bundle)}\n}}\n'
            + cluster("app", bad.ports["up"])),
        "listener", "tls", lambda pki, bad: []),
    "handshake_timeout_too_long": (
        lambda pki, bad: listener_bundle(bad.ports, downstream_tls(pki.meshd, pki.ca.bundle,
                                                                   handshake_timeout_ms=60001)),
        "listener", "tls.handshake_timeout_ms", lambda pki, bad: []),
    "allow_plaintext_not_auto": (
        lambda pki, bad: listener_bundle(bad.ports, downstream_tls(pki.meshd, pki.ca.bundle, allow_plaintext=True),
                                         codec="H2C"),
        "listener", "tls.allow_plaintext", lambda pki, bad: []),
    "cluster_without_ca": (
        lambda pki, bad: cluster_bundle(bad.ports, 'tls { sni: "backend" }'),
        "cluster", "tls.trusted_ca_file", lambda pki, bad: []),
    "cluster_missing_ca": (
        lambda pki, bad: cluster_bundle(bad.ports, upstream_tls(bad.missing, pki.frontend)),
        "cluster", "tls", lambda pki, bad: [str(bad.missing)]),
    "cluster_expired_client_cert": (
        lambda pki, bad: cluster_bundle(bad.ports, upstream_tls(pki.ca.bundle, bad.expired)),
        "cluster", "tls", lambda pki, bad: [str(bad.expired.chain), "expired"]),
    "cluster_key_mismatch": (
        lambda pki, bad: cluster_bundle(bad.ports, upstream_tls(pki.ca.bundle, bad.mismatch)),
        "cluster", "tls", lambda pki, bad: [str(bad.mismatch.key), "does not match"]),
    "cluster_match_not_spiffe": (
        lambda pki, bad: cluster_bundle(bad.ports, upstream_tls(pki.ca.bundle, pki.frontend,
                                                                match=["https://cluster.local/ns/default/sa/backend"])),
        "cluster", "tls.match_spiffe_ids[0]", lambda pki, bad: ["https://cluster.local/ns/default/sa/backend"]),
    "cluster_match_empty_trust_domain": (
        lambda pki, bad: cluster_bundle(bad.ports, upstream_tls(pki.ca.bundle, pki.frontend,
                                                                match=[pki.backend.spiffe_id, "spiffe:///ns/a/sa/b"])),
        "cluster", "tls.match_spiffe_ids[1]", lambda pki, bad: ["spiffe:///ns/a/sa/b"]),
    "cluster_match_bad_trust_domain": (
        lambda pki, bad: cluster_bundle(bad.ports, upstream_tls(pki.ca.bundle, pki.frontend,
                                                                match=["spiffe://Cluster Local/ns/a/sa/b"])),
        "cluster", "tls.match_spiffe_ids[0]", lambda pki, bad: []),
    "tls_cluster_behind_tcp_proxy": (
        lambda pki, bad: (
            f'listeners {{ name: "tcp_in" address {{ address: "127.0.0.1" port: {bad.ports["l1"]} }}\n'
            f'  tcp_proxy {{ cluster: "app" }}\n}}\n'
            + cluster("app", bad.ports["up"], tls=upstream_tls(pki.ca.bundle, pki.frontend))),
        "listener", "tcp_proxy.cluster", lambda pki, bad: []),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_tls_bundle(case, pki, bad, meshd_bin, meshctl_bin, proto_path, workdir):
    build, resource, field, want = CASES[case]
    pb = write_pb(workdir, case, build(pki, bad), meshctl_bin, proto_path, bad.ports)
    lines = check_rejected(meshd_bin, meshctl_bin, proto_path, pb, resource, field, field_prefix=True)
    subs = want(pki, bad)
    hits = [l for l in lines if f": {field}" in l and all(s in l for s in subs)]
    assert hits, f"no error line for field {field!r}... naming {subs}:\n" + "\n".join(lines)


def test_valid_tls_bundle_validates(pki, bad, meshctl_bin, proto_path, workdir):
    """Listener and cluster TLS, every option set: valid."""
    p = bad.ports
    text = http_bundle(
        [http_listener("tls_in", p["l1"], "AUTO",
                       downstream_tls(pki.meshd, pki.ca.bundle, "OPTIONAL", allow_plaintext=True,
                                      handshake_timeout_ms=60000),
                       hcm_extra='forward_client_cert: SANITIZE client_cert_header: "x-client-id"')],
        [cluster("app", p["up"], "HTTP2",
                 upstream_tls(pki.ca.bundle, pki.frontend, sni="backend.default.svc",
                              match=[pki.backend.spiffe_id, "spiffe://other.domain/ns/x/sa/y"])),
         cluster("h1", p["up"] + 1, "HTTP1", upstream_tls(pki.ca.bundle))],
    )
    pb = write_pb(workdir, "good", text, meshctl_bin, proto_path, p)
    v = meshctl(meshctl_bin, proto_path, "validate", pb, timeout=TIMEOUT)
    assert v.returncode == 0, (v.stdout + v.stderr).decode(errors="replace")
    assert v.stdout.decode().strip() == f"{pb}: ok"
