# SPDX-License-Identifier: Apache-2.0
"""Plain HTTP/2 through meshd with curl --http2-prior-knowledge: bodies both
ways unchanged, the upstream's status and query string passed through, the
virtual host chosen by :authority."""
import hashlib

import pytest

from env.curl import curl_h2
from env.h2_backend import KNOWN_BODY, det_body

MIB = 1024 * 1024


def _ok(r):
    assert r.rc == 0, r
    assert r.http_version == "2", r
    return r


def test_get_known_body(h2_service, workdir):
    b, port = h2_service()
    r = _ok(curl_h2(port, "/plain/hello", workdir))
    assert r.status == 200 and r.body == KNOWN_BODY, r
    assert r.header("x-backend") == "h2"
    assert r.header("x-echo-method") == "GET"
    assert len(b.requests) == 1


def test_get_large_body(h2_service, workdir):
    b, port = h2_service()
    r = _ok(curl_h2(port, f"/plain/big?size={5 * MIB}", workdir))
    assert r.status == 200 and len(r.body) == 5 * MIB
    assert hashlib.sha256(r.body).digest() == hashlib.sha256(det_body(5 * MIB)).digest()


def test_post_body_echoed(h2_service, workdir):
    b, port = h2_service()
    data = det_body(3 * MIB + 17)[::-1]
    r = _ok(curl_h2(port, "/plain/upload", workdir, data=data))
    assert r.status == 200
    assert r.header("x-body-sha256") == hashlib.sha256(data).hexdigest(), "the upstream received other bytes"
    assert r.body == data, "the echoed body changed on the way back"
    assert b.requests[0]["method"] == "POST" and b.requests[0]["body_len"] == len(data)


def test_empty_post(h2_service, workdir):
    b, port = h2_service()
    r = _ok(curl_h2(port, "/plain/empty", workdir, data=b""))
    assert r.status == 200 and r.body == b""
    assert b.requests[0]["body_len"] == 0


@pytest.mark.parametrize("status", [201, 404, 418, 500, 503])
def test_upstream_status_passed_through(h2_service, workdir, status):
    """Even 404/500/503 from the upstream arrive as they were (x-backend
    shows they are the upstream's answers, not meshd's)."""
    b, port = h2_service()
    r = _ok(curl_h2(port, f"/plain/s?status={status}", workdir))
    assert r.status == status and r.header("x-backend") == "h2", r
    assert r.body == KNOWN_BODY


def test_query_string_and_path_preserved(h2_service, workdir):
    b, port = h2_service()
    path = "/plain/a/b%20c/d?x=1&y=%2F%3F&z=&x=2"
    r = _ok(curl_h2(port, path, workdir))
    assert r.status == 200
    assert b.requests[0]["path"] == path


@pytest.mark.proxy_only
def test_virtual_host_by_authority(h2_service, workdir):
    b, port = h2_service()
    r = _ok(curl_h2(port, "/anything/here", workdir, headers=["Host: other.example"]))
    assert r.status == 200, r
    assert r.header("x-echo-x-vhost") == "other"
    r = _ok(curl_h2(port, "/plain/main", workdir))
    assert r.status == 200 and r.header("x-echo-x-vhost") is None
