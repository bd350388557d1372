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
  echo_stubs, grpc_backend, h2_backend, through, echo_service, h2_service
                                       HTTP/2 and gRPC peers: see the section at the end
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
    """Free TCP ports on 127.0.0.1 for servers the tests start, below the
    kernel's ephemeral range (32768-60999): a port the kernel hands out as
    port 0 may meanwhile become the source port of one of the many outgoing
    connections the suites make, and the server's bind then fails. Each
    pytest process scans from its own offset (ctest runs two at once), checks
    the port is free with a bind, and never hands a port out twice."""

    LOW, HIGH = 20000, 32000

    def __init__(self):
        self._given = set()
        self._lock = threading.Lock()
        self._next = self.LOW + (os.getpid() * 7919) % (self.HIGH - self.LOW)

    @staticmethod
    def _free(port):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False
        finally:
            s.close()

    def get(self):
        with self._lock:
            for _ in range(self.HIGH - self.LOW):
                port = self._next
                self._next = self.LOW if port + 1 >= self.HIGH else port + 1
                if port not in self._given and self._free(port):
                    self._given.add(port)
                    return port
        raise RuntimeError(f"no free port in {self.LOW}-{self.HIGH}")

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

    def sink(self, reply="digest", reply_seed=1, hold=False):
        return self._add(_backends.SinkServer(reply=reply, reply_seed=reply_seed, hold=hold))

    def source(self, nbytes, seed=0, then="close", chunk=_backends.CHUNK):
        return self._add(_backends.SourceServer(nbytes, seed=seed, then=then, chunk=chunk))

    def counting(self):
        return self._add(_backends.CountingServer())

    def refusing(self):
        return self._add(_backends.RefusingPort())

    def resetting(self, expect, reply=0, reply_seed=1):
        return self._add(_backends.ResettingServer(expect, reply=reply, reply_seed=reply_seed))

    def end_observer(self, mode, nbytes=1 << 40, seed=0):
        return self._add(_backends.EndObserver(mode, nbytes=nbytes, seed=seed))

    def manual(self):
        return self._add(_backends.ManualServer())

    def black_hole(self, fillers=2):
        return self._add(_backends.BlackHolePort(fillers=fillers))

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


# -- HTTP/2 and gRPC peers ----------------------------------------------------------
# echo_stubs     session: test.v1.Echo Python stubs generated from
#                proto/test/v1/echo.proto into a tmp dir: (pb2, pb2_grpc, dir)
# grpc_backend   per test: factory(name="echo") -> started env.grpc_backend.GrpcBackend
#                (a separate server process), stopped by PID at teardown
# h2_backend     per test: factory(name="h2", **kw) -> started env.h2_backend.H2Backend
#                (kw: max_concurrent_streams, answer_pings)
# h2_limits      per test: factory(backend_kw={}, concurrency=1, **values) ->
#                (H2Backend, Meshd): bundles/h2_limits (listener http2 options,
#                cluster pool) in front of a fresh H2Backend
# through        per test: factory(bundle, direct_port, **values) -> the port a client
#                uses: meshd's {listen_port} (meshd started from the bundle), or
#                with MESHD_IT_DIRECT=1 the backend's own port `direct_port`, to
#                check the tests themselves against the backends, without meshd.
#                through.meshd is the Meshd (None when direct).
# Tests marked proxy_only (no route, upstream down, splits, rewrites) are
# skipped when MESHD_IT_DIRECT=1; MESHD_IT_DIRECT=all runs them too (to check
# their mechanics; their proxy assertions then fail, as they must).
DIRECT = os.environ.get("MESHD_IT_DIRECT") in ("1", "all")


def pytest_configure(config):
    config.addinivalue_line("markers", "proxy_only: needs meshd (skipped with MESHD_IT_DIRECT=1)")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("MESHD_IT_DIRECT") == "1":
        skip = pytest.mark.skip(reason="MESHD_IT_DIRECT=1: this test needs meshd")
        for item in items:
            if "proxy_only" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def echo_stubs(tmp_path_factory):
    from env import grpc_backend

    proto_root = Path(os.environ.get("MESHCTL_PROTO_PATH") or HERE.parent / "proto").resolve()
    d = grpc_backend.generate_stubs(proto_root, tmp_path_factory.mktemp("echo_stubs"))
    pb, pbg = grpc_backend.import_stubs(d)
    return pb, pbg, d


@pytest.fixture
def grpc_backend(echo_stubs, ports, workdir, request):
    from env.grpc_backend import GrpcBackend, started_backends

    yield from started_backends(
        request,
        lambda name="echo": GrpcBackend(echo_stubs[2], ports.get(), ports.get(), workdir, name=name))


@pytest.fixture
def h2_backend():
    from env.h2_backend import H2Backend

    started = []

    def make(name="h2", **kw):
        b = H2Backend(name=name, **kw)
        started.append(b)
        return b.start()

    yield make
    for b in started:
        b.stop()


@pytest.fixture
def through(request):
    # meshd is set up before this fixture (so torn down after it, and after
    # fixtures using this one, which close their clients first).
    factory = None if DIRECT else request.getfixturevalue("meshd")

    def make(bundle, direct_port, **values):
        if DIRECT:
            return direct_port
        m = factory(bundle, **values)
        make.meshd = m
        return m.listen_port

    make.meshd = None
    return make


class EchoService:
    """One test.v1.Echo backend, reached through meshd (or directly with
    MESHD_IT_DIRECT=1). port: what clients dial; backend: the GrpcBackend;
    meshd: the Meshd or None; pb: echo_pb2. channel()/stub() make clients
    that are closed at teardown."""

    def __init__(self, backend, port, meshd, stubs):
        self.backend = backend
        self.port = port
        self.meshd = meshd
        self.pb, self.pbg, _ = stubs
        self._channels = []

    def channel(self, **kw):
        from env.clients import grpc_channel

        ch = grpc_channel(self.port, **kw)
        self._channels.append(ch)
        return ch

    def stub(self, channel=None, service="Echo"):
        return getattr(self.pbg, f"{service}Stub")(channel or self.channel())

    def close(self):
        for ch in self._channels:
            ch.close()
        self._channels.clear()


@pytest.fixture
def echo_service(grpc_backend, through, echo_stubs):
    """Factory: echo_service(bundle="grpc_basic", route_timeout_ms=0, **values)
    -> EchoService: a fresh backend, and meshd from `bundle` with
    {upstream_port} pointing at it (unless given in values)."""
    made = []

    def make(bundle="grpc_basic", route_timeout_ms=0, backend_name="echo", **values):
        b = grpc_backend(backend_name)
        values.setdefault("upstream_port", b.port)
        port = through(bundle, b.port, route_timeout_ms=route_timeout_ms, **values)
        svc = EchoService(b, port, through.meshd, echo_stubs)
        made.append(svc)
        return svc

    yield make
    for svc in made:
        svc.close()


@pytest.fixture
def h2_service(h2_backend, through, backends):
    """Factory: h2_service(bundle="h2_basic", route_timeout_ms=1000, **values)
    -> (H2Backend, port): a fresh HTTP/2 backend and meshd in front of it
    ({down_port} refuses connections), or the backend directly."""

    def make(bundle="h2_basic", route_timeout_ms=1000, **values):
        b = h2_backend()
        values.setdefault("upstream_port", b.port)
        if "{down_port}" in load_bundle(bundle) and "down_port" not in values:
            values["down_port"] = backends.refusing().port
        return b, through(bundle, b.port, route_timeout_ms=route_timeout_ms, **values)

    return make


H2_LIMITS_DEFAULTS = {
    "listener_max_streams": 0,
    "route_timeout_ms": 0,
    "pool_max_streams": 0,
    "max_connections": 0,
    "pool_idle_ms": 0,
    "keepalive_ms": 0,
}


@pytest.fixture
def h2_limits(h2_backend, meshd):
    """Factory: h2_limits(backend_kw=None, concurrency=1, **values) ->
    (H2Backend, Meshd) for bundles/h2_limits.textproto; values not given are
    0 (meshd's defaults). One worker by default, so every downstream
    connection shares one upstream pool."""

    def make(backend_kw=None, concurrency=1, **values):
        b = h2_backend(**(backend_kw or {}))
        vals = {**H2_LIMITS_DEFAULTS, **values}
        vals.setdefault("upstream_port", b.port)
        m = meshd("h2_limits", concurrency=concurrency, **vals)
        return b, m

    return make
