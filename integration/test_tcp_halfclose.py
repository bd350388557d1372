# SPDX-License-Identifier: Apache-2.0
"""Half-close (FIN) travels through meshd each way and the other direction
keeps flowing until its own FIN."""
import socket

from env.backends import det_chunks, det_digest
from env.clients import connect, recv_to_eof, send_chunks

REQUEST = 100 * 1024 + 17
REPLY = 1024 * 1024


def test_client_half_closes_first(meshd, backends):
    # Server reads to EOF, then sends a 1 MiB reply, then closes.
    srv = backends.sink(reply=REPLY, reply_seed=3)
    m = meshd("tcp_basic", upstream_port=srv.port)

    s = connect(m.listen_port)
    with s:
        sent, req_digest = send_chunks(s, det_chunks(REQUEST, seed=2, chunk=16 * 1024))
        s.shutdown(socket.SHUT_WR)
        n, digest, _ = recv_to_eof(s)
    assert n == REPLY, f"client got {n} of {REPLY} reply bytes after its SHUT_WR"
    assert digest == det_digest(REPLY, seed=3)
    res = srv.next_result()
    assert res == {"sha256": req_digest, "bytes": sent}


def test_server_half_closes_first(meshd, backends):
    # Server sends 1 MiB and half-closes; the client reads to EOF, then still
    # sends its own data, which the server must receive whole.
    srv = backends.source(REPLY, seed=5, then="half_close")
    m = meshd("tcp_basic", upstream_port=srv.port)

    s = connect(m.listen_port)
    with s:
        n, digest, _ = recv_to_eof(s)
        assert n == REPLY, f"client got {n} of {REPLY} bytes before EOF"
        assert digest == det_digest(REPLY, seed=5)
        sent, up_digest = send_chunks(s, det_chunks(REQUEST, seed=6, chunk=16 * 1024))
        s.shutdown(socket.SHUT_WR)
        # The server closes after reading our EOF; nothing more may arrive.
        rest, _, _ = recv_to_eof(s)
        assert rest == 0
    res = srv.next_result()
    assert res.get("bytes") == sent, f"server result: {res}"
    assert res.get("sha256") == up_digest
