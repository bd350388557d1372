# SPDX-License-Identifier: Apache-2.0
"""Bad bundles are refused with exit 2 and one line per error naming
FILE: RESOURCE: FIELD: REASON, identically by `meshd --bundle` and
`meshctl validate`; the examples encode, validate and round-trip (TLS ones
with the certificates their header says how to mint)."""
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from env.meshd import encode, meshctl, render

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((REPO / "proto" / "examples").glob("*.textproto"))
# An example's header lists the commands that make its TLS files, run from
# meshd's working directory (its paths are relative to it).
MINT_LINE = re.compile(r"^#   certs/mint (.+)$", re.M)
LINE_RE = re.compile(r"^error: (?P<file>[^:]+): (?P<resource>[^:]+): (?P<field>[^:\s][^:]*?): (?P<reason>\S.*)$")
TIMEOUT = 30

LISTENER = """
listeners {{
  name: "{name}"
  address {{ address: "{addr}" port: {port} }}
  tcp_proxy {{ cluster: "{cluster}" }}
}}
"""
CLUSTER = """
clusters {{
  name: "{name}"
  lb_policy: {lb}
  {endpoints}
}}
"""
ENDPOINT = 'endpoints {{ address {{ address: "127.0.0.1" port: {port} }} }}'
ADMIN = 'admin { address { address: "127.0.0.1" port: {admin_port} } }\n'


def listener(port, name="in", addr="127.0.0.1", cluster="app"):
    return LISTENER.format(name=name, addr=addr, port=port, cluster=cluster)


def cluster(port, name="app", lb="ROUND_ROBIN", endpoints=1):
    eps = "\n  ".join(ENDPOINT.format(port=port + i) for i in range(endpoints))
    return CLUSTER.format(name=name, lb=lb, endpoints=eps)


def valid_text(p):
    return listener(p["l1"]) + cluster(p["up"])


# id -> (bundle text builder, resource kind, field)
TEXT_CASES = {
    "unknown_cluster": (lambda p: listener(p["l1"], cluster="nope") + cluster(p["up"]), "listener", "tcp_proxy.cluster"),
    "duplicate_listener": (
        lambda p: listener(p["l1"]) + listener(p["l2"]) + cluster(p["up"]),
        "listener",
        "name",
    ),
    "duplicate_cluster": (lambda p: valid_text(p) + cluster(p["up"] + 10), "cluster", "name"),
    "port_out_of_range": (lambda p: listener(70000) + cluster(p["up"]), "listener", "address.port"),
    "empty_endpoints": (lambda p: listener(p["l1"]) + cluster(p["up"], endpoints=0), "cluster", "endpoints"),
    "unknown_enum": (lambda p: listener(p["l1"]) + cluster(p["up"], lb="7"), "cluster", "lb_policy"),
    "empty_listener_name": (lambda p: listener(p["l1"], name="") + cluster(p["up"]), "listener", "name"),
    "bad_ip": (lambda p: listener(p["l1"], addr="300.1.2.3") + cluster(p["up"]), "listener", "address.address"),
}


@pytest.fixture
def bundle_ports(ports):
    return {"l1": ports.get(), "l2": ports.get(), "up": ports.get(), "admin_port": ports.get()}


def write_pb(workdir, name, text, meshctl_bin, proto_path, values):
    tp = workdir / f"{name}.textproto"
    tp.write_text(render(text + ADMIN, values))
    return encode(meshctl_bin, proto_path, tp, workdir / f"{name}.pb")


def run_meshd(meshd_bin, pb):
    # Even a wrongly accepted bundle only binds ports allocated for this test;
    # the timeout keeps a meshd that wrongly starts from hanging the test.
    cmd = [str(meshd_bin), "--bundle", str(pb), "--concurrency", "1"]
    try:
        return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"meshd accepted the bad bundle {pb} and kept running (killed after {TIMEOUT}s); stderr:\n{e.stderr!r}")


def error_lines(out):
    return [l for l in out.decode(errors="replace").splitlines() if l.startswith("error:")]


def check_rejected(meshd_bin, meshctl_bin, proto_path, pb, resource, field, field_prefix=False):
    r = run_meshd(meshd_bin, pb)
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 2, f"meshd --bundle {pb.name} exited {r.returncode}, expected 2; stderr:\n{err}"
    lines = error_lines(r.stderr)
    assert lines, f"no `error:` line on stderr:\n{err}"
    parsed = []
    for l in lines:
        mt = LINE_RE.match(l)
        assert mt, f"malformed error line (want `error: FILE: RESOURCE: FIELD: REASON`): {l!r}"
        assert mt["file"] in (str(pb), pb.name), f"error line does not name the file {pb}: {l!r}"
        parsed.append(mt)
    if field_prefix:
        hit = [mt for mt in parsed if mt["resource"].startswith(resource) and mt["field"].startswith(field)]
    else:
        hit = [mt for mt in parsed if mt["resource"].startswith(resource) and mt["field"] == field]
    assert hit, f"no error line with resource {resource!r}... and field {field!r}{'...' if field_prefix else ''}:\n" + "\n".join(lines)

    v = meshctl(meshctl_bin, proto_path, "validate", pb, timeout=TIMEOUT)
    vout = v.stdout + v.stderr
    assert v.returncode == 2, f"meshctl validate exited {v.returncode}, expected 2:\n{vout.decode(errors='replace')}"
    assert error_lines(vout) == lines, (
        "meshctl validate and meshd print different error lines:\nmeshd:\n"
        + "\n".join(lines)
        + "\nmeshctl:\n"
        + "\n".join(error_lines(vout))
    )
    return lines


@pytest.mark.parametrize("case", list(TEXT_CASES))
def test_bad_bundle(case, meshd_bin, meshctl_bin, proto_path, workdir, bundle_ports):
    build, resource, field = TEXT_CASES[case]
    pb = write_pb(workdir, case, build(bundle_ports), meshctl_bin, proto_path, bundle_ports)
    check_rejected(meshd_bin, meshctl_bin, proto_path, pb, resource, field)


def test_trailing_garbage(meshd_bin, meshctl_bin, proto_path, workdir, bundle_ports):
    good = write_pb(workdir, "good", valid_text(bundle_ports), meshctl_bin, proto_path, bundle_ports)
    pb = workdir / "trailing.pb"
    # 0x07: field number 0 with wire type 7, invalid in any protobuf message.
    pb.write_bytes(good.read_bytes() + b"\x07garbage")
    check_rejected(meshd_bin, meshctl_bin, proto_path, pb, "bundle", "", field_prefix=True)


def test_truncated(meshd_bin, meshctl_bin, proto_path, workdir, bundle_ports):
    good = write_pb(workdir, "good", valid_text(bundle_ports), meshctl_bin, proto_path, bundle_ports)
    data = good.read_bytes()
    # The bundle starts with listeners[0]: tag 0x0a, one-byte length, body.
    assert data[0] == 0x0A and data[1] < 0x80, data[:4]
    cut = 2 + data[1] // 2  # the middle of listeners[0]
    pb = workdir / "truncated.pb"
    pb.write_bytes(data[:cut])
    check_rejected(meshd_bin, meshctl_bin, proto_path, pb, "bundle", "listeners[0]", field_prefix=True)


def test_valid_bundle_validates(meshctl_bin, proto_path, workdir, bundle_ports):
    pb = write_pb(workdir, "good", valid_text(bundle_ports), meshctl_bin, proto_path, bundle_ports)
    v = meshctl(meshctl_bin, proto_path, "validate", pb)
    assert v.returncode == 0, v.stderr.decode(errors="replace")
    assert v.stdout.decode().strip() == f"{pb}: ok"


def mint_for(example, cwd):
    """Runs the certs/mint commands `example`'s header lists, in `cwd`."""
    for args in MINT_LINE.findall(example.read_text()):
        r = subprocess.run(["bash", str(REPO / "certs" / "mint"), *shlex.split(args)], cwd=cwd,
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT)
        assert r.returncode == 0, f"{example.name}: certs/mint {args}: exit {r.returncode}\n{r.stderr.decode()}"


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_encodes_validates_roundtrips(example, meshctl_bin, proto_path, workdir):
    mint_for(example, workdir)
    pb = encode(meshctl_bin, proto_path, example, workdir / f"{example.stem}.pb")
    v = meshctl(meshctl_bin, proto_path, "validate", pb, cwd=workdir)
    assert v.returncode == 0, f"validate {example.name}: exit {v.returncode}\n{(v.stdout + v.stderr).decode(errors='replace')}"
    assert v.stdout.decode().strip() == f"{pb}: ok"

    d = meshctl(meshctl_bin, proto_path, "decode", pb)
    assert d.returncode == 0, d.stderr.decode(errors="replace")
    text2 = workdir / f"{example.stem}.decoded.textproto"
    text2.write_bytes(d.stdout)
    pb2 = encode(meshctl_bin, proto_path, text2, workdir / f"{example.stem}.2.pb")
    assert pb2.read_bytes() == pb.read_bytes(), f"decode -> encode changed the bundle; decoded text:\n{d.stdout.decode()}"
    d2 = meshctl(meshctl_bin, proto_path, "decode", pb2)
    assert d2.stdout == d.stdout


def test_examples_exist():
    assert EXAMPLES, "no proto/examples/*.textproto found"
    assert any("tls {" in e.read_text() for e in EXAMPLES), "no TLS / mTLS example in proto/examples/"
