# SPDX-License-Identifier: Apache-2.0
"""The README says what the code does: its meshctl command lines run as
written, its error line is meshctl's, its `meshd` usage lists the flags
`meshd --help` lists, every metric name it gives is a family of a running
meshd's /stats/prometheus, its admin requests are served and listed by
`GET /`, the files it points to exist, and its demo client calls through
meshd. (The examples themselves: test_bundle_errors.py and CTest example.*.)"""
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from env.meshd import encode, meshctl

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
TIMEOUT = 30


def section(title):
    """The README's text under `## title`, up to the next `## `."""
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.M | re.S)
    assert m, f"README has no section '## {title}'"
    return m.group(1)


def code_lines(text):
    """Lines of the indented (4 spaces) code blocks of `text`, comments cut."""
    return [re.sub(r"\s+#.*$", "", l[4:]).rstrip() for l in text.splitlines() if l.startswith("    ")]


# -- commands -----------------------------------------------------------------------------


def test_meshctl_lines_run(meshctl_bin, meshd_bin, proto_path, workdir):
    lines = code_lines(section("Configuration: bundles"))
    ctl = [l for l in lines if l.startswith("build/release/xds/meshctl ")]
    assert {l.split()[1] for l in ctl} >= {"encode", "validate", "decode"}, lines
    # The paths the README gives are where the build puts the binaries.
    assert meshctl_bin.parts[-2:] == ("xds", "meshctl") and meshd_bin.parts[-2:] == ("sidecar", "meshd")
    shutil.copyfile(REPO / "proto" / "examples" / "tcp_proxy.textproto", workdir / "my.textproto")
    env = {"MESHCTL_PROTO_PATH": str(proto_path), "PATH": "/usr/bin:/bin"}
    for l in ctl:
        cmd = l.replace("build/release/xds/meshctl", shlex.quote(str(meshctl_bin)), 1)
        r = subprocess.run(["sh", "-c", cmd], cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=TIMEOUT)
        assert r.returncode == 0, f"README line `{l}`: exit {r.returncode}\n{r.stderr.decode(errors='replace')}"
    run = [l for l in lines if l.startswith("build/release/sidecar/meshd ")]
    assert run == ["build/release/sidecar/meshd --bundle my.pb"], run
    assert (workdir / "my.pb").stat().st_size > 0


def test_error_line_is_meshctls(meshctl_bin, proto_path, workdir):
    """The README's first example error line, from the bundle it describes."""
    want = next(l.strip() for l in README.splitlines() if l.strip().startswith('error: my.pb: listener "in"'))
    (workdir / "my.textproto").write_text(
        'listeners { name: "in" address { address: "127.0.0.1" port: 15999 } tcp_proxy { cluster: "nope" } }\n'
        'clusters { name: "app" endpoints { address { address: "127.0.0.1" port: 8080 } } }\n')
    encode(meshctl_bin, proto_path, workdir / "my.textproto", workdir / "my.pb")
    r = meshctl(meshctl_bin, proto_path, "validate", "my.pb", cwd=workdir)
    assert r.returncode == 2
    assert want in r.stderr.decode().splitlines(), f"README: {want}\nmeshctl:\n{r.stderr.decode()}"


def test_usage_flags_match_help(meshd_bin):
    usage = " ".join(l for l in code_lines(section("Running meshd")) if l)
    assert usage.startswith("meshd ["), usage
    r = subprocess.run([str(meshd_bin), "--help"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    flags = lambda s: set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", s))  # noqa: E731
    assert flags(usage) == flags(r.stdout + r.stderr), f"README: {sorted(flags(usage))}\n--help:\n{r.stdout}"
    levels = re.search(r"--log-level ([a-z|]+)\]", usage).group(1).split("|")
    help_levels = re.search(r"--log-level LEVEL\s+(.*)", r.stdout).group(1)
    assert all(re.search(rf"\b{lv}\b", help_levels) for lv in levels), (levels, help_levels)


def test_referenced_files_exist():
    refs = set(re.findall(r"`((?:proto|scripts|certs|sidecar|xds|bench|integration)/[\w./-]*\w)`", README))
    refs |= set(re.findall(r"(?<![\w/])((?:proto/examples|scripts)/[\w.-]+\.(?:textproto|py|sh))", README))
    assert "proto/examples/tls_mtls.textproto" in refs, "the README does not point to the TLS example"
    missing = sorted(r for r in refs if not (REPO / r).exists())
    assert not missing, f"the README names files that do not exist: {missing}"


def test_grpcurl_line_names_real_things():
    """grpcurl is not run (no Debian package; test_grpcurl.py runs it where
    installed), but what its line names exists: the proto file, the service
    and method, the request field, and the default bundle's port."""
    lines = code_lines(section("The two commands (fresh Debian 12, as root or with sudo)"))
    i = next(i for i, l in enumerate(lines) if l.startswith("grpcurl "))
    cmd = lines[i]
    while cmd.endswith("\\"):
        i += 1
        cmd = cmd[:-1] + lines[i]
    argv = shlex.split(cmd)
    opt = {argv[i]: argv[i + 1] for i in range(len(argv) - 1) if argv[i].startswith("-")}
    proto = (REPO / opt["-import-path"] / opt["-proto"]).read_text()
    service, method = argv[-1].rsplit("/", 1)
    package, name = service.rsplit(".", 1)
    assert f"package {package};" in proto and f"service {name} {{" in proto and f"rpc {method}(" in proto, argv
    field = next(iter(json.loads(opt["-d"])))
    assert re.search(rf"^\s+\w+ {field} = \d+;", proto, re.M), f"no field {field!r} in {opt['-proto']}"
    default = (REPO / "xds" / "default_bundle.textproto").read_text()
    assert f"port: {argv[-2].rsplit(':', 1)[1]} " in default, argv[-2]


def test_mint_lines_are_the_examples():
    """The README's certs/mint lines for the TLS example are the ones its
    header lists (which test_bundle_errors.py runs before validating it)."""
    readme = [l for l in code_lines(section("mTLS and SPIFFE identities")) if l.startswith("certs/mint ")]
    example = (REPO / "proto" / "examples" / "tls_mtls.textproto").read_text()
    header = [l[4:] for l in example.splitlines() if l.startswith("#   certs/mint ")]
    assert readme and readme == header, f"README: {readme}\nexample: {header}"


# -- a running meshd ------------------------------------------------------------------------

# `name` or `_suffix` in backticks, optionally followed by {labels}: a suffix
# stands for the last full name with its tail replaced.
METRIC_RE = re.compile(r"`(meshd_[a-z0-9_]+|_[a-z0-9_]+)(?=[`{])")


def readme_metrics():
    """(written, candidates): each metric token of the README, and the
    names it may stand for."""
    out, last = [], None
    for tok in METRIC_RE.findall(README):
        if tok.startswith("meshd_"):
            last = tok
            out.append((tok, {tok}))
        elif last:
            cuts = [m.start() for m in re.finditer("_", last)]
            out.append((tok, {last[:c] + tok for c in cuts}))
    return out


def test_metric_names_exist(meshd, backends):
    m = meshd("tcp_basic", upstream_port=backends.echo().port, concurrency=1)
    families = set(re.findall(r"^# TYPE (\S+) ", m.stats_text(), re.M))
    assert families, "no # TYPE line in /stats/prometheus"
    written = readme_metrics()
    assert len(written) > 50, written  # the parse found the lists
    wrong = [tok for tok, names in written if not names & families]
    assert not wrong, f"README metric names that /stats/prometheus does not have: {wrong}"


def test_admin_requests(meshd, backends):
    rows = re.findall(r"^\| `(GET|POST) (/[\w/]*)` \|", section("Admin (127.0.0.1:15000 by default)"), re.M)
    assert ("GET", "/stats/prometheus") in rows and ("POST", "/drain") in rows, rows
    m = meshd("tcp_basic", upstream_port=backends.echo().port, concurrency=1)
    status, index = m.admin_get("/")
    assert status == 200
    listed = set(re.findall(r"^\s+(GET|POST)\s+(/\S*)", index, re.M))
    for method, path in rows:
        if path != "/":
            assert (method, path) in listed, f"GET / does not list {method} {path}:\n{index}"
        if method == "GET":  # POST /drain would drain this meshd
            status, body = m.admin_get(path)
            assert status == 200, f"GET {path} -> {status}: {body[:200]!r}"


def test_demo_client(echo_service):
    """The README's demo step: the Python client, through meshd to the demo
    app (test.v1.Echo; here on test ports instead of 15006 -> 8080)."""
    line = next(l for l in code_lines(section("The two commands (fresh Debian 12, as root or with sudo)"))
                if "demo_client.py" in l)
    argv = shlex.split(line)
    assert argv[0] == "/usr/bin/python3", line
    svc = echo_service()
    r = subprocess.run([*argv, f"127.0.0.1:{svc.port}"], cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "Unary" in r.stdout and "ServerStream" in r.stdout, r.stdout
