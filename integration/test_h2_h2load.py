# SPDX-License-Identifier: Apache-2.0
"""h2load smoke runs through meshd: many multiplexed streams over several
connections, zero failed requests, every one counted by the upstream."""
from env.clients import h2load


def _assert_all_ok(r, n):
    assert r.rc == 0 and r.summary is not None, f"{r!r}\n{r.stdout.decode(errors='replace')[-2000:]}"
    s = r.summary
    assert (s["done"], s["succeeded"], s["failed"], s["errored"], s["timeout"]) == (n, n, 0, 0, 0), s
    assert s["2xx"] == n, s


def test_h2load_get(h2_service):
    b, port = h2_service()
    n = 2000
    _assert_all_ok(h2load(port, "/plain/load", n=n, clients=4, streams=10), n)
    assert len(b.requests_for("/plain/load")) == n


def test_h2load_large_responses(h2_service):
    b, port = h2_service()
    n = 200
    _assert_all_ok(h2load(port, "/plain/big?size=262144", n=n, clients=2, streams=20), n)


def test_h2load_post(h2_service, workdir):
    b, port = h2_service()
    n = 300
    f = workdir / "body.bin"
    f.write_bytes(b"p" * 65536)
    _assert_all_ok(h2load(port, "/plain/post", n=n, clients=3, streams=8, extra=["-d", f]), n)
    reqs = b.requests_for("/plain/post")
    assert len(reqs) == n and all(r["method"] == "POST" and r["body_len"] == 65536 for r in reqs)
