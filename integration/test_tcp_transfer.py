# SPDX-License-Identifier: Apache-2.0
"""200 MiB through meshd in each direction arrives intact (sha256), with
splice(2) on and off. Data is streamed in 1 MiB chunks, never held whole."""
import socket

import pytest

from env.backends import det_chunks, det_digest
from env.clients import connect, recv_to_eof, send_chunks

SIZE = 200 * 1024 * 1024
SPLICE = [pytest.param("false", id="splice"), pytest.param("true", id="nosplice")]


@pytest.mark.parametrize("disable_splice", SPLICE)
def test_upload_200mib(meshd, backends, disable_splice):
    sink = backends.sink(reply="digest")
    m = meshd("tcp_basic", upstream_port=sink.port, disable_splice=disable_splice)

    s = connect(m.listen_port, timeout=60)
    with s:
        sent, digest = send_chunks(s, det_chunks(SIZE, seed=7))
        s.shutdown(socket.SHUT_WR)
        n, _, reply = recv_to_eof(s, keep=True, limit=4096)
    assert sent == SIZE
    assert digest == det_digest(SIZE, seed=7)
    assert reply == f"{digest} {SIZE}\n".encode(), f"sink reported {reply!r}"
    res = sink.next_result()
    assert res == {"sha256": digest, "bytes": SIZE}


@pytest.mark.parametrize("disable_splice", SPLICE)
def test_download_200mib(meshd, backends, disable_splice):
    src = backends.source(SIZE, seed=11, then="close")
    m = meshd("tcp_basic", upstream_port=src.port, disable_splice=disable_splice)

    s = connect(m.listen_port, timeout=60)
    with s:
        n, digest, _ = recv_to_eof(s)
    res = src.next_result()
    assert res == {"sent_sha256": det_digest(SIZE, seed=11), "sent_bytes": SIZE}
    assert n == SIZE, f"received {n} of {SIZE} bytes"
    assert digest == det_digest(SIZE, seed=11)
