# SPDX-License-Identifier: Apache-2.0
"""dnsmasq as the DNS server of the discovery tests: A and SRV records on a
loopback UDP (and TCP) port, authoritative for *.test (unknown names there
are NXDOMAIN), nothing forwarded.

    d = Dnsmasq(workdir, port, ttl=1)
    d.start(hosts={"b1.svc.test": ["127.0.0.1"]},
            srv=[("_grpc._tcp.svc.test", "b1.svc.test", 8001, 0, 1)])  # name, target, port, priority, weight
    d.query("b1.svc.test", QTYPE_A) -> (rcode, answer count)
    d.restart(hosts=..., srv=...)   # new records, same port
    d.stop()                        # by PID; idempotent

Its config file and query log live in the test's tmp dir (dnsmasqN.conf /
dnsmasqN.log). start() returns once dnsmasq answers on its port.
"""
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

DNSMASQ = "/usr/sbin/dnsmasq"
READY_DEADLINE = 10.0
QTYPE_A = 1
QTYPE_AAAA = 28
QTYPE_SRV = 33
RCODE_NXDOMAIN = 3


def _pdeathsig_prefix():
    # dnsmasq dies with pytest even if pytest is killed (ctest TIMEOUT).
    p = shutil.which("setpriv")
    return [p, "--pdeathsig", "KILL", "--"] if p else []


def dns_query(port, name, qtype, timeout=1.0, host="127.0.0.1"):
    """One UDP query; returns (rcode, answer count). Raises OSError (e.g.
    socket.timeout, ConnectionRefusedError) when nothing answers."""
    qid = random.randrange(1 << 16)
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\0" + struct.pack("!HH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.connect((host, port))
        s.send(q)
        deadline = time.monotonic() + timeout
        for _ in range(16):  # skip stray datagrams with another id
            s.settimeout(max(0.01, deadline - time.monotonic()))
            r = s.recv(4096)
            if len(r) >= 12 and struct.unpack("!H", r[:2])[0] == qid:
                flags, _qd, an = struct.unpack("!HHH", r[2:8])
                return flags & 0xF, an
    raise socket.timeout(f"no answer for {name} from {host}:{port}")


class Dnsmasq:
    _seq = 0

    def __init__(self, workdir, port, ttl=1):
        Dnsmasq._seq += 1
        self.name = f"dnsmasq{Dnsmasq._seq}"
        self.workdir = Path(workdir)
        self.port = port
        self.ttl = ttl
        self.conf_path = self.workdir / f"{self.name}.conf"
        self.log_path = self.workdir / f"{self.name}.log"
        self.proc = None
        self.hosts = {}
        self.srv = []

    def config(self):
        lines = [
            f"port={self.port}",
            "listen-address=127.0.0.1",
            "bind-interfaces",
            "no-resolv",
            "no-hosts",
            "local=/test/",  # authoritative for *.test: unknown names are NXDOMAIN
            f"local-ttl={self.ttl}",
            "user=root",
            "pid-file=",
            "log-queries",
            f"log-facility={self.log_path}",
        ]
        for host, ips in self.hosts.items():
            for ip in ips:
                lines.append(f"host-record={host},{ip},{self.ttl}")
        for name, target, port, priority, weight in self.srv:
            lines.append(f"srv-host={name},{target},{port},{priority},{weight}")
        return "\n".join(lines) + "\n"

    def start(self, hosts=None, srv=None):
        if hosts is not None:
            self.hosts = dict(hosts)
        if srv is not None:
            self.srv = list(srv)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(self.config())
        argv = _pdeathsig_prefix() + [DNSMASQ, "--keep-in-foreground", f"--conf-file={self.conf_path}"]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        self._wait_ready()
        return self

    def _wait_ready(self):
        deadline = time.monotonic() + READY_DEADLINE
        last = None
        for _ in range(int(READY_DEADLINE / 0.02) + 10):
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace")
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}: {err}\n{self.config()}")
            try:
                dns_query(self.port, "ready.probe.test", QTYPE_A, timeout=0.2)
                return
            except OSError as e:
                last = e
            if time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.name} not answering on port {self.port} after {READY_DEADLINE}s: {last!r}")

    def query(self, name, qtype=QTYPE_A):
        return dns_query(self.port, name, qtype)

    def restart(self, hosts=None, srv=None):
        """Stop, then start with new records (or the same ones) on the same port."""
        self.stop()
        return self.start(hosts=hosts, srv=srv)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # by PID
                self.proc.wait(10)
        self.proc.stderr.close()
        self.proc = None

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""
