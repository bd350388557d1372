# SPDX-License-Identifier: Apache-2.0
"""Plain HTTP/2 through meshd with nghttp: single and multiplexed requests
on one connection, uploads and downloads unchanged."""
import hashlib

from env.clients import nghttp
from env.h2_backend import KNOWN_BODY, det_body

MIB = 1024 * 1024


def test_get(h2_service):
    b, port = h2_service()
    r = nghttp(port, "/plain/n", headers=["x-nghttp: yes"])
    assert r.rc == 0 and r.statuses == [200], r
    assert r.header("x-backend") == "h2" and r.header("x-echo-x-nghttp") == "yes", r
    body = nghttp(port, "/plain/n", verbose=False)
    assert body.rc == 0 and body.body == KNOWN_BODY, body


def test_multiplexed_requests_on_one_connection(h2_service):
    b, port = h2_service()
    r = nghttp(port, "/plain/m?size=20000", multiply=30)
    assert r.rc == 0, r
    assert r.statuses == [200] * 30, r.statuses
    assert len(r.streams) == 30
    assert len(b.requests_for("/plain/m")) == 30


def test_upload(h2_service, workdir):
    b, port = h2_service()
    data = det_body(2 * MIB + 3)[::-1]
    f = workdir / "upload.bin"
    f.write_bytes(data)
    r = nghttp(port, "/plain/up", data_file=f, verbose=False)
    assert r.rc == 0 and r.body == data, (r.rc, len(r.body or b""), r.stderr[-300:])
    assert b.requests[0]["body_sha256"] == hashlib.sha256(data).hexdigest()


def test_large_download(h2_service):
    b, port = h2_service()
    r = nghttp(port, f"/plain/big?size={8 * MIB}", verbose=False)
    assert r.rc == 0 and len(r.body) == 8 * MIB, (r.rc, len(r.body or b""), r.stderr[-300:])
    assert hashlib.sha256(r.body).digest() == hashlib.sha256(det_body(8 * MIB)).digest()
