# SPDX-License-Identifier: Apache-2.0
"""grpcurl through meshd, the service described from source
(-import-path/-proto on proto/test/v1/echo.proto, no reflection): unary and
streaming calls with -d, metadata with -H, error statuses with -format-error
(exit code 64 + status code), no route. Skipped when grpcurl is not on PATH
(Debian 12 does not package it)."""
import base64
import json
import os
import shutil
from pathlib import Path

import pytest

from env.clients import grpcurl

pytestmark = pytest.mark.skipif(shutil.which("grpcurl") is None, reason="grpcurl is not on PATH")

HERE = Path(__file__).resolve().parent
PROTO_ROOT = Path(os.environ.get("MESHCTL_PROTO_PATH") or HERE.parent / "proto").resolve()
STATUS_OFFSET = 64  # grpcurl exits 64 + the gRPC status code


def _call(port, method, data=None, headers=(), extra=()):
    args = ["-plaintext", "-import-path", PROTO_ROOT, "-proto", "test/v1/echo.proto", "-max-time", "30"]
    for h in headers:
        args += ["-H", h]
    if data is not None:
        args += ["-d", data if isinstance(data, str) else json.dumps(data)]
    args += list(extra) + [f"127.0.0.1:{port}", method]
    return grpcurl(*args, timeout=60)


def _json_values(text):
    """Every JSON value in a concatenation of (pretty-printed) JSON values."""
    dec = json.JSONDecoder()
    out, i = [], 0
    text = text.strip()
    for _ in range(100000):
        if i >= len(text):
            break
        v, j = dec.raw_decode(text, i)
        out.append(v)
        i = j
        while i < len(text) and text[i].isspace():
            i += 1
    return out


def _out(r):
    return _json_values(r.stdout.decode())


def _b64(b):
    return base64.b64encode(b).decode()


def test_list_and_describe_from_source():
    r = grpcurl("-import-path", PROTO_ROOT, "-proto", "test/v1/echo.proto", "list", "test.v1.Echo")
    assert r.rc == 0, r
    methods = set(r.stdout.decode().split())
    assert {"test.v1.Echo.Unary", "test.v1.Echo.ServerStream", "test.v1.Echo.ClientStream", "test.v1.Echo.BidiStream"} <= methods


def test_unary(echo_service):
    svc = echo_service()
    r = _call(svc.port, "test.v1.Echo/Unary", {"id": "gu", "payload": _b64(b"hello \x00\xff")})
    assert r.rc == 0, r
    [resp] = _out(r)
    assert resp["id"] == "gu" and base64.b64decode(resp["payload"]) == b"hello \x00\xff" and resp["server"] == "echo"


def test_server_stream(echo_service):
    svc = echo_service()
    r = _call(svc.port, "test.v1.Echo/ServerStream", {"id": "gs", "repeat": 4, "payload": _b64(b"s")})
    assert r.rc == 0, r
    assert [m.get("seq", 0) for m in _out(r)] == [0, 1, 2, 3]


def test_client_stream(echo_service):
    svc = echo_service()
    data = " ".join(json.dumps({"id": "gc", "payload": _b64(bytes([i]) * 100)}) for i in range(5))
    r = _call(svc.port, "test.v1.Echo/ClientStream", data)
    assert r.rc == 0, r
    [resp] = _out(r)
    assert int(resp["receivedMessages"]) == 5 and int(resp["receivedBytes"]) == 500


def test_bidi_stream(echo_service):
    svc = echo_service()
    data = "\n".join(json.dumps({"id": "gb", "payload": _b64(b"%d" % i)}) for i in range(3))
    r = _call(svc.port, "test.v1.Echo/BidiStream", data)
    assert r.rc == 0, r
    assert [base64.b64decode(m["payload"]) for m in _out(r)] == [b"0", b"1", b"2"]


def test_metadata_reaches_server(echo_service):
    svc = echo_service()
    r = _call(svc.port, "test.v1.Echo/Unary", {"id": "gm"}, headers=["x-grpcurl: one two", "x-grpcurl-bin: AAEC/w=="])
    assert r.rc == 0, r
    rec = svc.backend.wait_call("gm", lambda c: c["ended"])
    md = {k: base64.b64decode(v) for k, v in rec["metadata"]}
    assert md.get("x-grpcurl") == b"one two"
    assert md.get("x-grpcurl-bin") == b"\x00\x01\x02\xff"


@pytest.mark.parametrize("code", [3, 5, 8, 14, 16])
def test_error_status_format_error(echo_service, code):
    svc = echo_service()
    msg = f"failed on purpose: {code} ✓ 100%"
    r = _call(svc.port, "test.v1.Echo/Unary", {"id": "ge", "statusCode": code, "statusMessage": msg}, extra=["-format-error"])
    assert r.rc == STATUS_OFFSET + code, r
    [status] = _json_values(r.stderr.decode())
    assert status.get("code") == code and status.get("message") == msg, status


@pytest.mark.proxy_only
def test_no_route_unimplemented(echo_service):
    svc = echo_service()
    r = _call(svc.port, "test.v1.Unrouted/Ping", {"id": "gn"}, extra=["-format-error"])
    assert r.rc == STATUS_OFFSET + 12, r
    [status] = _json_values(r.stderr.decode())
    assert status.get("code") == 12, status


@pytest.mark.proxy_only
def test_upstream_down_unavailable(echo_service, backends):
    down = backends.refusing()
    svc = echo_service(upstream_port=down.port)
    r = _call(svc.port, "test.v1.Echo/Unary", {"id": "gd"}, extra=["-format-error"])
    assert r.rc == STATUS_OFFSET + 14, r


def test_deadline_exceeded(echo_service):
    svc = echo_service()
    r = _call(svc.port, "test.v1.Echo/Unary", {"id": "gt", "sleepMs": 30000}, extra=["-format-error", "-max-time", "1"])
    assert r.rc == STATUS_OFFSET + 4, r
