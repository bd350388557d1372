# SPDX-License-Identifier: Apache-2.0
"""TLS for the integration tests: certificates minted with certs/mint into a
tmp dir, TLS clients (openssl s_client, python ssl, grpcio secure channels;
curl over https is env/curl.py), bundle fragments for listener and cluster
TLS, and the fixtures the test_tls_*.py files import from here.

    ca = Ca(tmp / "ca")                           # certs/mint ca
    w = ca.workload("meshd", sa="meshd")          # certs/mint workload
    w.key, w.cert, w.chain, w.spiffe_id, w.serial # paths / str
    ca.no_spiffe_cert("plain")                    # a leaf without a URI SAN

    r = s_client(port, alpn="h2", ca=ca.bundle, cert=w)   # -> SClient
    r.ok, r.alpn, r.protocol, r.serial, r.reused, r.alert, r.output

    ctx = client_context(ca=ca.bundle, cert=w, alpn=["h2"])  # python ssl
    with TlsH1Conn(port, ctx) as c: c.send(...); c.read_response()
    probe(port, ctx) -> Probe (handshake + one HTTP/1.1 request; never raises)

    curl_https (env/curl.py)                     # curl over https
    grpc_tls_channel(port, ca=..., cert=w) -> grpc.Channel

    rotate(dst_workload_files, new_workload)      # rename() key, then cert

Every subprocess has a timeout and stdin that ends; every loop is bounded.
"""
import itertools
import os
import re
import shutil
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from env.clients import connect, wait_until
from env.h1 import H1Conn, request_bytes

REPO = Path(__file__).resolve().parents[2]
MINT = REPO / "certs" / "mint"
TRUST_DOMAIN = "cluster.local"
OPENSSL_TIMEOUT = 30.0
HANG_GUARD = 20.0  # seconds: generous limits against hangs, never timings
# Rotation: meshd re-reads files within ~3 s; the bound is generous for ASan.
RELOAD_WAIT = 15.0


# -- certificates ------------------------------------------------------------------------


def _openssl(*args, input_bytes=None, timeout=OPENSSL_TIMEOUT, check=True):
    p = subprocess.run(
        ["openssl", *map(str, args)],
        input=input_bytes,
        stdin=None if input_bytes is not None else subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
    )
    if check and p.returncode != 0:
        raise AssertionError(f"openssl {' '.join(map(str, args))} exited {p.returncode}: "
                             f"{p.stderr.decode(errors='replace')}")
    return p


def cert_serial(pem):
    """Serial of the first certificate in `pem` (a path, or PEM/DER bytes) as
    upper-case hex without leading zeros, as `openssl x509 -serial` prints it."""
    if isinstance(pem, (str, Path)):
        p = _openssl("x509", "-noout", "-serial", "-in", pem)
    else:
        inform = "PEM" if pem.lstrip().startswith(b"-----") else "DER"
        p = _openssl("x509", "-noout", "-serial", "-inform", inform, input_bytes=pem)
    out = p.stdout.decode().strip()
    assert out.startswith("serial="), out
    return out[len("serial="):].upper().lstrip("0") or "0"


def der_to_pem(der):
    return ssl.DER_cert_to_PEM_cert(der).encode()


@dataclass
class Workload:
    """One minted identity: key, cert (the leaf) and chain (leaf + CA) paths."""

    name: str
    key: Path
    cert: Path
    chain: Path
    spiffe_id: str
    _serial: str = field(default=None, repr=False)

    @property
    def serial(self):
        if self._serial is None:
            self._serial = cert_serial(self.cert)
        return self._serial


class Ca:
    """A mesh CA in `dir` (certs/mint ca), and workloads signed by it."""

    def __init__(self, dir, trust_domain=TRUST_DOMAIN):
        self.dir = Path(dir)
        self.trust_domain = trust_domain
        self._mint("ca", self.dir, "--trust-domain", trust_domain)
        self.bundle = self.dir / "bundle.pem"
        self.ca_pem = self.dir / "ca.pem"
        self.ca_key = self.dir / "ca.key"
        self._seq = itertools.count(1)

    @staticmethod
    def _mint(*args):
        p = subprocess.run(["bash", str(MINT), *map(str, args)], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=OPENSSL_TIMEOUT)
        if p.returncode != 0:
            raise AssertionError(f"certs/mint {' '.join(map(str, args))} exited {p.returncode}: "
                                 f"{p.stderr.decode(errors='replace')}")
        return p

    def spiffe_id(self, sa, ns="default"):
        return f"spiffe://{self.trust_domain}/ns/{ns}/sa/{sa}"

    def workload(self, name, sa=None, ns="default", dns=("localhost",), expired=False, usage=None):
        """certs/mint workload DIR NAME --ns NS --sa SA [--dns H]... [--expired]
        [--serve-only|--client-only] (usage: "serve" | "client" | None).
        A name minted twice gets a fresh key and serial (the files are replaced)."""
        sa = sa or name
        args = ["workload", self.dir, name, "--ns", ns, "--sa", sa]
        for h in dns:
            args += ["--dns", h]
        if expired:
            args.append("--expired")
        if usage == "serve":
            args.append("--serve-only")
        elif usage == "client":
            args.append("--client-only")
        self._mint(*args)
        return Workload(name, self.dir / f"{name}.key", self.dir / f"{name}.pem",
                        self.dir / f"{name}-chain.pem", self.spiffe_id(sa, ns))

    def fresh(self, w):
        """A new key and certificate for the identity of `w` under a new file
        name (for rotation): returns the new Workload."""
        n = next(self._seq)
        sa = w.spiffe_id.rsplit("/sa/", 1)[1]
        ns = w.spiffe_id.split("/ns/", 1)[1].split("/", 1)[0]
        return self.workload(f"{w.name}-v{n}", sa=sa, ns=ns)

    def no_spiffe_cert(self, name, dns="localhost"):
        """A leaf signed by this CA whose only SAN is DNS:`dns` (no spiffe://
        URI): what a mesh must refuse as an identity."""
        key, pem, csr, ext = (self.dir / f"{name}.{s}" for s in ("key", "pem", "csr", "ext"))
        _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key)
        _openssl("req", "-new", "-key", key, "-subj", f"/O=meshd/CN={name}", "-out", csr)
        ext.write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                       f"extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:{dns}\n")
        _openssl("x509", "-req", "-in", csr, "-CA", self.ca_pem, "-CAkey", self.ca_key, "-set_serial",
                 "0x" + os.urandom(16).hex(), "-days", "1", "-sha256", "-extfile", ext, "-out", pem)
        chain = self.dir / f"{name}-chain.pem"
        chain.write_bytes(pem.read_bytes() + self.ca_pem.read_bytes())
        return Workload(name, key, pem, chain, None)


def install(w, dst_dir, name="live", keep=False):
    """Copy w's chain and key to dst_dir/NAME.pem and dst_dir/NAME.key (the
    fixed paths a bundle names); returns a Workload for those paths.
    keep=True leaves files already there as they are."""
    dst_dir = Path(dst_dir)
    dst_dir.mkdir(parents=True, exist_ok=True)
    key, chain = dst_dir / f"{name}.key", dst_dir / f"{name}.pem"
    if not (keep and key.exists() and chain.exists()):
        shutil.copyfile(w.key, key)
        shutil.copyfile(w.chain, chain)
    return Workload(name, key, chain, chain, w.spiffe_id)


_tmp_seq = itertools.count(1)


def replace_file(path, data):
    """Atomically replace `path` with `data` (bytes): write a temp file in the
    same directory, fsync, rename() over it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{next(_tmp_seq)}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def rotate(live, new, key_data=None, chain_data=None):
    """Rotate the files of `live` (a Workload from install()) to `new`'s key
    and chain, each by rename(): the key first, then the certificate, as a
    certificate manager writing two files would. key_data / chain_data
    override what is written (broken-file tests)."""
    replace_file(live.key, new.key.read_bytes() if key_data is None else key_data)
    replace_file(live.chain, new.chain.read_bytes() if chain_data is None else chain_data)


# -- openssl s_client ---------------------------------------------------------------------

_HANDSHAKE_DONE = re.compile(r"^(New|Reused), (\S+), Cipher is (\S+)", re.M)
_ALPN_RE = re.compile(r"^ALPN protocol: (\S+)", re.M)
_PROTO_RE = re.compile(r"^\s*Protocol\s*: (\S+)", re.M)
_CERT_RE = re.compile(r"Server certificate\n(-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----)", re.S)
_ALERT_RE = re.compile(r"(?:ssl/)?(?:tlsv1\d?|sslv3|ssl/tls) alert ([a-z ]+)", re.I)


class SClient:
    """One `openssl s_client` run. ok: the handshake completed and no alert
    or error followed within the run; handshake: the handshake completed
    (the client's view: under TLS 1.3 the server checks the client's
    certificate after that, so a refusal shows as handshake and not ok);
    protocol ("TLSv1.3"), cipher, alpn (None: "No ALPN negotiated"),
    reused (bool), serial (of the server's leaf, None on resumption),
    alert (text of a received alert, e.g. "no application protocol"),
    errors (the `:error:` lines), rc, output (all of it)."""

    def __init__(self, argv, rc, output):
        self.argv = argv
        self.rc = rc
        self.output = output
        m = _HANDSHAKE_DONE.search(output)
        # s_client prints the session summary when the handshake completes,
        # or at exit after a failure (then after the error lines).
        summary, first_error = output.find("SSL handshake has read"), output.find(":error:")
        self.handshake = (bool(m) and m.group(3) != "(NONE)" and summary >= 0
                          and (first_error < 0 or first_error > summary))
        self.reused = bool(m) and m.group(1) == "Reused"
        self.cipher = m.group(3) if m else None
        pm = _PROTO_RE.search(output)
        self.protocol = pm.group(1) if pm else (m.group(2) if m else None)
        am = _ALPN_RE.search(output)
        self.alpn = am.group(1) if am else None
        cm = _CERT_RE.search(output)
        self.cert_pem = cm.group(1).encode() if cm else None
        self.serial = cert_serial(self.cert_pem) if self.cert_pem else None
        self.errors = [l for l in output.splitlines() if ":error:" in l]
        al = _ALERT_RE.search(output)
        self.alert = al.group(1).strip().lower() if al else None
        self.ok = self.handshake and not self.errors and self.alert is None

    def __repr__(self):
        return (f"SClient(ok={self.ok}, handshake={self.handshake}, protocol={self.protocol}, alpn={self.alpn}, "
                f"reused={self.reused}, serial={self.serial}, alert={self.alert!r}, rc={self.rc}, "
                f"errors={self.errors[:3]}, argv={' '.join(self.argv)})")


def s_client(port, alpn=None, ca=None, cert=None, tls=None, sess_out=None, sess_in=None, servername=None,
             send=None, wait_ticket=None, settle=0.5, timeout=HANG_GUARD, cipher=None, extra=()):
    """Run `openssl s_client` against 127.0.0.1:port and return an SClient.

    alpn: "h2" or "h2,http/1.1"; ca: CA file to verify against (the result
    shows verification but the handshake goes on either way); cert: a
    Workload presented as client certificate; tls: "1.1" | "1.2" | "1.3"
    (pins the version; 1.1 also lowers the client's security level so that
    it can offer it); sess_out / sess_in: session files (resumption).

    stdin is a pipe: once the handshake is done (or the process ended) the
    runner waits `settle` s for anything the server sends after it (a TLS 1.3
    server's post-handshake alert, session tickets), then writes `send`
    (bytes, if given) and waits `settle` s again, then closes stdin. With
    wait_ticket (default: when sess_out is set and the protocol is TLS 1.3)
    it waits (bounded) for the NewSessionTicket before closing. The process
    is killed by PID if it runs past `timeout`."""
    argv = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", servername or "localhost"]
    if alpn:
        argv += ["-alpn", alpn]
    if ca:
        argv += ["-CAfile", str(ca)]
    if cert is not None:
        argv += ["-cert", str(cert.chain), "-key", str(cert.key)]
    if tls:
        argv.append("-tls" + tls.replace(".", "_"))
        if tls in ("1", "1.0", "1.1"):
            argv += ["-cipher", "DEFAULT@SECLEVEL=0"]
    if cipher:
        argv += ["-cipher", cipher]
    if sess_out:
        argv += ["-sess_out", str(sess_out)]
    if sess_in:
        argv += ["-sess_in", str(sess_in)]
    argv += list(extra)
    env = dict(os.environ)
    if tls in ("1", "1.0", "1.1"):
        # Debian's openssl.cnf sets MinProtocol = TLSv1.2 for every client.
        env["OPENSSL_CONF"] = "/dev/null"
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    chunks = []
    lock = threading.Lock()

    def reader():
        for _ in range(1_000_000):
            b = proc.stdout.read1(65536) if hasattr(proc.stdout, "read1") else proc.stdout.read(65536)
            if not b:
                return
            with lock:
                chunks.append(b)

    t = threading.Thread(target=reader, daemon=True)
    t.start()

    def text():
        with lock:
            return b"".join(chunks).decode("utf-8", "replace")

    deadline = time.monotonic() + timeout

    def wait_for(pred, limit):
        end = min(deadline, time.monotonic() + limit)
        for _ in range(int(limit / 0.02) + 100):
            if pred() or proc.poll() is not None or time.monotonic() >= end:
                return pred()
            time.sleep(0.02)  # poll interval
        return pred()

    try:
        wait_for(lambda: _HANDSHAKE_DONE.search(text()) is not None, timeout)
        if proc.poll() is None:
            time.sleep(settle)  # room for a post-handshake alert (not a timing assertion)
            if wait_ticket is None:
                wait_ticket = bool(sess_out) and "TLSv1.3" in text()
            if wait_ticket:
                wait_for(lambda: "Post-Handshake New Session Ticket arrived" in text(), timeout / 2)
            if send and proc.poll() is None:
                try:
                    proc.stdin.write(send)
                    proc.stdin.flush()
                except BrokenPipeError:
                    pass
                time.sleep(settle)
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            proc.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()  # by PID
            proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        t.join(10)
    return SClient([str(a) for a in argv], proc.returncode, text())


# -- python ssl clients ---------------------------------------------------------------------


def client_context(ca=None, cert=None, alpn=None, min_version=None, max_version=None, check_hostname=True):
    """A client SSLContext: verifies the server against `ca` (None: no
    verification), presents `cert` (a Workload) if given, offers `alpn`
    (list of str). min/max_version: ssl.TLSVersion values."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_verify_locations(cafile=str(ca))
        ctx.check_hostname = check_hostname
    if cert is not None:
        ctx.load_cert_chain(str(cert.chain), str(cert.key))
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if min_version is not None:
        ctx.minimum_version = min_version
    if max_version is not None:
        ctx.maximum_version = max_version
    return ctx


def server_context(w, ca=None, require_client_cert=False, alpn=None, sni_seen=None):
    """A server SSLContext presenting `w`; verifies client certificates
    against `ca` (required or optional); `alpn`: protocols it accepts;
    sni_seen: a list the SNI of each ClientHello is appended to."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(w.chain), str(w.key))
    if ca is not None:
        ctx.load_verify_locations(cafile=str(ca))
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if sni_seen is not None:
        def on_sni(sslobj, name, _ctx):
            sni_seen.append(name)
        ctx.sni_callback = on_sni
    return ctx


def tls_connect(port, ctx, server_hostname="localhost", timeout=HANG_GUARD, session=None):
    """A TLS socket to 127.0.0.1:port, handshake done (raises ssl.SSLError /
    OSError when it fails)."""
    raw = connect(port, timeout=timeout)
    try:
        s = ctx.wrap_socket(raw, server_hostname=server_hostname, session=session)
    except BaseException:
        raw.close()
        raise
    s.settimeout(timeout)
    return s


class TlsH1Conn(H1Conn):
    """env.h1.H1Conn over TLS: the handshake happens in the constructor
    (raising ssl.SSLError / OSError when refused). tls: the SSLSocket
    (.version(), .selected_alpn_protocol(), .getpeercert(True))."""

    def __init__(self, port, ctx, server_hostname="localhost", timeout=HANG_GUARD, session=None):
        self.timeout = timeout
        self.sock = tls_connect(port, ctx, server_hostname=server_hostname, timeout=timeout, session=session)
        self.buf = bytearray()
        self.eof = None

    @property
    def tls(self):
        return self.sock

    def peer_serial(self):
        return cert_serial(der_to_pem(self.sock.getpeercert(binary_form=True)))


@dataclass
class Probe:
    """probe(): handshake (bool), then one HTTP/1.1 request; status (int or
    None), body, xfcc (what the upstream echoed, if anything), error
    (str of what failed, e.g. an alert), alpn, version, serial, reused
    (the session was resumed; session= to probe() offers one)."""

    handshake: bool = False
    status: int = None
    headers: list = None
    body: bytes = None
    error: str = None
    alpn: str = None
    version: str = None
    serial: str = None
    reused: bool = None

    @property
    def ok(self):
        return self.status is not None and self.error is None


def probe(port, ctx, path="/plain/probe", headers=(), host="localhost", timeout=HANG_GUARD, session=None):
    """Connect with `ctx`, then send one HTTP/1.1 GET (with Connection: close)
    and read its response. Never raises for a TLS or connection failure: it
    is in .error. A TLS 1.3 server that refuses the client's certificate does
    so after the client's handshake finished: the request's read then fails
    with the alert, which this records."""
    r = Probe()
    try:
        c = TlsH1Conn(port, ctx, timeout=timeout, session=session)
    except (ssl.SSLError, OSError) as e:
        r.error = f"handshake: {e!r}"
        return r
    with c:
        r.handshake = True
        r.reused = c.sock.session_reused
        r.alpn = c.sock.selected_alpn_protocol()
        r.version = c.sock.version()
        der = c.sock.getpeercert(binary_form=True)
        r.serial = cert_serial(der_to_pem(der)) if der else None
        try:
            c.send(request_bytes("GET", path, host=host, headers=["Connection: close", *headers]))
            resp = c.read_response()
            r.status, r.headers, r.body = resp.status, resp.headers, resp.body
        except (ssl.SSLError, OSError, AssertionError) as e:
            r.error = f"after handshake: {e!r}"
    return r


def partial_client_hello(nbytes=None):
    """The first `nbytes` (default: half) of a real TLS ClientHello record."""
    ctx = client_context(alpn=["h2"])
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = out.read()
    assert hello[:1] == b"\x16" and len(hello) > 100, hello[:16]
    return hello[: nbytes if nbytes is not None else len(hello) // 2]


# -- grpcio -------------------------------------------------------------------------------------


def grpc_credentials(ca, cert=None):
    """grpc.ssl_channel_credentials verifying against `ca`, presenting `cert`."""
    import grpc

    return grpc.ssl_channel_credentials(
        root_certificates=Path(ca).read_bytes(),
        private_key=cert.key.read_bytes() if cert is not None else None,
        certificate_chain=cert.chain.read_bytes() if cert is not None else None,
    )


def grpc_tls_channel(port, ca, cert=None, name="localhost", options=()):
    """A grpcio secure channel of its own to 127.0.0.1:port; the server's
    certificate must name DNS:`name` (certs here are minted with
    --dns localhost)."""
    import grpc

    opts = [
        ("grpc.enable_retries", 0),
        ("grpc.enable_http_proxy", 0),
        ("grpc.use_local_subchannel_pool", 1),
        ("grpc.ssl_target_name_override", name),
        ("grpc.default_authority", name),
    ] + list(options)
    return grpc.secure_channel(f"127.0.0.1:{port}", grpc_credentials(ca, cert), options=opts)


def metadata(call_record, name):
    """Values of metadata `name` in a grpc_backend call record (str)."""
    import base64

    return [base64.b64decode(v).decode("latin-1") for k, v in call_record["metadata"] if k == name]


def xfcc(by, uri):
    """The x-forwarded-client-cert value meshd sets (Envoy's format)."""
    return f"By={by};URI={uri}"


# -- meshd: stats and logs ---------------------------------------------------------------------


def counter(m, name, **labels):
    """A counter's value; fails if the series is missing (a missing series
    is a bug to show, not a zero)."""
    v = m.stat(name, **labels)
    assert v is not None, f"{name}{labels} missing from /stats/prometheus:\n" + "\n".join(
        l for l in m.stats_text().splitlines() if "tls" in l)
    return v


def log_events(m, event, **fields):
    """meshd log lines of `event` whose key=value fields include `fields`
    (values compared as written, quotes removed)."""
    out = []
    for line in m.log().splitlines():
        if f"event={event} " not in line + " ":
            continue
        kv = parse_log_line(line)
        if all(kv.get(k) == str(v) for k, v in fields.items()):
            out.append(line)
    return out


_KV_RE = re.compile(r'([A-Za-z0-9_.]+)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_log_line(line):
    return {k: (v[1:-1] if v.startswith('"') else v) for k, v in _KV_RE.findall(line)}


def wait_log(m, event, timeout=RELOAD_WAIT, **fields):
    """Wait (bounded) until meshd logged `event` with `fields`; returns the lines."""
    return wait_until(lambda: log_events(m, event, **fields), timeout=timeout, interval=0.05,
                      what=f"event={event} {fields} in {m.name}'s log")


# -- bundle fragments ----------------------------------------------------------------------------


def downstream_tls(cert, ca=None, client_certificate="REQUIRE", allow_plaintext=False, handshake_timeout_ms=0):
    """A Listener.tls block (text format)."""
    s = (f'tls {{ certificate {{ certificate_chain_file: "{cert.chain}" private_key_file: "{cert.key}" }}'
         f" client_certificate: {client_certificate}")
    if ca is not None:
        s += f' trusted_ca_file: "{ca}"'
    if allow_plaintext:
        s += " allow_plaintext: true"
    if handshake_timeout_ms:
        s += f" handshake_timeout_ms: {handshake_timeout_ms}"
    return s + " }"


def upstream_tls(ca, cert=None, sni=None, match=()):
    """A Cluster.tls block (text format)."""
    s = f'tls {{ trusted_ca_file: "{ca}"'
    if cert is not None:
        s += f' certificate {{ certificate_chain_file: "{cert.chain}" private_key_file: "{cert.key}" }}'
    if sni:
        s += f' sni: "{sni}"'
    for i in match:
        s += f' match_spiffe_ids: "{i}"'
    return s + " }"


def http_bundle(listeners, clusters, route_cluster="app", routes=None):
    """Listeners (text blocks) -> one route config "routes" (every path to
    `route_cluster`, or the given route blocks) -> clusters (text blocks).
    Uses {admin_port}; the meshd fixture fills it."""
    routes = routes or [f'routes {{ name: "all" match {{ prefix: "/" }} route {{ cluster: "{route_cluster}" }} }}']
    return "\n".join(listeners) + (
        '\nroute_configs { name: "routes" virtual_hosts { name: "all" domains: "*"\n  '
        + "\n  ".join(routes) + "\n} }\n") + "\n".join(clusters) + "\n"


def http_listener(name, port, codec="AUTO", tls="", hcm_extra=""):
    return (f'listeners {{ name: "{name}" address {{ address: "127.0.0.1" port: {port} }}\n'
            f'  http {{ codec: {codec} route_config: "routes" {hcm_extra} }}\n  {tls}\n}}')


def cluster(name, port, protocol="HTTP2", tls=""):
    return (f'clusters {{ name: "{name}" connect_timeout_ms: 2000 protocol: {protocol}\n'
            f'  endpoints {{ address {{ address: "127.0.0.1" port: {port} }} }}\n  {tls}\n}}')


# -- fixtures (test files import them from here) ---------------------------------------------


@pytest.fixture
def pki(tmp_path):
    """A fresh mesh CA (trust domain cluster.local) and the usual identities:
    .ca; .meshd (sa meshd, DNS localhost: what meshd presents); .frontend and
    .backend (clients / servers of the mesh); .other_ca, a second CA, and
    .rogue, a workload it signed (sa frontend: the same SPIFFE ID, wrong CA)."""

    class Pki:
        pass

    p = Pki()
    p.dir = tmp_path / "pki"
    p.ca = Ca(p.dir / "mesh")
    p.meshd = p.ca.workload("meshd")
    p.frontend = p.ca.workload("frontend")
    p.backend = p.ca.workload("backend")
    p.other_ca = Ca(p.dir / "other")
    p.rogue = p.other_ca.workload("rogue", sa="frontend")
    return p


@pytest.fixture
def tls_grpc_backend(echo_stubs, ports, workdir, request):
    """Factory: tls_grpc_backend(server_cert, ca, require_client_auth=True,
    name="tls") -> a started GrpcBackend whose service port speaks TLS
    (grpc.ssl_server_credentials) and whose control port stays plaintext."""
    from env.grpc_backend import GrpcBackend, started_backends

    def build(server_cert, ca, require_client_auth=True, name="tls"):
        return GrpcBackend(echo_stubs[2], ports.get(), ports.get(), workdir, name=name,
                           tls={"cert_chain": server_cert.chain, "key": server_cert.key, "ca": ca,
                                "require_client_auth": require_client_auth})

    yield from started_backends(request, build)
