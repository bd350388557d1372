# SPDX-License-Identifier: Apache-2.0
"""Draining HTTP/2 and gRPC (README "Running meshd", Admin): on SIGTERM or
POST /drain meshd stops accepting and sends GOAWAY(NO_ERROR) on its open
HTTP/2 connections; streams in flight finish intact, and after SIGTERM meshd
exits 0 once they have. A new connection made after the drain started is
refused (or, had the kernel already taken it, turned away: GOAWAY or close)
and never reaches the upstream.

The in-flight work is gated, not timed: the gRPC server stream waits at a
barrier after its first message (env.grpc_backend), the HTTP/2 request is
held by env.h2_backend (wait=NAME) until the test releases it."""
import http.client
import signal
import subprocess

import grpc
import pytest

from env.clients import H2MultiClient, RawH2, connect, wait_until

pytestmark = pytest.mark.proxy_only

HANG_GUARD = 20.0
CALL_TIMEOUT = 60
NO_ERROR = 0


def _ready_status(m):
    try:
        return m.admin_get("/ready", timeout=5)[0]
    except (OSError, http.client.HTTPException) as e:
        return e


def _wait_draining(m):
    def draining():
        assert m.alive(), f"meshd exited ({m.proc.poll()}) with a stream still in flight\n{m.log_tail()}"
        return _ready_status(m) == 503

    wait_until(draining, timeout=HANG_GUARD, what="GET /ready == 503")


def _new_connection_turned_away(port):
    """A connection made while draining: refused, or (had the kernel taken
    it before the listener closed) answered with GOAWAY / closed before any
    response. Returns how."""
    try:
        s = connect(port, timeout=5)
    except ConnectionRefusedError:
        return "refused"
    s.close()
    try:
        c = RawH2(port, timeout=HANG_GUARD)
    except ConnectionRefusedError:
        return "refused"  # the listener closed between the two connects
    with c:
        try:
            c.send(c.headers(1, [(":method", "GET"), (":scheme", "http"), (":path", "/late"),
                                 (":authority", "localhost")]))
        except (BrokenPipeError, ConnectionResetError):
            return "reset"
        f = c.read_until(lambda f: f.type in (RawH2.GOAWAY, RawH2.HEADERS), timeout=HANG_GUARD)
        assert f is None or f.type == RawH2.GOAWAY, f"a connection made while draining got an answer: {f!r}"
        return "goaway" if f is not None else c.eof


def test_sigterm_lets_grpc_server_stream_finish_then_exits_0(echo_service):
    n = 20
    svc = echo_service()
    m = svc.meshd
    req = svc.pb.EchoRequest(id="drain", repeat=n, payload=b"m" * 100, barrier="gate", barrier_count=2,
                             barrier_timeout_ms=CALL_TIMEOUT * 1000)
    call = svc.stub().ServerStream(req, timeout=CALL_TIMEOUT)
    first = next(call)
    assert first.seq == 0
    svc.backend.wait_call("drain", timeout=HANG_GUARD)

    m.signal(signal.SIGTERM)
    _wait_draining(m)
    how = _new_connection_turned_away(m.listen_port)
    print("new connection while draining:", how)
    assert svc.backend.calls("drain")[0]["ended"] is False, "the in-flight stream was ended by the drain"

    svc.backend.arrive("gate", 2)  # the stream goes on: 19 more messages, then OK
    got = [first] + list(call)
    assert [r.seq for r in got] == list(range(n))
    assert all(r.payload == b"m" * 100 and r.id == "drain" for r in got)
    assert call.code() == grpc.StatusCode.OK, (call.code(), call.details())
    rec = svc.backend.wait_call("drain", lambda c: c["ended"], timeout=HANG_GUARD)
    assert rec["responses_out"] == n and not rec["cancelled"], rec
    assert len(svc.backend.calls()) == 2, "a call made while draining reached the upstream"  # ours + arrive()

    svc.close()
    try:
        rc = m.wait_exit(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"meshd still running 30 s after its last stream ended (drain-timeout 10 s)\n{m.log_tail()}")
    assert rc == 0, f"meshd exited {rc} after a SIGTERM drain\n{m.log_tail()}"
    log = m.log()
    assert "event=drain_complete" in log and "event=drain_timeout" not in log, m.log_tail()
    m.check_sanitizers()


def test_post_drain_sends_goaway_and_lets_stream_finish(h2_limits):
    b, m = h2_limits(concurrency=2)
    with H2MultiClient(m.listen_port, timeout=HANG_GUARD) as c:
        sid = c.start([(":method", "GET"), (":scheme", "http"), (":path", "/held?wait=go&size=100000"),
                       (":authority", "localhost")])
        c.wait(lambda: b.streams_for("/held"), HANG_GUARD, what="the request at the upstream")

        status, body = m.admin_post("/drain")
        assert status == 200, (status, body)
        c.wait(lambda: c.goaway is not None, HANG_GUARD, what="GOAWAY on the open connection")
        code, last = c.goaway
        assert code == NO_ERROR and last >= sid, f"GOAWAY {c.goaway}: the in-flight stream {sid} is not kept"
        _wait_draining(m)
        how = _new_connection_turned_away(m.listen_port)
        print("new connection while draining:", how)

        b.release("go")
        r = c.responses[sid]
        c.wait(lambda: c.done(sid), HANG_GUARD, what="the in-flight response")
        assert r.status == 200 and r.ended and len(r.data) == 100000, r
        # Its last stream done, meshd closes the connection.
        c.wait(lambda: c.eof is not None, HANG_GUARD, what="meshd to close the drained connection")
    assert len(b.streams) == 1, f"a request made while draining reached the upstream: {b.streams}"
    wait_until(lambda: m.stat("meshd_listener_downstream_cx_active", listener="h2_lim") == 0, timeout=HANG_GUARD,
               what="no downstream connection left")
    assert m.alive(), "meshd exited after POST /drain"
    assert _ready_status(m) == 503
