# SPDX-License-Identifier: Apache-2.0
"""The test.v1.Echo gRPC server (proto/test/v1/echo.proto) as its own process.

It runs in a separate /usr/bin/python3 process so that it does not share the
GIL with the test's client (or slow it down). It serves the same servicer on
two loopback ports: `port` (the one meshd routes to) and `control_port`, on
which the tests ask Observe() what the server saw, without going through meshd.

    stubs = generate_stubs(proto_root, out_dir)        # once per session
    b = GrpcBackend(stubs, port, control_port, workdir, name="a").start()
    b.observations(id="x") -> {"calls": [...], "max_active": n, "peers": [...]}
    b.wait_call(id, pred, timeout)  -> the call's record once pred(record) holds
    b.stop()                        -> SIGTERM by PID, bounded wait, SIGKILL last

    b.arrive(barrier, count)        -> joins a barrier from the control port

ServerStream with `barrier` set sends its first response, then waits at the
barrier (with barrier_count, barrier_timeout_ms) before the rest: a gate the
test opens with arrive(barrier, barrier_count). (Unary waits at it before
answering.)

Each call's record (JSON from Observe):
  id, method, seq (arrival order), peer, metadata [[key, base64 value], ...]
  (as the server received them, in order, reserved gRPC headers excluded),
  time_remaining (seconds left of the call's deadline at arrival, null if
  none), messages_in, bytes_in, responses_out, cancelled (the call ended
  cancelled: by the client, an RST_STREAM or its deadline; as grpcio's
  server records it), ended (the call is over), returned (the handler
  finished), time_remaining_at_end.

With tls={"cert_chain": PATH, "key": PATH, "ca": PATH or None,
"require_client_auth": bool} the service port speaks TLS
(grpc.ssl_server_credentials; the control port stays plaintext), and each
call's record also has peer_identities (the verified client certificate's
SANs, or CN; [] without one) and transport_security ("ssl" / "insecure").

Server: `python3 grpc_backend.py --stubs DIR --port P --control-port C --name N`
[--tls-cert CHAIN --tls-key KEY [--tls-ca CA] [--tls-require-client-auth]].
The demo (scripts/run-demo.sh, scripts/demo_client.py) uses this module too,
as a top-level import: keep generate_stubs() and the flags stable, and the
module's top-level imports standard-library only.
"""
import argparse
import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
START_DEADLINE = 30.0
MAX_MESSAGE = 80 * 1024 * 1024  # the 64 MiB test's message plus room
SERVER_THREADS = 256  # > 100 concurrent streams + control calls
OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
]


def generate_stubs(proto_root, out_dir):
    """Generate echo_pb2.py / echo_pb2_grpc.py from proto_root/test/v1/echo.proto
    into out_dir with Debian's grpc_tools. Flat module names on purpose: a
    `test` package would collide with the standard library's."""
    src = Path(proto_root) / "test" / "v1"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        [
            "/usr/bin/python3",
            "-m",
            "grpc_tools.protoc",
            f"-I{src}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            "echo.proto",
        ],
        capture_output=True,
        timeout=60,
    )
    if r.returncode != 0:
        raise RuntimeError(f"grpc_tools.protoc failed ({r.returncode}): {r.stderr.decode(errors='replace')}")
    return out_dir


def import_stubs(stubs_dir):
    """(echo_pb2, echo_pb2_grpc) from a generate_stubs() dir."""
    d = str(stubs_dir)
    if d not in sys.path:
        sys.path.insert(0, d)
    import echo_pb2  # noqa: E402
    import echo_pb2_grpc  # noqa: E402

    return echo_pb2, echo_pb2_grpc


def det_payload(n, seed=7):
    """n deterministic bytes (same as on the client side)."""
    block = hashlib.sha256(f"echo-{seed}".encode()).digest() * 2048  # 64 KiB
    reps, rest = divmod(n, len(block))
    return block * reps + block[:rest]


def _pdeathsig_prefix():
    p = shutil.which("setpriv")
    return [p, "--pdeathsig", "KILL", "--"] if p else []


def started_backends(request, build):
    """The body of a factory fixture (`yield from started_backends(request,
    build)`): the test gets make(*a, **kw) -> build(*a, **kw).start(); every
    backend made is stopped at teardown, and when the test failed its log
    tail goes to stderr."""
    started = []

    def make(*a, **kw):
        b = build(*a, **kw)
        started.append(b)
        return b.start()

    yield make
    failed = getattr(request.node, "rep_call", None)
    for b in started:
        b.stop()
        if failed is not None and failed.failed:
            sys.stderr.write(f"\n--- backend {b.name} log tail ---\n{b.log()[-3000:]}\n")


class GrpcBackend:
    """Controller for one server process (runs in the test process)."""

    def __init__(self, stubs_dir, port, control_port, workdir, name="echo", tls=None):
        self.stubs_dir = Path(stubs_dir)
        self.tls = tls
        self.port = port
        self.control_port = control_port
        self.name = name
        self.log_path = Path(workdir) / f"grpc-{name}-{port}.log"
        self.proc = None
        self._channel = None
        self._stub = None

    @property
    def pid(self):
        return self.proc.pid

    def argv(self):
        return [
            "/usr/bin/python3",
            str(HERE / "grpc_backend.py"),
            "--stubs",
            str(self.stubs_dir),
            "--port",
            str(self.port),
            "--control-port",
            str(self.control_port),
            "--name",
            self.name,
        ] + self._tls_argv()

    def _tls_argv(self):
        if not self.tls:
            return []
        out = ["--tls-cert", str(self.tls["cert_chain"]), "--tls-key", str(self.tls["key"])]
        if self.tls.get("ca"):
            out += ["--tls-ca", str(self.tls["ca"])]
        if self.tls.get("require_client_auth", True):
            out.append("--tls-require-client-auth")
        return out

    def start(self):
        import grpc

        pb, pbg = import_stubs(self.stubs_dir)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                _pdeathsig_prefix() + self.argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        # Readiness: poll until both ports accept a TCP connection (bounded),
        # then one Observe() on the control port.
        deadline = time.monotonic() + START_DEADLINE
        last = None
        for _ in range(int(START_DEADLINE / 0.02) + 100):
            if self.proc.poll() is not None:
                self._fail(f"exited with {self.proc.returncode} before becoming ready")
            try:
                for p in (self.control_port, self.port):
                    socket.create_connection(("127.0.0.1", p), timeout=1.0).close()
                break
            except OSError as e:
                last = e
            if time.monotonic() >= deadline:
                self.stop()
                self._fail(f"not listening after {START_DEADLINE}s (last: {last!r})")
            time.sleep(0.02)  # poll interval
        self._channel = grpc.insecure_channel(
            f"127.0.0.1:{self.control_port}", options=[("grpc.enable_http_proxy", 0)]
        )
        self._stub = pbg.EchoStub(self._channel)
        try:
            self._stub.Observe(pb.ObserveRequest(id="\0none"), timeout=10.0, wait_for_ready=True)
        except grpc.RpcError as e:
            self.stop()
            self._fail(f"Observe() on the control port failed: {e.code()} {e.details()}")
        if self.proc.poll() is not None:  # someone else answered on our ports
            self._fail(f"exited with {self.proc.returncode} while starting")
        return self

    def _fail(self, msg):
        log = self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""
        raise AssertionError(f"grpc backend {self.name} (port {self.port}): {msg}\n--- log ---\n{log}")

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def observations(self, id=""):
        pb, _ = import_stubs(self.stubs_dir)
        r = self._stub.Observe(pb.ObserveRequest(id=id), timeout=10.0)
        return json.loads(r.json)

    def calls(self, id=""):
        return self.observations(id)["calls"]

    def arrive(self, barrier, count, timeout=30.0):
        """Wait at `barrier` as one of `count` calls (a Unary call on the
        control port, not through the proxy): releases the calls waiting
        there once `count` have arrived. Returns the response."""
        pb, _ = import_stubs(self.stubs_dir)
        return self._stub.Unary(
            pb.EchoRequest(id=f"arrive-{barrier}", barrier=barrier, barrier_count=count,
                           barrier_timeout_ms=int(timeout * 1000)),
            timeout=timeout + 5,
        )

    def wait_call(self, id, pred=lambda c: True, timeout=15.0, what=None):
        """Poll until a call with this id exists and pred(call) holds; returns
        that call record. Bounded in time and iterations."""
        from env.clients import wait_until

        def check():
            for c in self.calls(id):
                if pred(c):
                    return c
            return None

        return wait_until(check, timeout=timeout, interval=0.05, what=what or f"call {id!r} on {self.name}")

    def stop(self, timeout=15.0):
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # by PID
            return self.proc.wait(10)


# -- the server process -----------------------------------------------------------


def _serve(args):
    from concurrent import futures

    import grpc

    pb, pbg = import_stubs(args.stubs)

    lock = threading.Lock()
    cond = threading.Condition(lock)
    calls = []
    state = {"active": 0, "max_active": 0, "peers": set(), "seq": 0}
    barriers = {}  # name -> number of calls waiting (max seen kept in barrier_max)
    barrier_max = {}

    def _client_cancelled(ctx):
        """Did the call end cancelled (client cancel, RST_STREAM, deadline)?
        grpcio records it in the call state when the close arrives (before
        callbacks run); None if that cannot be read."""
        try:
            from grpc import _server

            return ctx._state.client is _server._CANCELLED
        except AttributeError:
            return None

    def meta_list(ctx):
        out = []
        for k, v in ctx.invocation_metadata():
            if isinstance(v, str):
                v = v.encode("latin-1")
            out.append([k, base64.b64encode(v).decode()])
        return out

    class Call:
        """Bookkeeping for one RPC: record + cancellation event."""

        def __init__(self, ctx, method):
            self.ctx = ctx
            self.ended = threading.Event()
            tr = ctx.time_remaining()
            with lock:
                state["seq"] += 1
                state["active"] += 1
                state["max_active"] = max(state["max_active"], state["active"])
                state["peers"].add(ctx.peer())
                self.rec = {
                    "id": "",
                    "method": method,
                    "seq": state["seq"],
                    "peer": ctx.peer(),
                    "metadata": meta_list(ctx),
                    "time_remaining": tr if tr is not None and tr < 1e9 else None,
                    "messages_in": 0,
                    "bytes_in": 0,
                    "responses_out": 0,
                    "cancelled": False,
                    "ended": False,
                    "returned": False,
                    "time_remaining_at_end": None,
                    "peer_identities": [
                        i.decode("utf-8", "replace") if isinstance(i, bytes) else i
                        for i in (ctx.peer_identities() or [])
                    ],
                    "transport_security": [
                        v.decode("utf-8", "replace") if isinstance(v, bytes) else v
                        for v in ctx.auth_context().get("transport_security_type", [])
                    ],
                }
                calls.append(self.rec)
            ctx.add_callback(self._on_end)

        def _on_end(self):
            tr = self.ctx.time_remaining()
            cancelled = _client_cancelled(self.ctx)
            with lock:
                if cancelled is None:  # grpcio internals changed: best guess
                    cancelled = not self.rec["returned"]
                self.rec["cancelled"] = cancelled
                self.rec["ended"] = True
                self.rec["time_remaining_at_end"] = tr if tr is not None and tr < 1e9 else None
                state["active"] -= 1
                cond.notify_all()
            self.ended.set()

        def got(self, req):
            with lock:
                if not self.rec["id"] and req.id:
                    self.rec["id"] = req.id
                self.rec["messages_in"] += 1
                self.rec["bytes_in"] += len(req.payload)

        def sent(self):
            with lock:
                self.rec["responses_out"] += 1

        def returned(self):
            with lock:
                self.rec["returned"] = True

        def sleep(self, ms):
            """Wait ms; False if the call ended first."""
            if ms <= 0:
                return not self.ended.is_set()
            return not self.ended.wait(ms / 1000.0)

        def barrier(self, req):
            """Wait until req.barrier_count calls wait at req.barrier."""
            name, want = req.barrier, req.barrier_count
            limit = (req.barrier_timeout_ms or 30000) / 1000.0
            deadline = time.monotonic() + limit
            with cond:
                barriers[name] = barriers.get(name, 0) + 1
                barrier_max[name] = max(barrier_max.get(name, 0), barriers[name])
                cond.notify_all()
                ok = True
                while barrier_max[name] < want:
                    left = deadline - time.monotonic()
                    if left <= 0 or self.ended.is_set():
                        ok = False
                        break
                    cond.wait(min(left, 0.5))
                seen = barrier_max[name]
                barriers[name] -= 1
            return ok, seen

    codes = {c.value[0]: c for c in grpc.StatusCode}

    def finish(ctx, req):
        """Trailing metadata and the requested status (for streams, at the end)."""
        if req.trailing_metadata:
            ctx.set_trailing_metadata(md_tuple(req.trailing_metadata))
        if req.status_code:
            ctx.set_code(codes[req.status_code])
        if req.status_message:
            ctx.set_details(req.status_message)

    def md_tuple(headers):
        out = []
        for h in headers:
            out.append((h.key, bytes(h.value) if h.key.endswith("-bin") else h.value.decode("ascii")))
        return tuple(out)

    def start_response(ctx, req):
        if req.initial_metadata:
            ctx.send_initial_metadata(md_tuple(req.initial_metadata))

    def response_payload(req):
        return det_payload(req.response_size) if req.response_size > 0 else req.payload

    class Servicer(pbg.EchoServicer):
        def Unary(self, req, ctx):
            call = Call(ctx, "Unary")
            try:
                call.got(req)
                if not call.sleep(req.sleep_ms):
                    return pb.EchoResponse()
                if req.barrier:
                    ok, seen = call.barrier(req)
                    if not ok:
                        ctx.set_code(grpc.StatusCode.ABORTED)
                        ctx.set_details(f"barrier {req.barrier}: {seen} of {req.barrier_count}")
                        return pb.EchoResponse()
                start_response(ctx, req)
                finish(ctx, req)
                if req.status_code:
                    ctx.abort(codes[req.status_code], req.status_message)  # raises
                call.sent()
                return pb.EchoResponse(
                    id=req.id,
                    payload=response_payload(req),
                    server=args.name,
                    payload_sha256=hashlib.sha256(req.payload).hexdigest(),
                )
            finally:
                call.returned()

        def ClientStream(self, req_iter, ctx):
            call = Call(ctx, "ClientStream")
            try:
                first = None
                h = hashlib.sha256()
                n = nbytes = 0
                for req in req_iter:
                    call.got(req)
                    if first is None:
                        first = req
                    h.update(req.payload)
                    n += 1
                    nbytes += len(req.payload)
                first = first or pb.EchoRequest()
                if not call.sleep(first.sleep_ms):
                    return pb.EchoResponse()
                start_response(ctx, first)
                finish(ctx, first)
                if first.status_code:
                    ctx.abort(codes[first.status_code], first.status_message)  # raises
                call.sent()
                return pb.EchoResponse(
                    id=first.id,
                    server=args.name,
                    received_messages=n,
                    received_bytes=nbytes,
                    received_sha256=h.hexdigest(),
                )
            finally:
                call.returned()

        def ServerStream(self, req, ctx):
            call = Call(ctx, "ServerStream")
            try:
                call.got(req)
                if not call.sleep(req.sleep_ms):
                    return
                if req.reset_after < 0:
                    ctx.cancel()  # RST_STREAM(CANCEL), nothing sent before
                    return
                start_response(ctx, req)
                for i in range(max(req.repeat, 1)):
                    if req.reset_after and i == req.reset_after:
                        ctx.cancel()  # RST_STREAM(CANCEL) to the client
                        return
                    if i == 1 and req.barrier:
                        # A gate: the first response is out, the rest waits
                        # for the barrier (e.g. arrive() from the test).
                        ok, seen = call.barrier(req)
                        if not ok:
                            ctx.abort(grpc.StatusCode.ABORTED, f"barrier {req.barrier}: {seen} of {req.barrier_count}")
                    if i and not call.sleep(req.interval_ms):
                        return
                    yield pb.EchoResponse(id=req.id, seq=i, payload=response_payload(req), server=args.name)
                    call.sent()
                finish(ctx, req)
            finally:
                call.returned()

        def BidiStream(self, req_iter, ctx):
            call = Call(ctx, "BidiStream")
            try:
                first = None
                i = 0
                for req in req_iter:
                    call.got(req)
                    if first is None:
                        first = req
                        start_response(ctx, req)
                    if not call.sleep(req.sleep_ms):
                        return
                    yield pb.EchoResponse(id=req.id, seq=i, payload=response_payload(req), server=args.name)
                    call.sent()
                    i += 1
                if first is not None:
                    finish(ctx, first)
            finally:
                call.returned()

        def Observe(self, req, ctx):
            with lock:
                sel = [dict(c) for c in calls if not req.id or c["id"] == req.id]
                out = {
                    "calls": sel,
                    "max_active": state["max_active"],
                    "peers": sorted(state["peers"]),
                    "barrier_max": dict(barrier_max),
                }
            return pb.ObserveResponse(json=json.dumps(out))

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=SERVER_THREADS),
        options=OPTIONS + [("grpc.so_reuseport", 0)],
    )
    pbg.add_EchoServicer_to_server(Servicer(), server)
    creds = None
    if args.tls_cert:
        creds = grpc.ssl_server_credentials(
            [(Path(args.tls_key).read_bytes(), Path(args.tls_cert).read_bytes())],
            root_certificates=Path(args.tls_ca).read_bytes() if args.tls_ca else None,
            require_client_auth=args.tls_require_client_auth,
        )
    for p in (args.port, args.control_port):
        if creds is not None and p == args.port:
            bound = server.add_secure_port(f"127.0.0.1:{p}", creds)
        else:
            bound = server.add_insecure_port(f"127.0.0.1:{p}")
        if bound != p:
            sys.stderr.write(f"grpc_backend: cannot bind 127.0.0.1:{p}\n")
            sys.exit(3)
    serve_until_sigterm(server, f"grpc_backend {args.name}", args)


def serve_until_sigterm(server, label, args):
    """Runs a bound grpc.server until SIGTERM or SIGINT (the server processes'
    main loop), saying so on stderr."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.start()
    sys.stderr.write(f"{label}: serving on {args.port}, control {args.control_port}\n")
    sys.stderr.flush()
    while not stop.wait(1.0):  # until SIGTERM
        pass
    server.stop(grace=0).wait(5)


def main(argv=None):
    ap = argparse.ArgumentParser(description="test.v1.Echo server for the integration tests")
    ap.add_argument("--stubs", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--control-port", type=int, required=True)
    ap.add_argument("--name", default="echo")
    ap.add_argument("--tls-cert", help="PEM chain: serve --port over TLS")
    ap.add_argument("--tls-key")
    ap.add_argument("--tls-ca", help="PEM bundle client certificates are verified against")
    ap.add_argument("--tls-require-client-auth", action="store_true")
    _serve(ap.parse_args(argv))


if __name__ == "__main__":
    main()
