# SPDX-License-Identifier: Apache-2.0
"""Backends whose health a test sets, for meshd's active health checks.

  HealthH1Server   an HTTP/1.1 server (keep-alive) on an env.backends.TCPServer:
                   GET `health_path` answers `health_status` (settable at any
                   time), anything else 200 with body b"<name>\\n" and header
                   X-Backend: <name>. Counts `served` (data requests) and
                   `checks` (health requests); `check_requests` keeps the last
                   20 health requests as {"method", "target", "version",
                   "headers": {lower-case name: value}}. `health_raw` (bytes,
                   settable): answer health requests with these bytes instead,
                   then close (garbage, a truncated status line).
  HealthGrpcServer an in-process grpcio server on a given loopback port:
                   test.v1.Echo/Unary answers EchoResponse(id, server=name);
                   grpc.health.v1.Health/Check answers the status set with
                   set_status(service, status) (1 SERVING, 2 NOT_SERVING; a
                   service never set: NOT_FOUND, as grpc's reference server),
                   with hand-encoded protobuf (python3-grpcio ships no health
                   stubs). `check_services` lists the services asked for.
                   stop() and start() again on the same port (a restart).
"""
import http
import threading
from concurrent import futures

from env.backends import TCPServer

SERVING = 1
NOT_SERVING = 2


class HealthH1Server(TCPServer):
    def __init__(self, name, health_path="/healthz", health_status=200):
        super().__init__(name=f"h1-{name}")
        self.name = name
        self.health_path = health_path
        self.health_status = health_status
        self.served = 0
        self.checks = 0
        self.check_requests = []
        self.health_raw = None

    def handle(self, conn):
        buf = b""
        for _ in range(100000):  # requests on this connection, bounded
            while b"\r\n\r\n" not in buf:
                b = conn.recv(65536)
                if not b or len(buf) > 65536:
                    return
                buf += b
            head, buf = buf.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            n = int(headers.get("content-length", "0"))
            while len(buf) < n:
                b = conn.recv(65536)
                if not b:
                    return
                buf += b
            buf = buf[n:]
            close = headers.get("connection", "").lower() == "close"
            if target == self.health_path:
                status, body = self.health_status, b"health\n"
                with self._lock:
                    self.checks += 1
                    self.check_requests = self.check_requests[-19:] + [
                        {"method": method, "target": target, "version": version, "headers": headers}
                    ]
                raw = self.health_raw
                if raw is not None:
                    conn.sendall(raw)
                    return
            else:
                status, body = 200, f"{self.name}\n".encode()
                with self._lock:
                    self.served += 1
            reason = http.HTTPStatus(status).phrase
            head = (
                f"HTTP/1.1 {status} {reason}\r\nContent-Length: {len(body)}\r\n"
                f"X-Backend: {self.name}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n"
            )
            conn.sendall(head.encode() + body)
            if close:
                return


def _read_varint(b, i):
    v = shift = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << shift
        if not c & 0x80:
            return v, i
        shift += 7


def _health_service(req):
    """HealthCheckRequest.service from its protobuf bytes (field 1, string)."""
    i, svc = 0, ""
    while i < len(req):
        tag, i = _read_varint(req, i)
        wt = tag & 7
        if wt == 0:
            _, i = _read_varint(req, i)
        elif wt == 2:
            n, i = _read_varint(req, i)
            if tag >> 3 == 1:
                svc = req[i : i + n].decode()
            i += n
        elif wt in (1, 5):
            i += 8 if wt == 1 else 4
        else:
            raise ValueError(f"wire type {wt}")
    return svc


class HealthGrpcServer:
    def __init__(self, stubs, port, name):
        self.pb, self.pbg = stubs[0], stubs[1]
        self.port = port
        self.name = name
        self.statuses = {}
        self.check_services = []
        self.served = 0
        self._lock = threading.Lock()
        self._server = None

    def set_status(self, service, status):
        with self._lock:
            self.statuses[service] = status

    def start(self):
        import grpc

        pb, me = self.pb, self

        class Echo(self.pbg.EchoServicer):
            def Unary(self, req, ctx):
                with me._lock:
                    me.served += 1
                return pb.EchoResponse(id=req.id, server=me.name)

        def check(req, ctx):
            svc = _health_service(req)
            with me._lock:
                me.check_services.append(svc)
                status = me.statuses.get(svc)
            if status is None:
                ctx.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
            return bytes([0x08, status])

        health = grpc.method_handlers_generic_handler(
            "grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(check)}
        )
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=[("grpc.so_reuseport", 0)])
        self.pbg.add_EchoServicer_to_server(Echo(), server)
        server.add_generic_rpc_handlers((health,))
        if server.add_insecure_port(f"127.0.0.1:{self.port}") != self.port:
            raise AssertionError(f"HealthGrpcServer {self.name}: cannot bind 127.0.0.1:{self.port}")
        server.start()
        self._server = server
        return self

    def stop(self):
        if self._server is not None:
            self._server.stop(grace=0).wait(5)
            self._server = None
