# SPDX-License-Identifier: Apache-2.0
"""Session fixtures for the meshd integration tests.

Environment:
  MESHD_BIN            path to the meshd binary (required)
  MESHCTL_BIN          path to the meshctl binary (required)
  MESHCTL_PROTO_PATH   proto include root (default: the source tree's proto/)

Fixtures:
  meshd_bin, meshctl_bin, proto_path   session: paths, checked once
  ports                                session: free loopback ports, never repeated
  workdir                              a tmp dir per test (logs, bundles)
  backends                             per test: start TCP backends, stopped at teardown
  meshd                                per test: factory starting meshd from a bundle
                                       template; stopped at teardown, and the test
                                       fails on a non-zero exit or a sanitizer report
"""
import os
import socket
import sys
import threading
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from env import backends as _backends  # noqa: E402
from env.meshd import PLACEHOLDER_RE, Meshd, MeshdError  # noqa: E402

BUNDLES = HERE / "bundles"
# Values for optional placeholders of the files in bundles/.
BUNDLE_DEFAULTS = {"idle_timeout_ms": 0, "disable_splice": "false"}


def _required_exe(var):
    val = os.environ.get(var)
    if not val:
        pytest.fail(
            f"{var} is not set: point it at the built binary "
            f"(ctest sets it; by hand e.g. {var}=build/release/...)",
            pytrace=False,
        )
    p = Path(val).resolve()
    if not (p.is_file() and os.access(p, os.X_OK)):
        pytest.fail(f"{var}={val}: not an executable file", pytrace=False)
    return p


@pytest.fixture(scope="session")
def meshd_bin():
    return _required_exe("MESHD_BIN")


@pytest.fixture(scope="session")
def meshctl_bin():
    return _required_exe("MESHCTL_BIN")


@pytest.fixture(scope="session")
def proto_path():
    val = os.environ.get("MESHCTL_PROTO_PATH")
    p = Path(val).resolve() if val else (HERE.parent / "proto")
    if not (p / "mesh" / "v1" / "bundle.proto").is_file():
        pytest.fail(f"proto path {p}: mesh/v1/bundle.proto not found", pytrace=False)
    return p


class PortAllocator:
    """Free TCP ports on 127.0.0.1: bind port 0, read the port, close. Ports
    already handed out in this session are never handed out again."""

    def __init__(self):
        self._given = set()
        self._lock = threading.Lock()

    def get(self):
        with self._lock:
            for _ in range(200):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    s.bind(("127.0.0.1", 0))
                    port = s.getsockname()[1]
                finally:
                    s.close()
                if port not in self._given:
                    self._given.add(port)
                    return port
        raise RuntimeError("no fresh free port after 200 tries")

    def __call__(self):
        return self.get()


@pytest.fixture(scope="session")
def ports():
    return PortAllocator()


@pytest.fixture
def workdir(tmp_path):
    return tmp_path


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


class Backends:
    """Starts backends for one test and stops them all at teardown."""

    def __init__(self):
        self._all = []

    def _add(self, b):
        self._all.append(b)
        return b.start()

    def echo(self):
        return self._add(_backends.EchoServer())

    def sink(self, reply="digest", reply_seed=1):
        return self._add(_backends.SinkServer(reply=reply, reply_seed=reply_seed))

    def source(self, nbytes, seed=0, then="close"):
        return self._add(_backends.SourceServer(nbytes, seed=seed, then=then))

    def counting(self):
        return self._add(_backends.CountingServer())

    def refusing(self):
        return self._add(_backends.RefusingPort())

    def stop_all(self):
        for b in reversed(self._all):
            b.stop()
        self._all.clear()


@pytest.fixture
def backends():
    b = Backends()
    yield b
    b.stop_all()


def load_bundle(name):
    """Text of integration/bundles/<name>.textproto (with {placeholders})."""
    return (BUNDLES / f"{name}.textproto").read_text()


@pytest.fixture
def meshd(request, meshd_bin, meshctl_bin, proto_path, workdir, ports):
    """Factory: meshd(bundle_text_or_name, **values, concurrency=2,
    drain_timeout=10, nofile=None, extra_args=()) -> started Meshd.
    `bundle` may be the name of a file in integration/bundles/. {admin_port}
    is allocated automatically (and an admin block added if missing), so is
    any other {*_port} placeholder not given; read them back from m.values
    (e.g. m.values["listen_port"])."""
    started = []

    def make(bundle, concurrency=2, drain_timeout=10, nofile=None, extra_args=(), **values):
        text = load_bundle(bundle) if "\n" not in bundle and (BUNDLES / f"{bundle}.textproto").exists() else bundle
        values = {**BUNDLE_DEFAULTS, **values}
        for ph in PLACEHOLDER_RE.findall(text):
            if ph.endswith("_port") and ph != "admin_port" and ph not in values:
                values[ph] = ports.get()  # e.g. {listen_port}: allocated here
        m = Meshd(
            meshd_bin,
            meshctl_bin,
            proto_path,
            workdir,
            text,
            admin_port=values.pop("admin_port", None) or ports.get(),
            values=values,
            concurrency=concurrency,
            drain_timeout=drain_timeout,
            nofile=nofile,
            extra_args=extra_args,
        )
        started.append(m)
        m.start()
        return m

    yield make

    failed = getattr(request.node, "rep_call", None)
    errors = []
    for m in started:
        if failed is not None and failed.failed and m.proc is not None:
            sys.stderr.write(f"\n--- {m.name} stderr tail ({m.stderr_path}) ---\n{m.log_tail(60)}\n")
        try:
            m.stop()
        except MeshdError as e:
            errors.append(str(e))
    if errors:
        pytest.fail("\n\n".join(errors), pytrace=False)

