# SPDX-License-Identifier: Apache-2.0
"""Upstreams that fail on purpose, for the retry tests: a gRPC one (its own
process, like env.grpc_backend) and an HTTP/1.1 one (threads in the test).

Both record every attempt they see, with the x-meshd-attempt-count meshd
sends, so a test can tell exactly how many attempts a call made, in what
order, and where each one went.

-- FlakyGrpcBackend ----------------------------------------------------------------
The test.v1.Echo service (stubs from env.grpc_backend.generate_stubs) served
by `python3 flaky_backend.py`, on `port` (meshd routes there) and
`control_port` (Observe, not through meshd). The controller is an
env.grpc_backend.GrpcBackend, so start(), stop(), observations(), calls()
and wait_call() work as there.

    b = FlakyGrpcBackend(stubs, port, control_port, workdir, name="a",
                         fail_rate=0.3, fail_code=14, seed=1).start()

What a call does is set for the whole server (constructor arguments) and
can be changed per call with request metadata (which wins):
  fail_rate / x-flaky-fail-rate: F       fail this share of calls (0..1), drawn
                                        from a seeded random.Random
  fail_first / x-flaky-fail-first: N     fail the first N calls this instance
                                        sees with the same request id
  fail_code / x-flaky-code: C            the failing status (default 14,
                                        UNAVAILABLE)
  max_failed_attempt /
    x-flaky-max-failed-attempt: K        never fail an attempt whose
                                        x-meshd-attempt-count is above K (so a
                                        call that may be tried K+1 times always
                                        succeeds in the end; 0: no cap)
  pushback / x-flaky-pushback: V         a failure carries grpc-retry-pushback-ms: V
                                        in its (trailers-only) trailing metadata
  hang_ms / x-flaky-hang-ms: MS          do not answer for MS ms (or until the
                                        call is cancelled), then answer normally
  x-flaky-stream-fail-after: N           ServerStream: after N responses, end with
                                        the failing status (fail_code)
Unary answers EchoResponse(id, payload, server=name, payload_sha256).
ServerStream sends `repeat` responses `interval_ms` apart (as env.grpc_backend).
Failures are ctx.abort() with no message sent: a trailers-only answer.

Each attempt's record (calls(id) / observations()["calls"]):
  id, method, server (this instance's name), seq (arrival order here),
  attempt (int value of x-meshd-attempt-count, or None if absent),
  t_in / t_end (time.monotonic() at arrival / when the call ended: one
  system-wide clock, comparable across processes), bytes_in, responses_out,
  outcome ("ok", the status code name it failed with, or "hung" if it was
  cancelled while hanging), pushback (what it sent, or None), cancelled,
  ended.

-- FlakyHttpOrigin -----------------------------------------------------------------
A threaded HTTP/1.1 server (keep-alive, Content-Length or chunked request
bodies) in the test process: `o = FlakyHttpOrigin(seed=1).start()`,
`o.port`, `o.requests` (records, appended on arrival), `o.for_id(id)`,
`o.stop()`. Behaviour by query parameters:
  id=S                  names the request (several attempts share it)
  fail_rate=F           answer `status` to this share of requests
  fail_first=N          answer `status` to the first N requests with this id
  max_failed_attempt=K  never fail an attempt whose x-meshd-attempt-count > K
  status=NNN            the failing status (default 503)
  slow=N                a 200 answer whose chunked body is N chunks 100 ms
                        apart (a long response)
A 200 answer's body is b"ok <id> <attempt>\\n"; headers carry x-backend (the
name), x-attempt-seen and x-body-sha256 (of the request body). Records: id,
method, path, attempt, body_len, body_sha256, status, t_in, server.
"""
import argparse
import hashlib
import json
import random
import socket
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from env.grpc_backend import OPTIONS, GrpcBackend, import_stubs, serve_until_sigterm  # noqa: E402

SERVER_THREADS = 128
ATTEMPT_HEADER = "x-meshd-attempt-count"


def _attempt(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class FlakyGrpcBackend(GrpcBackend):
    """Controller for one flaky server process (see the module docstring)."""

    def __init__(self, stubs_dir, port, control_port, workdir, name="flaky", fail_rate=0.0, fail_first=0,
                 fail_code=14, max_failed_attempt=0, pushback=None, hang_ms=0, seed=1):
        super().__init__(stubs_dir, port, control_port, workdir, name=name)
        self.log_path = Path(workdir) / f"flaky-{name}-{port}.log"
        self.flags = {
            "--fail-rate": fail_rate,
            "--fail-first": fail_first,
            "--fail-code": fail_code,
            "--max-failed-attempt": max_failed_attempt,
            "--hang-ms": hang_ms,
            "--seed": seed,
        }
        if pushback is not None:
            self.flags["--pushback"] = pushback

    def argv(self):
        out = ["/usr/bin/python3", str(HERE / "flaky_backend.py"), "--stubs", str(self.stubs_dir),
               "--port", str(self.port), "--control-port", str(self.control_port), "--name", self.name]
        for k, v in self.flags.items():
            out += [k, str(v)]
        return out


# -- the gRPC server process ----------------------------------------------------------


def _serve(args):
    from concurrent import futures

    import grpc

    pb, pbg = import_stubs(args.stubs)
    codes = {c.value[0]: c for c in grpc.StatusCode}
    lock = threading.Lock()
    rnd = random.Random(args.seed)
    calls = []
    seen_ids = {}  # request id -> calls seen with it
    state = {"seq": 0}

    def meta(ctx):
        out = {}
        for k, v in ctx.invocation_metadata():
            out[k] = v.decode("latin-1") if isinstance(v, bytes) else v
        return out

    class Call:
        def __init__(self, ctx, method, req):
            self.ctx = ctx
            self.md = meta(ctx)
            self.ended = threading.Event()
            with lock:
                state["seq"] += 1
                n = seen_ids.get(req.id, 0) + 1
                seen_ids[req.id] = n
                self.nth = n  # this instance's n-th call with this id
                self.rec = {
                    "id": req.id, "method": method, "server": args.name, "seq": state["seq"],
                    "attempt": _attempt(self.md.get(ATTEMPT_HEADER)), "t_in": time.monotonic(),
                    "t_end": None, "bytes_in": len(req.payload), "responses_out": 0, "outcome": None,
                    "pushback": None, "cancelled": False, "ended": False,
                }
                calls.append(self.rec)
            ctx.add_callback(self._on_end)

        def _on_end(self):
            with lock:
                self.rec["ended"] = True
                self.rec["t_end"] = time.monotonic()
                if self.rec["outcome"] is None or self.rec["outcome"] == "hung":
                    self.rec["cancelled"] = True
            self.ended.set()

        def opt(self, key, default, conv):
            v = self.md.get(key)
            if v is None:
                return default
            try:
                return conv(v)
            except ValueError:
                return default

        def code(self):
            return self.opt("x-flaky-code", args.fail_code, int)

        def should_fail(self):
            cap = self.opt("x-flaky-max-failed-attempt", args.max_failed_attempt, int)
            if cap and self.rec["attempt"] is not None and self.rec["attempt"] > cap:
                return False
            if self.nth <= self.opt("x-flaky-fail-first", args.fail_first, int):
                return True
            rate = self.opt("x-flaky-fail-rate", args.fail_rate, float)
            if rate <= 0:
                return False
            with lock:
                return rnd.random() < rate

        def hang(self):
            """Waits hang_ms (False if the call ended meanwhile)."""
            ms = self.opt("x-flaky-hang-ms", args.hang_ms, int)
            if ms <= 0:
                return True
            self.rec["outcome"] = "hung"
            if self.ended.wait(ms / 1000.0):
                return False
            self.rec["outcome"] = None
            return True

        def fail(self):
            code = codes[self.code()]
            pushback = self.md.get("x-flaky-pushback", args.pushback)
            with lock:
                self.rec["outcome"] = code.name
                self.rec["pushback"] = pushback
            if pushback is not None:
                self.ctx.set_trailing_metadata((("grpc-retry-pushback-ms", pushback),))
            self.ctx.abort(code, f"flaky {args.name}: attempt {self.rec['attempt']}")  # raises

        def ok(self):
            with lock:
                self.rec["outcome"] = "ok"

        def sent(self):
            with lock:
                self.rec["responses_out"] += 1

    class Servicer(pbg.EchoServicer):
        def Unary(self, req, ctx):
            call = Call(ctx, "Unary", req)
            if not call.hang():
                return pb.EchoResponse()
            if call.should_fail():
                call.fail()  # raises
            call.ok()
            call.sent()
            return pb.EchoResponse(id=req.id, payload=req.payload, server=args.name,
                                   payload_sha256=hashlib.sha256(req.payload).hexdigest(),
                                   seq=call.rec["attempt"] or 0)

        def ServerStream(self, req, ctx):
            call = Call(ctx, "ServerStream", req)
            if not call.hang():
                return
            if call.should_fail():
                call.fail()  # raises
            fail_after = call.opt("x-flaky-stream-fail-after", -1, int)
            for i in range(max(req.repeat, 1)):
                if i == fail_after:
                    call.fail()
                if i and call.ended.wait(req.interval_ms / 1000.0):
                    return
                yield pb.EchoResponse(id=req.id, seq=i, payload=req.payload, server=args.name)
                call.sent()
            if fail_after == max(req.repeat, 1):
                call.fail()
            call.ok()

        def Observe(self, req, ctx):
            with lock:
                sel = [dict(c) for c in calls if not req.id or c["id"] == req.id]
            return pb.ObserveResponse(json=json.dumps({"calls": sel}))

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=SERVER_THREADS),
                         options=OPTIONS + [("grpc.so_reuseport", 0)])
    pbg.add_EchoServicer_to_server(Servicer(), server)
    for p in (args.port, args.control_port):
        if server.add_insecure_port(f"127.0.0.1:{p}") != p:
            sys.stderr.write(f"flaky_backend: cannot bind 127.0.0.1:{p}\n")
            sys.exit(3)
    serve_until_sigterm(server, f"flaky_backend {args.name}", args)


# -- the HTTP/1.1 origin ---------------------------------------------------------------


class FlakyHttpOrigin:
    """See the module docstring."""

    def __init__(self, name="origin", seed=1):
        self.name = name
        self.rnd = random.Random(seed)
        self.lock = threading.Lock()
        self.requests = []
        self._ids = {}
        self.conn_errors = 0  # connections that ended in an exception (reset by meshd)
        self._server = None
        self._thread = None

    @property
    def port(self):
        return self._server.server_address[1]

    def for_id(self, id):
        with self.lock:
            return [dict(r) for r in self.requests if r["id"] == id]

    def start(self):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import parse_qs, urlsplit

        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 30

            def log_message(self, *a):  # quiet
                pass

            def setup(self):
                super().setup()
                # headers and body are written apart: no Nagle delay between them
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _body(self):
                if self.headers.get("transfer-encoding", "").lower() == "chunked":
                    out = bytearray()
                    for _ in range(1 << 20):
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            for _ in range(1000):  # trailer section
                                if self.rfile.readline() in (b"\r\n", b"\n", b""):
                                    break
                            return bytes(out)
                        out += self.rfile.read(size)
                        self.rfile.readline()
                    raise ValueError("too many chunks")
                n = int(self.headers.get("content-length") or 0)
                return self.rfile.read(n) if n else b""

            def _handle(self):
                body = self._body()
                u = urlsplit(self.path)
                q = {k: v[-1] for k, v in parse_qs(u.query).items()}
                rid = q.get("id", "")
                attempt = _attempt(self.headers.get(ATTEMPT_HEADER))
                sha = hashlib.sha256(body).hexdigest()
                with origin.lock:
                    nth = origin._ids.get(rid, 0) + 1
                    origin._ids[rid] = nth
                    fail = nth <= int(q.get("fail_first", 0))
                    rate = float(q.get("fail_rate", 0))
                    if not fail and rate > 0:
                        fail = origin.rnd.random() < rate
                    cap = int(q.get("max_failed_attempt", 0))
                    if cap and attempt is not None and attempt > cap:
                        fail = False
                    status = int(q.get("status", 503)) if fail else 200
                    origin.requests.append({
                        "id": rid, "method": self.command, "path": u.path, "attempt": attempt,
                        "body_len": len(body), "body_sha256": sha, "status": status,
                        "t_in": time.monotonic(), "server": origin.name,
                    })
                slow = int(q.get("slow", 0))
                payload = f"ok {rid} {attempt}\n".encode() if status == 200 else b"flaky\n"
                self.send_response(status)
                self.send_header("x-backend", origin.name)
                self.send_header("x-attempt-seen", str(attempt))
                self.send_header("x-body-sha256", sha)
                if slow and status == 200:
                    self.send_header("transfer-encoding", "chunked")
                    self.end_headers()
                    for i in range(slow):
                        chunk = f"chunk {i}\n".encode()
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.wfile.flush()
                        time.sleep(0.1)  # the pace of a long response, not a wait
                    self.wfile.write(b"0\r\n\r\n")
                    return
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            def _safe(self):
                try:
                    self._handle()
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_HEAD = _safe

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

            def handle_error(self, request, client_address):
                # A connection meshd closed or reset between requests is not an
                # error of the test; it is counted, not printed.
                with origin.lock:
                    origin.conn_errors += 1

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"flaky-http-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(10)
            self._server = None


def main(argv=None):
    ap = argparse.ArgumentParser(description="flaky test.v1.Echo server for the retry tests")
    ap.add_argument("--stubs", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--control-port", type=int, required=True)
    ap.add_argument("--name", default="flaky")
    ap.add_argument("--fail-rate", type=float, default=0.0)
    ap.add_argument("--fail-first", type=int, default=0)
    ap.add_argument("--fail-code", type=int, default=14)
    ap.add_argument("--max-failed-attempt", type=int, default=0)
    ap.add_argument("--pushback", default=None)
    ap.add_argument("--hang-ms", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1)
    _serve(ap.parse_args(argv))


if __name__ == "__main__":
    main()
