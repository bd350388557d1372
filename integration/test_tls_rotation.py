# SPDX-License-Identifier: Apache-2.0
"""Certificate rotation on a TLS listener: meshd re-reads its certificate,
key and CA files when they change on disk (and on SIGHUP); new handshakes
use the new certificate, existing connections and in-flight requests are
untouched, and a broken new file is refused (tls_reload_failed logged,
meshd_tls_reload_failed_total counted) while the old certificate stays in
use. Also: the trusted CA file (a client of a new CA is accepted once the
bundle names its CA), and a cluster's client certificate (new upstream
connections present the new one).

The listener's files live at fixed paths (live/meshd.pem, live/meshd.key);
a rotation writes the new files to temporary names and rename()s them into
place, the key first, then the certificate, as a certificate manager does.
Which certificate meshd serves is read from new handshakes (python ssl while
polling, openssl s_client to confirm). Bounds are hang guards (RELOAD_WAIT
covers meshd's ~3 s file check with room for ASan); nothing is timed."""
import os
import shutil
import signal
import threading
import time

import grpc
import pytest

from env.clients import H2Client, wait_until
from env.h1 import request_bytes
from env.h1_origin import H1Origin
from env.tls import (  # noqa: F401 - pki is a fixture
    HANG_GUARD,
    RELOAD_WAIT,
    Ca,
    TlsH1Conn,
    Workload,
    client_context,
    cluster,
    counter,
    der_to_pem,
    cert_serial,
    downstream_tls,
    grpc_tls_channel,
    http_bundle,
    http_listener,
    install,
    log_events,
    metadata,
    pki,
    probe,
    replace_file,
    rotate,
    s_client,
    server_context,
    tls_connect,
    upstream_tls,
    wait_log,
    xfcc,
)

LISTENER = "tls_in"
GARBAGE_PEM = b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"


class RotSvc:
    """meshd (AUTO listener, TLS REQUIRE) on the files of `live`, in front
    of a plaintext gRPC echo backend."""

    def __init__(self, m, backend, pki, live):
        self.m = m
        self.backend = backend
        self.port = m.values["listen_port"]
        self.pki = pki
        self.live = live
        self.ctx = client_context(ca=pki.ca.bundle, cert=pki.frontend, alpn=["http/1.1"])

    def served_serial(self):
        """Serial of the certificate a new handshake gets (python ssl)."""
        with tls_connect(self.port, self.ctx) as s:
            return cert_serial(der_to_pem(s.getpeercert(binary_form=True)))

    def wait_serial(self, serial, what="the new certificate"):
        wait_until(lambda: self.served_serial() == serial, timeout=RELOAD_WAIT, interval=0.1,
                   what=f"{what} (serial {serial}) on new handshakes")
        r = s_client(self.port, alpn="h2", ca=self.pki.ca.bundle, cert=self.pki.frontend)
        assert r.ok and r.serial == serial, r

    def reloads(self):
        return counter(self.m, "meshd_tls_reload_total")

    def reload_failures(self):
        return counter(self.m, "meshd_tls_reload_failed_total")


@pytest.fixture
def rot_svc(meshd, grpc_backend, pki, ports, workdir):
    def make(concurrency=2):
        b = grpc_backend()
        live = install(pki.meshd, workdir / "live", name="meshd", keep=True)
        tls = downstream_tls(live, pki.ca.bundle, "REQUIRE")
        text = http_bundle([http_listener(LISTENER, "{listen_port}", "AUTO", tls)], [cluster("app", "{upstream_port}")])
        m = meshd(text, listen_port=ports.get(), upstream_port=b.port, concurrency=concurrency)
        svc = RotSvc(m, b, pki, live)
        assert svc.served_serial() == pki.meshd.serial
        return svc

    return make


class Load:
    """gRPC Unary calls through meshd from a thread: one long-lived channel,
    and a fresh channel every FRESH_EVERY calls (new handshakes), alternating.
    Paced (PACE s between calls) so that rotations happen while it runs;
    bounded: at most max_calls calls and max_seconds seconds."""

    FRESH_EVERY = 20
    PACE = 0.005

    def __init__(self, svc, stubs, max_calls=8000, max_seconds=60.0):
        self.svc = svc
        self.pb, self.pbg, _ = stubs
        self.max_calls = max_calls
        self.max_seconds = max_seconds
        self.calls = 0
        self.failures = []
        self.channels = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _channel(self):
        self.channels += 1
        return grpc_tls_channel(self.svc.port, self.svc.pki.ca.bundle, self.svc.pki.frontend)

    def _run(self):
        deadline = time.monotonic() + self.max_seconds
        long_ch = self._channel()
        long_stub = self.pbg.EchoStub(long_ch)
        fresh_ch, fresh_stub = None, None
        try:
            for i in range(self.max_calls):
                if self._stop.is_set() or time.monotonic() >= deadline:
                    break
                if i % self.FRESH_EVERY == 0:
                    if fresh_ch is not None:
                        fresh_ch.close()
                    fresh_ch = self._channel()
                    fresh_stub = self.pbg.EchoStub(fresh_ch)
                stub = long_stub if i % 2 else fresh_stub
                try:
                    r = stub.Unary(self.pb.EchoRequest(id=f"load-{i}", payload=b"r" * 64), timeout=HANG_GUARD)
                    if r.id != f"load-{i}":
                        self.failures.append((i, "wrong answer", r.id))
                except grpc.RpcError as e:
                    self.failures.append((i, str(e.code()), e.details()))
                self.calls += 1
                self._stop.wait(self.PACE)  # pacing, not a readiness wait
        finally:
            long_ch.close()
            if fresh_ch is not None:
                fresh_ch.close()

    def start(self):
        self._t.start()
        return self

    def wait_calls(self, n):
        wait_until(lambda: self.calls >= n or not self._t.is_alive(), timeout=HANG_GUARD,
                   what=f"{n} calls of load (at {self.calls})")
        assert self.calls >= n, f"load ended after {self.calls} calls; failures: {self.failures[:5]}"

    def stop(self):
        self._stop.set()
        self._t.join(HANG_GUARD + 10)
        assert not self._t.is_alive(), "load thread still running"


def test_rotation_under_load(rot_svc, echo_stubs, pki):
    svc = rot_svc()
    reloads0 = svc.reloads()
    load = Load(svc, echo_stubs).start()
    served = [pki.meshd.serial]
    try:
        load.wait_calls(20)
        for _ in range(3):
            new = pki.ca.fresh(pki.meshd)
            rotate(svc.live, new)
            svc.wait_serial(new.serial)
            served.append(new.serial)
            load.wait_calls(load.calls + 40)  # calls on the new certificate, fresh channels included
    finally:
        load.stop()
    assert len(set(served)) == 4, served
    assert load.failures == [], f"{len(load.failures)} of {load.calls} calls failed: {load.failures[:10]}"
    assert load.calls >= 140 and load.channels >= 7, (load.calls, load.channels)
    assert svc.reloads() >= reloads0 + 3
    assert len(log_events(svc.m, "tls_reloaded")) >= 3, svc.m.log_tail()


def test_existing_connections_and_inflight_untouched(rot_svc, echo_stubs, pki):
    pb, pbg, _ = echo_stubs
    svc = rot_svc()
    old = pki.meshd.serial
    with TlsH1Conn(svc.port, svc.ctx) as h1, \
            grpc_tls_channel(svc.port, pki.ca.bundle, pki.frontend) as ch:
        stub = pbg.EchoStub(ch)
        # An HTTP/1.1 keep-alive connection, used before and after.
        h1.send(request_bytes("POST", "/test.v1.Echo/Unary", host="localhost",
                              headers=["Content-Type: application/grpc", "TE: trailers"], body=b"\0\0\0\0\0"))
        r = h1.read_response()
        assert r.status == 200, r
        # A server stream that runs across the rotation.
        stream = stub.ServerStream(pb.EchoRequest(id="across", repeat=12, interval_ms=250), timeout=HANG_GUARD * 2)
        first = next(stream)
        assert first.seq == 0
        new = pki.ca.fresh(pki.meshd)
        rotate(svc.live, new)
        svc.wait_serial(new.serial)
        rest = list(stream)
        assert [m.seq for m in rest] == list(range(1, 12)), "the in-flight stream was cut by the rotation"
        assert stream.code() == grpc.StatusCode.OK
        # The long-lived channel and the old HTTP/1.1 connection go on, on the old certificate.
        assert stub.Unary(pb.EchoRequest(id="after"), timeout=HANG_GUARD).id == "after"
        assert h1.peer_serial() == old
        h1.send(request_bytes("POST", "/test.v1.Echo/Unary", host="localhost",
                              headers=["Content-Type: application/grpc", "TE: trailers"], body=b"\0\0\0\0\0"))
        r = h1.read_response()
        assert r.status == 200 and h1.eof is None, r
    call = svc.backend.wait_call("across", lambda c: c["ended"])
    assert metadata(call, "x-forwarded-client-cert") == [xfcc(pki.meshd.spiffe_id, pki.frontend.spiffe_id)]


def test_sighup_reload(rot_svc, pki):
    svc = rot_svc()
    reloads0 = svc.reloads()
    new = pki.ca.fresh(pki.meshd)
    rotate(svc.live, new)
    svc.m.signal(signal.SIGHUP)
    svc.wait_serial(new.serial)
    assert svc.reloads() >= reloads0 + 1
    wait_log(svc.m, "tls_reloaded")
    # SIGHUP with nothing changed: still serving, the same certificate, no failure.
    fails0 = svc.reload_failures()
    svc.m.signal(signal.SIGHUP)
    wait_until(lambda: svc.m.admin_get("/ready")[0] == 200, timeout=HANG_GUARD, what="ready after SIGHUP")
    assert svc.m.alive()
    assert svc.served_serial() == new.serial
    assert svc.reload_failures() == fails0
    assert log_events(svc.m, "tls_reload_failed") == []


def test_sighup_after_replacing_both_in_place(rot_svc, pki):
    """The files are overwritten in place (no rename), then SIGHUP."""
    svc = rot_svc()
    new = pki.ca.fresh(pki.meshd)
    svc.live.key.write_bytes(new.key.read_bytes())
    svc.live.chain.write_bytes(new.chain.read_bytes())
    svc.m.signal(signal.SIGHUP)
    svc.wait_serial(new.serial)
    assert svc.m.alive()


def _break(case, svc, pki):
    """Writes a broken rotation; returns (substrings the tls_reload_failed
    line must contain)."""
    live = svc.live
    if case == "garbage_cert":
        replace_file(live.chain, GARBAGE_PEM)
        return [str(live.chain)]
    if case == "garbage_key":
        replace_file(live.key, b"this is not a PEM key\n")
        return [str(live.key)]
    if case == "key_mismatch":
        new, other = pki.ca.fresh(pki.meshd), pki.ca.fresh(pki.meshd)
        rotate(live, new, key_data=other.key.read_bytes())
        return ["does not match"]
    if case == "expired":
        exp = pki.ca.workload("meshd-expired", sa="meshd", expired=True)
        rotate(live, exp)
        return [str(live.chain), "expired"]
    if case == "no_spiffe":
        plain = pki.ca.no_spiffe_cert("meshd-plain")
        rotate(live, plain)
        return [str(live.chain), "SPIFFE"]
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["garbage_cert", "garbage_key", "key_mismatch", "expired", "no_spiffe"])
def test_broken_file_refused_then_fixed(rot_svc, pki, case):
    svc = rot_svc()
    old = pki.meshd.serial
    fails0 = svc.reload_failures()
    want = _break(case, svc, pki)
    lines = wait_log(svc.m, "tls_reload_failed")
    assert any(all(w in l for w in want) for l in lines), f"no tls_reload_failed line with {want}:\n" + "\n".join(lines)
    wait_until(lambda: svc.reload_failures() >= fails0 + 1, timeout=RELOAD_WAIT,
               what="meshd_tls_reload_failed_total to count it")
    # The old certificate is still served, and handshakes still work.
    r = s_client(svc.port, alpn="h2", ca=pki.ca.bundle, cert=pki.frontend)
    assert r.ok and r.serial == old, r
    assert svc.m.alive()
    # A good rotation afterwards is picked up.
    good = pki.ca.fresh(pki.meshd)
    rotate(svc.live, good)
    svc.wait_serial(good.serial, what="the fixed certificate")


def test_ca_rotation(rot_svc, pki, workdir):
    """The trusted CA file changes too: a client of a new CA is refused
    until the bundle names it, then accepted."""
    svc = rot_svc()
    ca2 = Ca(workdir / "ca2")
    client2 = ca2.workload("frontend2", sa="frontend")
    ctx2 = client_context(ca=pki.ca.bundle, cert=client2, alpn=["http/1.1"])
    p = probe(svc.port, ctx2, path="/test.v1.Echo/Unary")
    assert not p.ok, p
    # The trusted CA file is the mesh bundle: add the second CA to it.
    replace_file(pki.ca.bundle, pki.ca.ca_pem.read_bytes() + ca2.ca_pem.read_bytes())
    p = wait_until(lambda: (lambda r: r if r.ok else None)(probe(svc.port, ctx2, path="/ca2")),
                   timeout=RELOAD_WAIT, interval=0.2, what="a client of the new CA accepted")
    assert p.status is not None, p


def test_cluster_client_certificate_rotation(meshd, origin_for_rotation, pki, ports, workdir):
    """A cluster's client certificate rotates too: new upstream connections
    present the new one (the origin closes after each answer, so every
    request makes a new TLS connection)."""
    o = origin_for_rotation
    live = install(pki.frontend, workdir / "client", name="frontend")
    text = http_bundle([http_listener("in", "{listen_port}", "H2C")],
                       [cluster("h1", "{origin_port}", "HTTP1",
                                upstream_tls(pki.ca.bundle, live, match=[pki.backend.spiffe_id]))],
                       route_cluster="h1")
    m = meshd(text, listen_port=ports.get(), origin_port=o.port, concurrency=1)
    seq = iter(range(1000))

    def serial_seen():
        i = next(seq)
        with H2Client(m.values["listen_port"], timeout=HANG_GUARD) as c:
            r = c.request([(":method", "GET"), (":scheme", "http"), (":path", f"/r/{i}?close=1"),
                           (":authority", "localhost")])
        assert r.status == 200, r
        cid = [q["conn"] for q in o.requests if q["path"] == f"/r/{i}"][0]
        return o.tls_info[cid]["peer_serial"]

    assert serial_seen() == pki.frontend.serial
    new = pki.ca.fresh(pki.frontend)
    rotate(live, new)
    wait_until(lambda: serial_seen() == new.serial, timeout=RELOAD_WAIT, interval=0.1,
               what="the new client certificate at the origin")
    assert o.tls_errors == []
    wait_log(m, "tls_reloaded")


@pytest.fixture
def origin_for_rotation(pki):
    o = H1Origin(ssl_context=server_context(pki.backend, pki.ca.bundle, require_client_cert=True,
                                            alpn=["http/1.1"])).start()
    yield o
    o.stop()


def test_rotation_by_overwriting_in_place(rot_svc, pki, workdir):
    """No rename: the key, then the certificate, truncated and rewritten
    where they are (as `cp` does); no signal. The live files are dated an
    hour back first, as files written at the previous rotation would be.
    (Without that, a same-size rewrite in the same second as the install
    went unnoticed in 4 of 6 ASan runs: meshd's file check seems to compare
    stat() times at one-second resolution.)"""
    live = install(pki.meshd, workdir / "live", name="meshd")
    hour_ago = time.time() - 3600
    for f in (live.key, live.chain):
        os.utime(f, (hour_ago, hour_ago))
    svc = rot_svc()
    new = pki.ca.fresh(pki.meshd)
    svc.live.key.write_bytes(new.key.read_bytes())
    svc.live.chain.write_bytes(new.chain.read_bytes())
    svc.wait_serial(new.serial)


def test_rotation_after_the_files_were_deleted(rot_svc, pki):
    """A certificate manager that deletes the files before writing new
    ones: the gap is a failed reload (old certificate kept), the new files
    are then picked up."""
    svc = rot_svc()
    fails0 = svc.reload_failures()
    svc.live.chain.unlink()
    svc.live.key.unlink()
    lines = wait_log(svc.m, "tls_reload_failed")
    assert any(str(svc.live.chain) in l or str(svc.live.key) in l for l in lines), lines
    assert svc.reload_failures() >= fails0 + 1
    assert svc.served_serial() == pki.meshd.serial
    new = pki.ca.fresh(pki.meshd)
    rotate(svc.live, new)
    svc.wait_serial(new.serial, what="the certificate written after the deletion")


def test_kubernetes_secret_volume_rotation(meshd, grpc_backend, pki, ports, workdir):
    """A Kubernetes secret volume: NAME -> ..data/NAME -> ..<timestamp>/NAME.
    The kubelet rotates it by writing a new timestamped directory, renaming
    a new ..data symlink over the old one and removing the old directory;
    the paths meshd was given (the NAME symlinks) never change themselves."""
    b = grpc_backend()
    vol = workdir / "secret-volume"
    vol.mkdir()

    def publish(w, ts):
        d = vol / f"..{ts}"
        d.mkdir()
        (d / "tls.crt").write_bytes(w.chain.read_bytes())
        (d / "tls.key").write_bytes(w.key.read_bytes())
        (d / "ca.crt").write_bytes(pki.ca.bundle.read_bytes())
        tmp = vol / "..data_tmp"
        os.symlink(d.name, tmp)
        os.rename(tmp, vol / "..data")  # the atomic swap
        return d

    old_dir = publish(pki.meshd, "2026_11_25_10_00_00.1")
    for name in ("tls.crt", "tls.key", "ca.crt"):
        os.symlink(f"..data/{name}", vol / name)
    live = Workload("k8s", vol / "tls.key", vol / "tls.crt", vol / "tls.crt", pki.meshd.spiffe_id)
    tls = downstream_tls(live, vol / "ca.crt", "REQUIRE")
    text = http_bundle([http_listener(LISTENER, "{listen_port}", "AUTO", tls)], [cluster("app", "{upstream_port}")])
    m = meshd(text, listen_port=ports.get(), upstream_port=b.port)
    svc = RotSvc(m, b, pki, live)
    assert svc.served_serial() == pki.meshd.serial
    new = pki.ca.fresh(pki.meshd)
    publish(new, "2026_11_25_11_00_00.2")
    shutil.rmtree(old_dir)  # the kubelet removes the old payload
    svc.wait_serial(new.serial, what="the certificate of the new secret payload")


def test_removed_ca_cannot_resume(meshd, grpc_backend, pki, ports, workdir):
    """Once the trusted CA file no longer names a CA, a client of that CA
    is refused, also when it tries to resume a session it got before (a
    resumed handshake carries no certificate to verify again)."""
    b = grpc_backend()
    ca2 = Ca(workdir / "ca2")
    client2 = ca2.workload("frontend2", sa="frontend")
    trust = workdir / "trust.pem"
    trust.write_bytes(pki.ca.ca_pem.read_bytes() + ca2.ca_pem.read_bytes())
    live = install(pki.meshd, workdir / "live", name="meshd")
    tls = downstream_tls(live, trust, "REQUIRE")
    text = http_bundle([http_listener(LISTENER, "{listen_port}", "AUTO", tls)], [cluster("app", "{upstream_port}")])
    m = meshd(text, listen_port=ports.get(), upstream_port=b.port)
    port = m.values["listen_port"]
    ctx2 = client_context(ca=pki.ca.bundle, cert=client2, alpn=["http/1.1"])
    with TlsH1Conn(port, ctx2) as c:
        c.send(request_bytes("GET", "/before", host="localhost"))
        assert c.read_response().status is not None
        session = c.sock.session
    assert session is not None and session.has_ticket
    reloads0 = counter(m, "meshd_tls_reload_total")
    replace_file(trust, pki.ca.ca_pem.read_bytes())
    wait_until(lambda: counter(m, "meshd_tls_reload_total") > reloads0, timeout=RELOAD_WAIT,
               what="the trust bundle reloaded")
    p = probe(port, ctx2, path="/full-handshake")
    assert not p.ok, f"a client of the removed CA is still accepted: {p}"
    p = probe(port, ctx2, path="/resumed", session=session)
    assert not p.ok, f"a client of the removed CA resumed its session and was served: {p}"

