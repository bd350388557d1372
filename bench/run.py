# SPDX-License-Identifier: Apache-2.0
"""meshd benchmark harness: meshd side by side with nghttpx, HAProxy and nginx,
and with no proxy at all ("direct"), same run, same machine.

Run it through bench/run.sh (or `make bench`), which installs the packages and
builds Release first. By hand, after a Release build:

    /usr/bin/python3 bench/run.py [--build build/release] [--runs 3] [--quick]
                                  [--only SCENARIO,...] [--targets NAME,...]
                                  [--meshd-http1] [--keep] [--out FILE.md]

Scenarios (see bench/README.md for what each measures and why):
  memory    RSS/USS idle after start, with 10,000 idle h2c connections; start-up time
  unary     gRPC unary throughput (h2load c16 m16), proxy CPU per request, peak RSS
  latency   gRPC unary latency (h2load c1 m1), proxy on its own core and on the client's core
  stream    gRPC server streaming, 1 MiB messages, bytes/s
  http1     HTTP/1.1 keep-alive (wrk c50)
  tcp       raw TCP: iperf3 throughput, ping-pong round trips (both placements)

Exit status: 0 when every scenario ran for every target that supports it (however
slow), 1 when one could not run (a proxy that did not start, a tool that failed,
a run whose requests failed), 2 on bad arguments.
"""
import argparse
import atexit
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONFIGS = HERE / "configs"
PY = "/usr/bin/python3"

# meshd serves HTTP/1.1 downstream (codec HTTP1) to HTTP/1.1 upstreams since
# the HTTP/1.1 issue; --no-meshd-http1 leaves it out of scenario 3.
MESHD_HTTP1 = True
MESHD_HTTP1_NA = "n/a (--no-meshd-http1)"

PROXIES = ["meshd", "nghttpx", "haproxy", "nginx"]

# CPU placement on a 2-core machine (bench/README.md): the proxy alone on one
# core, everything else (load generators, backends, this script) on the other.
CPU_LOAD = 0
CPU_PROXY = 1

# Durations (seconds) and loads, per run; each cell is run RUNS times, median kept.
RUNS = 3
D_UNARY = 3          # h2load throughput
D_LATENCY = 2        # h2load latency, per placement
D_STREAM = 3         # h2load streaming
D_WRK = 3            # wrk
D_IPERF = 2          # iperf3
D_PING = 2           # ping-pong, per placement
UNARY_C, UNARY_M = 16, 16
STREAM_C, STREAM_M = 1, 4
STREAM_MESSAGES, STREAM_SIZE = 4, 1 << 20
WRK_C = 50
IDLE_CONNS = 10000
NOFILE = 20000      # set from the hard RLIMIT_NOFILE at start
TIME_BUDGET = 570    # seconds: scenarios not started by then are reported as not run

GRPC_BODY = b"\x00\x00\x00\x00\x10" + b"a" * 16  # one 16-byte gRPC message
GRPC_HEADERS = ["-H", "content-type: application/grpc", "-H", "te: trailers"]
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

T0 = time.monotonic()


def log(msg):
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


class ScenarioError(Exception):
    pass


# --------------------------------------------------------------------------- processes

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


_ports_given = set()


def ports(n):
    out = []
    while len(out) < n:
        p = free_port()
        if p not in _ports_given:
            _ports_given.add(p)
            out.append(p)
    return out


def children_map():
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
            ppid = int(st[st.rindex(")") + 2:].split()[1])
        except (OSError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    return kids


def tree(pid):
    """pid and all its descendants."""
    kids = children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_seconds(pids):
    """utime+stime (all threads) summed over pids, in seconds."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                st = f.read()
            fields = st[st.rindex(")") + 2:].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            pass
    return total / CLK_TCK


def memory(pids):
    """(RSS, USS, PSS) in bytes summed over pids, from smaps_rollup. USS: private pages."""
    rss = uss = pss = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    k, _, v = line.partition(":")
                    if k == "Rss":
                        rss += int(v.split()[0]) * 1024
                    elif k == "Pss":
                        pss += int(v.split()[0]) * 1024
                    elif k in ("Private_Clean", "Private_Dirty", "Private_Hugetlb"):
                        uss += int(v.split()[0]) * 1024
        except OSError:
            pass
    return rss, uss, pss


def rss_fast(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except (OSError, ValueError, IndexError):
            pass
    return total


def pin(pids, cpu):
    """Move every thread of every pid to one CPU."""
    for p in pids:
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                try:
                    os.sched_setaffinity(int(t), {cpu})
                except OSError:
                    pass
        except OSError:
            pass


class Proc:
    """A started process, pinned with taskset, stopped by PID (its whole tree)."""

    live = []

    def __init__(self, name, argv, cpu, workdir, stdin=subprocess.DEVNULL, stdout=None):
        self.name = name
        prefix = []
        if shutil.which("setpriv"):
            prefix += ["setpriv", "--pdeathsig", "KILL", "--"]  # die with the harness
        prefix += ["taskset", "-c", str(cpu)]
        self.argv = [str(a) for a in argv]
        self.log_path = Path(workdir) / f"{name}.log"
        self._log = open(self.log_path, "ab")
        self.t_start = time.monotonic()
        self.p = subprocess.Popen(prefix + self.argv, stdin=stdin,
                                  stdout=stdout if stdout is not None else self._log,
                                  stderr=self._log)
        Proc.live.append(self)

    @property
    def pid(self):
        return self.p.pid

    def tree(self):
        return tree(self.p.pid) if self.p.poll() is None else []

    def alive(self):
        return self.p.poll() is None

    def log_tail(self, n=15):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM, timeout=5.0):
        if self in Proc.live:
            Proc.live.remove(self)
        pids = self.tree()
        if self.p.poll() is None:
            try:
                os.kill(self.p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        leftovers = [p for p in pids if p != self.p.pid]
        for p in leftovers:  # anything left of the tree (a worker), by PID
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.p.poll() is None:
            self.p.wait(5)
        # Orphaned workers were reparented to this harness (child subreaper): reap them.
        deadline = time.monotonic() + 2
        for p in leftovers:
            while time.monotonic() < deadline:
                try:
                    if os.waitpid(p, os.WNOHANG)[0] == p:
                        break
                except ChildProcessError:
                    break  # not ours (its own parent reaped it)
                time.sleep(0.01)
        self._log.close()
        return self.p.returncode


def stop_all():
    for p in list(reversed(Proc.live)):
        try:
            p.stop(timeout=3)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


def run_tool(argv, timeout, cpu=CPU_LOAD):
    """Run a measuring tool pinned to the load core; returns CompletedProcess (text)."""
    return subprocess.run(["taskset", "-c", str(cpu)] + [str(a) for a in argv],
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def http_get_status(port, path="/ready", timeout=0.5):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            data = s.recv(64)
        m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
        return int(m.group(1)) if m else None
    except OSError:
        return None


# --------------------------------------------------------------------------- configs

PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def render(text, values):
    missing = sorted({m.group(1) for m in PLACEHOLDER_RE.finditer(text)} - set(values))
    if missing:
        raise KeyError(f"placeholders without a value: {missing}")
    return PLACEHOLDER_RE.sub(lambda m: str(values[m.group(1)]), text)


class Env:
    """Paths, ports of the backend side, and the work dir."""

    def __init__(self, args):
        self.build = Path(args.build).resolve()
        self.meshd = self.build / "sidecar" / "meshd"
        self.meshctl = self.build / "xds" / "meshctl"
        self.backend = self.build / "bench" / "bench_backend"
        self.pingpong = self.build / "bench" / "bench_pingpong"
        self.idleconns = self.build / "bench" / "bench_idleconns"
        for p in (self.meshd, self.meshctl, self.backend, self.pingpong, self.idleconns):
            if not os.access(p, os.X_OK):
                sys.exit(f"bench: {p} missing: build Release first (bench/run.sh does)")
        self.workdir = Path(tempfile.mkdtemp(prefix="meshd-bench."))
        self.body = self.workdir / "grpc_request.bin"
        self.body.write_bytes(GRPC_BODY)
        self.meshd_http1 = args.meshd_http1
        (self.backend_h2_port, self.backend_h1_port, self.backend_echo_port,
         self.iperf_port) = ports(4)

    def backend_values(self):
        return {"backend_h2_port": self.backend_h2_port, "backend_h1_port": self.backend_h1_port,
                "backend_echo_port": self.backend_echo_port, "iperf_port": self.iperf_port,
                "workdir": self.workdir, "nofile": NOFILE,
                # HAProxy sizes its fd needs as 2 per maxconn; idle client connections take 1.
                "haproxy_maxconn": max(IDLE_CONNS + 500, (NOFILE - 200) // 2)}


class Target:
    """Where a scenario sends its load: ports for grpc (h2c), h1, tcp (iperf3), echo."""

    def __init__(self, name, grpc, h1, tcp, echo, na=None):
        self.name = name
        self.ports = {"grpc": grpc, "h1": h1, "tcp": tcp, "echo": echo}
        self.na = na or {}  # port kind -> reason it is not applicable
        self.proxy = None   # Proxy when it is one

    def port(self, kind):
        return self.ports[kind]


class Proxy:
    """One proxy under benchmark: renders its config, starts with one worker on
    the proxy core, waits for its readiness endpoint."""

    def __init__(self, env, name, seq):
        self.env, self.name, self.seq = env, name, seq
        grpc, h1, tcp, echo, ready = ports(5)
        self.values = {**env.backend_values(), "grpc_port": grpc, "h1_port": h1, "tcp_port": tcp,
                       "echo_port": echo, "ready_port": ready}
        na = {}
        if name == "nghttpx":
            # One frontend takes h2c and HTTP/1.1 (routed by path); no raw TCP.
            h1 = grpc
            tcp = echo = None
            na = {"tcp": "n/a (nghttpx: HTTP only)", "echo": "n/a (nghttpx: HTTP only)"}
        if name == "meshd" and not env.meshd_http1:
            h1 = None
            na = {"h1": MESHD_HTTP1_NA}
        self.target = Target(name, grpc, h1, tcp, echo, na)
        self.target.proxy = self
        self.ready_port = ready
        self.proc = None
        self.startup_ms = None

    def _argv(self):
        wd = self.env.workdir
        tag = f"{self.name}{self.seq}"
        if self.name == "meshd":
            text = (CONFIGS / "meshd.textproto").read_text()
            if self.env.meshd_http1:
                text += "\n" + (CONFIGS / "meshd_http1.textproto").read_text()
            src = wd / f"{tag}.textproto"
            src.write_text(render(text, self.values))
            r = subprocess.run([self.env.meshctl, "encode", src], capture_output=True,
                               env={**os.environ, "MESHCTL_PROTO_PATH": str(ROOT / "proto")})
            if r.returncode != 0:
                raise ScenarioError(f"meshctl encode {src}: {r.stderr.decode(errors='replace')[-500:]}")
            pb = wd / f"{tag}.pb"
            pb.write_bytes(r.stdout)
            return [self.env.meshd, "--bundle", pb, "--concurrency", "1", "--log-level", "warn",
                    "--drain-timeout", "1"]
        if self.name == "nghttpx":
            conf = wd / f"{tag}.conf"
            conf.write_text(render((CONFIGS / "nghttpx.conf").read_text(), self.values))
            return ["nghttpx", f"--conf={conf}"]
        if self.name == "haproxy":
            conf = wd / f"{tag}.cfg"
            conf.write_text(render((CONFIGS / "haproxy.cfg").read_text(), self.values))
            return ["haproxy", "-db", "-f", conf]
        if self.name == "nginx":
            for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
                (wd / "nginx-tmp" / d).mkdir(parents=True, exist_ok=True)
            conf = wd / f"{tag}.conf"
            conf.write_text(render((CONFIGS / "nginx.conf").read_text(), self.values))
            return ["nginx", "-p", wd, "-e", "stderr", "-c", conf]
        raise ValueError(self.name)

    def start(self, cpu=CPU_PROXY):
        argv = self._argv()
        t0 = time.monotonic()
        self.proc = Proc(f"{self.name}{self.seq}", argv, cpu, self.env.workdir)
        deadline = t0 + 15
        while time.monotonic() < deadline:
            if not self.proc.alive():
                raise ScenarioError(f"{self.name} exited with {self.proc.p.returncode} at start:\n"
                                    f"{self.proc.log_tail()}")
            if http_get_status(self.ready_port, "/ready", timeout=0.2) == 200:
                self.startup_ms = (time.monotonic() - t0) * 1000
                return self
            time.sleep(0.001)
        self.stop()
        raise ScenarioError(f"{self.name} not ready after 15 s:\n{self.proc.log_tail()}")

    def pids(self):
        return self.proc.tree() if self.proc else []

    def check_alive(self):
        if not self.proc or not self.proc.alive():
            raise ScenarioError(f"{self.name} is not running:\n{self.proc.log_tail() if self.proc else ''}")

    def stop(self):
        if self.proc:
            self.proc.stop()


# --------------------------------------------------------------------------- tools

def percentile(sorted_vals, p):
    if not sorted_vals:
        return None
    i = min(len(sorted_vals) - 1, max(0, int(round(p * (len(sorted_vals) - 1)))))
    return sorted_vals[i]


def parse_h2load(out):
    r = {}
    m = re.search(r"finished in ([\d.]+)(ms|s), ([\d.]+) req/s", out)
    if m:
        r["duration_s"] = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
        r["rps"] = float(m.group(3))
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", out)
    if m:
        (r["total"], r["started"], r["done"], r["succeeded"], r["failed"], r["errored"],
         r["timeout"]) = map(int, m.groups())
    m = re.search(r"status codes: (\d+) 2xx", out)
    if m:
        r["2xx"] = int(m.group(1))
    m = re.search(r"traffic: \S+ \((\d+)\) total", out)
    if m:
        r["bytes"] = int(m.group(1))
    return r


def h2load(port, path, clients, streams, duration=None, n=None, log_file=None, timeout=60):
    argv = ["h2load", "-t", "1", "-c", clients, "-m", streams, "-d", ENV.body, *GRPC_HEADERS]
    if duration:
        argv += ["-D", duration]
    else:
        argv += ["-n", n]
    if log_file:
        Path(log_file).unlink(missing_ok=True)  # h2load appends to an existing file
        argv += ["--log-file", log_file]
    argv.append(f"http://127.0.0.1:{port}{path}")
    r = run_tool(argv, timeout)
    res = parse_h2load(r.stdout)
    if r.returncode != 0 or "succeeded" not in res or "rps" not in res:
        raise ScenarioError(f"h2load exited {r.returncode}: {(r.stdout + r.stderr)[-600:]}")
    bad = res["failed"] + res["errored"] + res["timeout"]
    if res["succeeded"] == 0 or bad > 0.01 * max(1, res["done"]) or res.get("2xx", 0) < res["succeeded"]:
        raise ScenarioError(f"h2load: {res['succeeded']} succeeded, {res['failed']} failed, "
                            f"{res['errored']} errored, {res['timeout']} timeout, {res.get('2xx')} 2xx")
    return res


def latencies_from_log(path):
    vals = []
    with open(path) as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) >= 3 and parts[1] == "200":
                vals.append(int(parts[2]))
    vals.sort()
    return vals


def lat_stats(vals_us):
    return {"p50_us": percentile(vals_us, 0.50), "p99_us": percentile(vals_us, 0.99),
            "p999_us": percentile(vals_us, 0.999), "n_lat": len(vals_us)}


WRK_UNIT = {"us": 1, "ms": 1000, "s": 1000000}


def parse_wrk(out):
    r = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        r["rps"] = float(m.group(1))
    m = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", out)
    if m:
        r["requests"] = int(m.group(1))
    for pct, key in (("50", "p50_us"), ("99", "p99_us")):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if m:
            r[key] = float(m.group(1)) * WRK_UNIT[m.group(2)]
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    r["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    r["sock_errors"] = sum(map(int, m.groups())) if m else 0
    return r


# --------------------------------------------------------------------------- measuring

class CpuMeter:
    """Proxy CPU (utime+stime of the process tree) over a block of work."""

    def __init__(self, target):
        self.pids = target.proxy.pids() if target.proxy else []

    def __enter__(self):
        self.c0 = cpu_seconds(self.pids)
        return self

    def __exit__(self, *exc):
        self.cpu_s = cpu_seconds(self.pids) - self.c0


class RssSampler:
    """Peak RSS of a process tree, sampled every 50 ms while in use."""

    def __init__(self, pids):
        self.pids, self.peak, self._stop = pids, 0, threading.Event()

    def __enter__(self):
        self.peak = rss_fast(self.pids)
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()
        return self

    def _run(self):
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss_fast(self.pids))

    def __exit__(self, *exc):
        self._stop.set()
        self.t.join()
        self.peak = max(self.peak, rss_fast(self.pids))


def scen_unary(t):
    port = t.port("grpc")
    path = "/bench.v1.Bench/Unary"
    h2load(port, path, UNARY_C, UNARY_M, n=4000)  # warm-up, not measured
    logf = ENV.workdir / "h2load.log"
    pids = t.proxy.pids() if t.proxy else []
    with CpuMeter(t) as cpu, RssSampler(pids) as rss:
        res = h2load(port, path, UNARY_C, UNARY_M, duration=D_UNARY, log_file=logf)
    out = {"rps": res["rps"], "requests": res["succeeded"], **lat_stats(latencies_from_log(logf))}
    if t.proxy:
        out["cpu_us_per_req"] = cpu.cpu_s * 1e6 / res["succeeded"]
        out["peak_rss"] = rss.peak
    return out


def scen_latency(t):
    port = t.port("grpc")
    path = "/bench.v1.Bench/Unary"
    h2load(port, path, 1, 1, n=500)  # warm-up
    logf = ENV.workdir / "h2load.log"
    with CpuMeter(t) as cpu:
        res = h2load(port, path, 1, 1, duration=D_LATENCY, log_file=logf)
    out = {"rps": res["rps"], **lat_stats(latencies_from_log(logf))}
    if t.proxy:
        out["cpu_us_per_req"] = cpu.cpu_s * 1e6 / res["succeeded"]
    return out


def scen_stream(t):
    port = t.port("grpc")
    path = "/bench.v1.Bench/Stream"
    h2load(port, path, STREAM_C, STREAM_M, n=8)  # warm-up
    with CpuMeter(t) as cpu:
        res = h2load(port, path, STREAM_C, STREAM_M, duration=D_STREAM)
    mib = res["bytes"] / (1 << 20)
    out = {"mib_s": mib / res["duration_s"], "calls_s": res["rps"]}
    if t.proxy:
        out["cpu_us_per_mib"] = cpu.cpu_s * 1e6 / mib
    return out


def scen_http1(t):
    port = t.port("h1")
    url = f"http://127.0.0.1:{port}/h1/"
    with CpuMeter(t) as cpu:
        r = run_tool(["wrk", "-t", "1", "-c", WRK_C, "-d", f"{D_WRK}s", "--latency", url], timeout=D_WRK + 30)
    res = parse_wrk(r.stdout)
    if r.returncode != 0 or "rps" not in res or not res.get("requests"):
        raise ScenarioError(f"wrk exited {r.returncode}: {(r.stdout + r.stderr)[-600:]}")
    if res["non2xx"] + res["sock_errors"] > 0.01 * res["requests"]:
        raise ScenarioError(f"wrk: {res['non2xx']} non-2xx, {res['sock_errors']} socket errors "
                            f"of {res['requests']}")
    out = {"rps": res["rps"], "requests": res["requests"], "p50_us": res.get("p50_us"),
           "p99_us": res.get("p99_us")}
    if t.proxy:
        out["cpu_us_per_req"] = cpu.cpu_s * 1e6 / res["requests"]
    return out


def scen_iperf(t):
    port = t.port("tcp")
    with CpuMeter(t) as cpu:
        r = run_tool(["iperf3", "-c", "127.0.0.1", "-p", port, "-t", D_IPERF, "-J"], timeout=D_IPERF + 30)
    try:
        j = json.loads(r.stdout)
        bps = j["end"]["sum_received"]["bits_per_second"]
        nbytes = j["end"]["sum_received"]["bytes"]
    except (ValueError, KeyError, TypeError):
        raise ScenarioError(f"iperf3 exited {r.returncode}: {(r.stdout + r.stderr)[-600:]}")
    if r.returncode != 0 or not bps:
        raise ScenarioError(f"iperf3 exited {r.returncode}: {j.get('error', '')}")
    out = {"gbit_s": bps / 1e9}
    if t.proxy:
        out["cpu_ms_per_gib"] = cpu.cpu_s * 1e3 / (nbytes / (1 << 30))
    return out


def scen_ping(t):
    port = t.port("echo")
    r = run_tool([ENV.pingpong, "127.0.0.1", port, D_PING, 64, 0.3], timeout=D_PING + 30)
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise ScenarioError(f"bench_pingpong exited {r.returncode}: {(r.stdout + r.stderr)[-400:]}")


# --------------------------------------------------------------------------- results

class Results:
    """cells[(scenario, target)] -> list of per-run dicts; errors and n/a reasons."""

    def __init__(self):
        self.cells = {}
        self.errors = {}
        self.na = {}
        self.failed = False

    def add(self, scen, target, value):
        self.cells.setdefault((scen, target), []).append(value)

    def error(self, scen, target, msg):
        self.errors.setdefault((scen, target), msg)
        self.failed = True

    def median(self, scen, target, key):
        vals = [v[key] for v in self.cells.get((scen, target), []) if v.get(key) is not None]
        return statistics.median(vals) if vals else None

    def status(self, scen, target):
        if (scen, target) in self.na:
            return self.na[(scen, target)]
        if (scen, target) in self.errors:
            return "error"
        return None


def over_budget():
    return time.monotonic() - T0 > TIME_BUDGET


def run_cells(res, scen, targets, fn, kind, runs, label=None):
    """RUNS rounds; in each, every target once (interleaved, so drift hits all alike)."""
    label = label or scen
    todo = []
    for t in targets:
        if t.port(kind) is None:
            res.na[(scen, t.name)] = t.na.get(kind, "n/a")
        else:
            todo.append(t)
    for i in range(runs):
        for t in todo:
            if (scen, t.name) in res.errors:
                continue
            if over_budget():
                res.error(scen, t.name, "not run: time budget exhausted")
                continue
            try:
                if t.proxy:
                    t.proxy.check_alive()
                v = fn(t)
                res.add(scen, t.name, v)
                log(f"  {label} run {i + 1} {t.name}: {short(v)}")
            except (ScenarioError, subprocess.TimeoutExpired, OSError) as e:
                res.error(scen, t.name, str(e).strip().splitlines()[0][:200] if str(e).strip() else repr(e))
                log(f"  {label} run {i + 1} {t.name}: ERROR {e}")


def short(v):
    return ", ".join(f"{k}={x:.1f}" if isinstance(x, float) else f"{k}={x}" for k, x in v.items())


# --------------------------------------------------------------------------- scenario groups

def phase_memory(res, runs, names):
    """Per proxy, RUNS fresh starts: start-up time, idle RSS/USS, 10k idle h2c conns."""
    log(f"memory and start-up: {runs} fresh starts per proxy, {IDLE_CONNS} idle h2c connections")
    seq = 100
    for i in range(runs):
        for name in names:
            if ("memory", name) in res.errors:
                continue
            if over_budget():
                res.error("memory", name, "not run: time budget exhausted")
                continue
            seq += 1
            px = Proxy(ENV, name, seq)
            client = None
            try:
                px.start()
                time.sleep(0.5)
                rss0, uss0, _ = memory(px.pids())
                # Two rounds of the same idle connections: the second shows
                # growth (memory kept from the first and not reused).
                held = []
                for rnd in (1, 2):
                    client = Proc(f"idleconns{seq}-{rnd}", [ENV.idleconns, "127.0.0.1", px.target.port("grpc"),
                                                            IDLE_CONNS, 60], CPU_LOAD, ENV.workdir,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
                    line = client.p.stdout.readline().decode().strip()
                    if not line.startswith("ready"):
                        client.p.wait(5)
                        raise ScenarioError(f"bench_idleconns: {line or client.log_tail(3)}")
                    time.sleep(0.5)
                    px.check_alive()
                    held.append(memory(px.pids()))
                    client.p.stdin.close()
                    client.p.wait(20)
                    client.stop()
                    time.sleep(0.5)
                (rss1, uss1, _), (_, uss2, _) = held
                v = {"startup_ms": px.startup_ms, "rss_idle": rss0, "uss_idle": uss0,
                     "rss_10k": rss1, "uss_10k": uss1, "uss_growth": uss2 - uss1,
                     "rss_per_conn": (rss1 - rss0) / IDLE_CONNS, "uss_per_conn": (uss1 - uss0) / IDLE_CONNS}
                res.add("memory", name, v)
                log(f"  memory run {i + 1} {name}: start {px.startup_ms:.1f} ms, idle RSS {mib(rss0)} "
                    f"USS {mib(uss0)} MiB, {IDLE_CONNS} conns: RSS {mib(rss1)} USS {mib(uss1)} MiB")
            except (ScenarioError, subprocess.TimeoutExpired, OSError) as e:
                res.error("memory", name, str(e).strip().splitlines()[0][:200])
                log(f"  memory run {i + 1} {name}: ERROR {e}")
            finally:
                if client and client.alive():
                    client.stop()
                px.stop()


def mib(b):
    return f"{b / (1 << 20):.1f}"


def phase_load(res, runs, names, only):
    """Every proxy started once (pinned to the proxy core), then each scenario
    round-robin over direct and the proxies."""
    direct = Target("direct", ENV.backend_h2_port, ENV.backend_h1_port, ENV.iperf_port, ENV.backend_echo_port)
    proxies = []
    targets = [direct]
    for name in names:
        px = Proxy(ENV, name, len(proxies) + 1)
        try:
            px.start()
            log(f"{name} ready in {px.startup_ms:.1f} ms (pid {px.proc.pid}, pinned to CPU {CPU_PROXY})")
        except ScenarioError as e:
            log(f"{name}: ERROR {e}")
            for scen in ("unary", "latency_split", "latency_same", "stream", "http1", "iperf",
                         "ping_split", "ping_same"):
                res.error(scen, name, f"did not start: {str(e).splitlines()[0]}")
            continue
        proxies.append(px)
        targets.append(px.target)

    # Pre-flight: a real gRPC client (unary + streaming) through every target.
    for t in targets:
        r = subprocess.run(["taskset", "-c", str(CPU_LOAD), PY, str(HERE / "grpc_check.py"), str(t.port("grpc")),
                            str(STREAM_MESSAGES), str(STREAM_SIZE)], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            msg = f"gRPC pre-flight failed: {(r.stderr or r.stdout).strip()[-200:]}"
            log(f"{t.name}: {msg}")
            for scen in ("unary", "latency_split", "latency_same", "stream"):
                res.error(scen, t.name, msg)
        else:
            log(f"{t.name}: gRPC pre-flight ok (unary + {STREAM_MESSAGES} x {STREAM_SIZE >> 20} MiB stream)")

    try:
        if "unary" in only:
            log(f"gRPC unary throughput: h2load c{UNARY_C} m{UNARY_M}, {D_UNARY} s")
            run_cells(res, "unary", targets, scen_unary, "grpc", runs)
        if "latency" in only:
            log(f"gRPC unary latency, proxy on its own core (CPU {CPU_PROXY}): h2load c1 m1, {D_LATENCY} s")
            run_cells(res, "latency_split", targets, scen_latency, "grpc", runs)
            log(f"gRPC unary latency, proxy on the client's core (CPU {CPU_LOAD})")
            for px in proxies:
                pin(px.pids(), CPU_LOAD)
            try:
                run_cells(res, "latency_same", targets, scen_latency, "grpc", runs)
            finally:
                for px in proxies:
                    pin(px.pids(), CPU_PROXY)
        if "stream" in only:
            log(f"gRPC server streaming: h2load c{STREAM_C} m{STREAM_M}, {STREAM_MESSAGES} x 1 MiB per call, "
                f"{D_STREAM} s")
            run_cells(res, "stream", targets, scen_stream, "grpc", runs)
        if "http1" in only:
            log(f"HTTP/1.1: wrk c{WRK_C}, {D_WRK} s")
            run_cells(res, "http1", targets, scen_http1, "h1", runs)
        if "tcp" in only:
            log(f"raw TCP: iperf3 {D_IPERF} s")
            run_cells(res, "iperf", targets, scen_iperf, "tcp", runs)
            log(f"raw TCP ping-pong (64 B), proxy on its own core, {D_PING} s")
            run_cells(res, "ping_split", targets, scen_ping, "echo", runs)
            log("raw TCP ping-pong, proxy on the client's core")
            for px in proxies:
                pin(px.pids(), CPU_LOAD)
            try:
                run_cells(res, "ping_same", targets, scen_ping, "echo", runs)
            finally:
                for px in proxies:
                    pin(px.pids(), CPU_PROXY)
    finally:
        for px in proxies:
            px.stop()
    return targets


# --------------------------------------------------------------------------- report

def fmt(v, nd=1):
    if v is None:
        return "—"
    if abs(v) >= 1000 and nd <= 1:
        return f"{v:,.0f}"
    return f"{v:.{nd}f}"


def ratio(a, b, nd=2):
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.{nd}f}"


def signed(v):
    return "—" if v is None else f"{v:+.0f}"


def cell_or(res, scen, target, text):
    st = res.status(scen, target)
    return st if st else text


def tool_version(argv, pattern=None):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        out = (r.stdout + r.stderr).strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    if pattern:
        m = re.search(pattern, out)
        return m.group(1) if m else out.splitlines()[0] if out else "?"
    return out.splitlines()[0] if out else "?"


def dpkg_version(pkg):
    try:
        r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True, timeout=10)
        return r.stdout.strip() or "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def busy_fraction(seconds=1.0):
    """Share of all CPUs busy over `seconds` (from /proc/stat): load from
    anything else on the machine when taken before the harness starts."""
    def snap():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + (v[4] if len(v) > 4 else 0)
        return sum(v), idle
    t0, i0 = snap()
    time.sleep(seconds)
    t1, i1 = snap()
    return 1 - (i1 - i0) / max(1, t1 - t0)


def _ancestors():
    out, p = set(), os.getppid()
    while p > 1:
        out.add(p)
        try:
            with open(f"/proc/{p}/stat") as f:
                st = f.read()
            p = int(st[st.rindex(")") + 2:].split()[1])
        except (OSError, ValueError):
            break
    return out


def other_cpu_snapshot():
    """{pid: (starttime, utime+stime+cutime+cstime ticks)} of every user-space
    process that is neither this harness's tree nor one of its ancestors. Two
    snapshots give the CPU other work on the machine used in between (children
    that exit are counted through their parent's cutime)."""
    mine = set(tree(os.getpid())) | _ancestors()
    snap = {}
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) in mine:
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
            fields = st[st.rindex(")") + 2:].split()
            if int(fields[1]) == 2 or int(d) == 2:  # kernel threads
                continue
            snap[int(d)] = (int(fields[19]), sum(int(x) for x in fields[11:15]))
        except (OSError, ValueError, IndexError):
            continue
    return snap


def other_cpu_seconds(before, after):
    total = 0
    for pid, (start, ticks) in after.items():
        b = before.get(pid)
        total += ticks - b[1] if b and b[0] == start else ticks
    return max(0, total) / CLK_TCK


def machine_info():
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / (1 << 20):.1f} GiB"
    except OSError:
        pass
    try:
        sha = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        sha += "+local changes" if dirty else ""
    except OSError:
        sha = "?"
    return {
        "host": socket.gethostname(), "nproc": os.cpu_count(), "cpu": cpu, "mem": mem,
        "kernel": platform.release(),
        "os": (Path("/etc/debian_version").read_text().strip() if Path("/etc/debian_version").exists() else "?"),
        "meshd": f"{tool_version([ENV.meshd, '--version'])} (git {sha}, Release)",
        "nghttpx": tool_version(["nghttpx", "--version"]) + f" (Debian {dpkg_version('nghttp2-proxy')})",
        "haproxy": tool_version(["haproxy", "-v"], r"(HAProxy version \S+)") + f" (Debian {dpkg_version('haproxy')})",
        "nginx": tool_version(["nginx", "-v"], r"(nginx/\S+)") + f" (Debian {dpkg_version('nginx')})",
        "h2load": tool_version(["h2load", "--version"]),
        "wrk": f"wrk {dpkg_version('wrk')}",
        "iperf3": tool_version(["iperf3", "--version"], r"(iperf \S+)"),
        "libnghttp2": dpkg_version("libnghttp2-14"),
        "python": platform.python_version(),
    }


def report(res, names, info, runtime_s, runs):
    M = res.median

    def ran(scen):
        return any(k[0] == scen for d in (res.cells, res.errors, res.na) for k in d)
    peers = [n for n in names if n != "meshd"]
    have_meshd = "meshd" in names
    L = []
    a = L.append
    today = datetime.date.today().isoformat()
    a(f"# meshd benchmark — {today}, {info['host']}")
    a("")
    a(f"- Machine: {info['nproc']} CPUs ({info['cpu']}), {info['mem']}, Linux {info['kernel']}, "
      f"Debian {info['os']}")
    a(f"- meshd: {info['meshd']}")
    a(f"- Peers: {info['nghttpx']}; {info['haproxy']}; {info['nginx']}")
    a(f"- Tools: {info['h2load']} (libnghttp2 {info['libnghttp2']}); {info['wrk']}; {info['iperf3']}; "
      f"Python {info['python']}")
    a(f"- Placement: proxy on CPU {CPU_PROXY}; load generator, backend and harness on CPU {CPU_LOAD} "
      f"(\"same core\" rows: the proxy moved to CPU {CPU_LOAD} as well). One worker per proxy: "
      "meshd `--concurrency 1`, nghttpx `workers=1`, HAProxy `nbthread 1`, nginx `worker_processes 1`.")
    a(f"- Method: {runs} runs per cell, interleaved across targets, median shown. Proxy CPU = utime+stime "
      "of the proxy's whole process tree (/proc) over the measured run ÷ work done. "
      "Memory = sum over the process tree from /proc/PID/smaps_rollup (USS = private pages).")
    a(f"- Total harness runtime: {runtime_s:.0f} s.")
    a(f"- Other load on the machine: other processes used {info['other_cpu_s']:.1f} CPU-seconds during the "
      f"run ({info['other_cpu_s'] / max(1, runtime_s) * 100:.1f} % of one core on average); "
      f"{info['busy_before'] * 100:.0f} % of all CPUs were busy in the second before the run, "
      f"{info['busy_after'] * 100:.0f} % in the second after it. Anything well above 0 perturbs the figures.")
    a("")
    a("Ratios: `× direct` is the target's figure ÷ direct's; `meshd ÷` is meshd's figure ÷ that row's "
      "(for throughput > 1 is better for meshd; for CPU, latency and memory < 1 is better for meshd).")
    a("")

    if ran("unary") or ran("latency_same") or ran("latency_split"):
        a("## 1. gRPC unary, 16-byte messages")
        a("")
    # 1a
    if ran("latency_same") or ran("latency_split"):
        a("### 1(a) Latency: h2load 1 connection × 1 stream")
        a("")
        a("Added latency = the target's percentile − direct's percentile in the same placement.")
        a("")
        a("| placement | target | req/s | p50 µs | p99 µs | p99.9 µs | added p50 / p99 µs | proxy CPU µs/req | "
          "meshd ÷ (added p50) | meshd ÷ (added p99) |")
        a("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for scen, place in (("latency_same", "same core"), ("latency_split", "own core")):
            d50, d99 = M(scen, "direct", "p50_us"), M(scen, "direct", "p99_us")

            def added(t, k, d):
                v = M(scen, t, k)
                return None if v is None or d is None else v - d
            ma50, ma99 = added("meshd", "p50_us", d50), added("meshd", "p99_us", d99)
            for t in ["direct"] + names:
                st = res.status(scen, t)
                if st and not res.cells.get((scen, t)):
                    a(f"| {place} | {t} | {st} |" + " |" * 7)
                    continue
                a50, a99 = added(t, "p50_us", d50), added(t, "p99_us", d99)
                r50 = ratio(ma50, a50) if t not in ("direct", "meshd") and have_meshd else "—"
                r99 = ratio(ma99, a99) if t not in ("direct", "meshd") and have_meshd else "—"
                addtxt = "—" if t == "direct" else f"{signed(a50)} / {signed(a99)}"
                a(f"| {place} | {t} | {fmt(M(scen, t, 'rps'))} | {fmt(M(scen, t, 'p50_us'))} | "
                  f"{fmt(M(scen, t, 'p99_us'))} | {fmt(M(scen, t, 'p999_us'))} | {addtxt} | "
                  f"{fmt(M(scen, t, 'cpu_us_per_req'), 2)} | {r50} | {r99} |")
        a("")

    # 1b
    if ran("unary"):
        a(f"### 1(b) Throughput: h2load {UNARY_C} connections × {UNARY_M} streams, {D_UNARY} s")
        a("")
        a("| target | req/s | × direct | p50 µs | p99 µs | p99.9 µs | proxy CPU µs/req | peak RSS MiB | "
          "meshd ÷ (req/s) | meshd ÷ (CPU/req) |")
        a("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        d_rps = M("unary", "direct", "rps")
        m_rps, m_cpu = M("unary", "meshd", "rps"), M("unary", "meshd", "cpu_us_per_req")
        for t in ["direct"] + names:
            st = res.status("unary", t)
            if st and not res.cells.get(("unary", t)):
                a(f"| {t} | {st} |" + " |" * 9)
                continue
            rps, cpu = M("unary", t, "rps"), M("unary", t, "cpu_us_per_req")
            pk = M("unary", t, "peak_rss")
            mr = ratio(m_rps, rps) if t not in ("direct", "meshd") and have_meshd else "—"
            mc = ratio(m_cpu, cpu) if t not in ("direct", "meshd") and have_meshd else "—"
            a(f"| {t} | {fmt(rps)} | {ratio(rps, d_rps)} | {fmt(M('unary', t, 'p50_us'))} | "
              f"{fmt(M('unary', t, 'p99_us'))} | {fmt(M('unary', t, 'p999_us'))} | {fmt(cpu, 2)} | "
              f"{fmt(pk / (1 << 20) if pk else None)} | {mr} | {mc} |")
        a("")

    # 2
    if ran("stream"):
        a(f"## 2. gRPC server streaming: {STREAM_MESSAGES} × 1 MiB messages per call, h2load {STREAM_C} "
          f"connection × {STREAM_M} streams, {D_STREAM} s")
        a("")
        a("| target | MiB/s | × direct | calls/s | proxy CPU µs/MiB | meshd ÷ (MiB/s) | meshd ÷ (CPU/MiB) |")
        a("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        d = M("stream", "direct", "mib_s")
        mm, mc = M("stream", "meshd", "mib_s"), M("stream", "meshd", "cpu_us_per_mib")
        for t in ["direct"] + names:
            st = res.status("stream", t)
            if st and not res.cells.get(("stream", t)):
                a(f"| {t} | {st} |" + " |" * 6)
                continue
            v, c = M("stream", t, "mib_s"), M("stream", t, "cpu_us_per_mib")
            peer = t not in ("direct", "meshd") and have_meshd
            a(f"| {t} | {fmt(v)} | {ratio(v, d)} | {fmt(M('stream', t, 'calls_s'))} | {fmt(c)} | "
              f"{ratio(mm, v) if peer else '—'} | {ratio(mc, c) if peer else '—'} |")
        a("")

    # 3
    if ran("http1"):
        a(f"## 3. HTTP/1.1: wrk {WRK_C} connections, keep-alive, GET, {D_WRK} s")
        a("")
        a("| target | req/s | × direct | p50 µs | p99 µs | proxy CPU µs/req | meshd ÷ (req/s) | meshd ÷ (CPU/req) |")
        a("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        d = M("http1", "direct", "rps")
        mm, mc = M("http1", "meshd", "rps"), M("http1", "meshd", "cpu_us_per_req")
        for t in ["direct"] + names:
            st = res.status("http1", t)
            if st and not res.cells.get(("http1", t)):
                a(f"| {t} | {st} |" + " |" * 7)
                continue
            v, c = M("http1", t, "rps"), M("http1", t, "cpu_us_per_req")
            peer = t not in ("direct", "meshd") and have_meshd and mm is not None
            a(f"| {t} | {fmt(v)} | {ratio(v, d)} | {fmt(M('http1', t, 'p50_us'))} | {fmt(M('http1', t, 'p99_us'))} | "
              f"{fmt(c, 2)} | {ratio(mm, v) if peer else '—'} | {ratio(mc, c) if peer else '—'} |")
        a("")

    # 4
    if ran("iperf") or ran("ping_same"):
        a(f"## 4. Raw TCP")
        a("")
        a(f"### iperf3, 1 stream, {D_IPERF} s")
        a("")
        a("| target | Gbit/s | × direct | proxy CPU ms/GiB | meshd ÷ (Gbit/s) | meshd ÷ (CPU/GiB) |")
        a("| --- | ---: | ---: | ---: | ---: | ---: |")
        d = M("iperf", "direct", "gbit_s")
        mm, mc = M("iperf", "meshd", "gbit_s"), M("iperf", "meshd", "cpu_ms_per_gib")
        for t in ["direct"] + names:
            st = res.status("iperf", t)
            if st and not res.cells.get(("iperf", t)):
                a(f"| {t} | {st} |" + " |" * 5)
                continue
            v, c = M("iperf", t, "gbit_s"), M("iperf", t, "cpu_ms_per_gib")
            peer = t not in ("direct", "meshd") and have_meshd
            a(f"| {t} | {fmt(v, 2)} | {ratio(v, d)} | {fmt(c)} | {ratio(mm, v) if peer else '—'} | "
              f"{ratio(mc, c) if peer else '—'} |")
        a("")
        a(f"### Ping-pong: 64 bytes back and forth over 1 connection, {D_PING} s")
        a("")
        a("| placement | target | round trips/s | p50 µs | p99 µs | p99.9 µs | added p50 / p99 µs | "
          "meshd ÷ (added p50) |")
        a("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for scen, place in (("ping_same", "same core"), ("ping_split", "own core")):
            d50, d99 = M(scen, "direct", "p50_us"), M(scen, "direct", "p99_us")
            m50 = M(scen, "meshd", "p50_us")
            ma50 = None if m50 is None or d50 is None else m50 - d50
            for t in ["direct"] + names:
                st = res.status(scen, t)
                if st and not res.cells.get((scen, t)):
                    a(f"| {place} | {t} | {st} |" + " |" * 5)
                    continue
                p50, p99 = M(scen, t, "p50_us"), M(scen, t, "p99_us")
                a50 = None if p50 is None or d50 is None else p50 - d50
                a99 = None if p99 is None or d99 is None else p99 - d99
                peer = t not in ("direct", "meshd") and have_meshd
                a(f"| {place} | {t} | {fmt(M(scen, t, 'rps'))} | {fmt(p50)} | {fmt(p99)} | "
                  f"{fmt(M(scen, t, 'p999_us'))} | {'—' if t == 'direct' else f'{signed(a50)} / {signed(a99)}'} | "
                  f"{ratio(ma50, a50) if peer else '—'} |")
        a("")

    # 5 + 6
    if ran("memory") or ran("unary"):
        a(f"## 5. Memory and 6. start-up")
        a("")
        a(f"Each proxy started fresh {runs} time{'s' if runs > 1 else ''}. Idle: 0.5 s after `/ready`. Then {IDLE_CONNS:,} idle h2c "
          "connections (preface, SETTINGS, ACK, nothing else); per connection = (with − idle) ÷ "
          f"{IDLE_CONNS:,}; growth = USS with them open a second time (after the first round closed) − "
          "with them open the first time. Peak: highest RSS sampled (every 50 ms) during scenario 1(b). Start-up: from exec "
          "to the first 200 from the proxy's own readiness endpoint (meshd admin `/ready`; nghttpx `healthmon` "
          "frontend; HAProxy `monitor-uri`; nginx `return 200`), polled every 1 ms.")
        a("")
        k = f"{IDLE_CONNS // 1000}k" if IDLE_CONNS % 1000 == 0 else str(IDLE_CONNS)
        a(f"| proxy | start-up ms | RSS idle MiB | USS idle MiB | RSS {k} conns MiB | USS {k} conns MiB | "
          "RSS KiB/conn | USS KiB/conn | USS growth, 2nd round MiB | peak RSS 1(b) MiB | meshd ÷ (USS idle) | "
          "meshd ÷ (USS/conn) |")
        a("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        mu, mpc = M("memory", "meshd", "uss_idle"), M("memory", "meshd", "uss_per_conn")

        def mb(x):
            return fmt(x / (1 << 20) if x is not None else None)

        def kb(x):
            return fmt(x / 1024 if x is not None else None, 2)
        for t in names:
            st = res.status("memory", t)
            if st and not res.cells.get(("memory", t)):
                a(f"| {t} | {st} |" + " |" * 11)
                continue
            pk = M("unary", t, "peak_rss")
            peer = t != "meshd" and have_meshd
            a(f"| {t} | {fmt(M('memory', t, 'startup_ms'))} | {mb(M('memory', t, 'rss_idle'))} | "
              f"{mb(M('memory', t, 'uss_idle'))} | {mb(M('memory', t, 'rss_10k'))} | {mb(M('memory', t, 'uss_10k'))} | "
              f"{kb(M('memory', t, 'rss_per_conn'))} | {kb(M('memory', t, 'uss_per_conn'))} | "
              f"{mb(M('memory', t, 'uss_growth'))} | {mb(pk)} | "
              f"{ratio(mu, M('memory', t, 'uss_idle')) if peer else '—'} | "
              f"{ratio(mpc, M('memory', t, 'uss_per_conn')) if peer else '—'} |")
        a("")

    # notes
    a("## Not measured / errors")
    a("")
    notes = []
    for (scen, t), why in sorted(res.na.items()):
        notes.append(f"- {scen} / {t}: {why}")
    for (scen, t), why in sorted(res.errors.items()):
        notes.append(f"- {scen} / {t}: **could not run**: {why}")
    a("\n".join(notes) if notes else "- nothing: every scenario ran for every target.")
    a("")
    a("Notes: on 2 cores the load generator and the backend share one core, so no proxy can show much "
      "more than 1.0 × direct throughput; compare proxies by proxy CPU per request, which has no such "
      "ceiling. With the proxy on its own core, idle-CPU wake-ups of the VM dominate added latency for "
      "every proxy alike; the same-core rows show the proxy's own cost. Absolute figures drift by up to "
      "±30 % between runs on this kind of machine; ratios within one run are what to compare.")
    return "\n".join(L) + "\n"


# --------------------------------------------------------------------------- main

ENV = None


def main():
    global ENV, RUNS, D_UNARY, D_LATENCY, D_STREAM, D_WRK, D_IPERF, D_PING, IDLE_CONNS, CPU_LOAD, CPU_PROXY
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=str(ROOT / "build" / "release"))
    ap.add_argument("--runs", type=int, default=RUNS)
    ap.add_argument("--quick", action="store_true", help="1 run, 1 s per cell, 2,000 idle connections (smoke test)")
    ap.add_argument("--only", default="memory,unary,latency,stream,http1,tcp")
    ap.add_argument("--targets", default=",".join(PROXIES), help="proxies to compare (direct always runs)")
    ap.add_argument("--meshd-http1", action=argparse.BooleanOptionalAction,
                    default=MESHD_HTTP1 and os.environ.get("BENCH_MESHD_HTTP1") != "0")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (configs, logs)")
    ap.add_argument("--out", help="results file (default bench/results/YYYY-MM-DD-HOST.md)")
    args = ap.parse_args()
    only = set(args.only.split(","))
    names = [n for n in args.targets.split(",") if n]
    bad = (only - {"memory", "unary", "latency", "stream", "http1", "tcp"}) | (set(names) - set(PROXIES))
    if bad or args.runs < 1:
        print(f"bench: unknown scenario/target {sorted(bad)}", file=sys.stderr)
        return 2
    RUNS = args.runs
    if args.quick:
        RUNS, D_UNARY, D_LATENCY, D_STREAM, D_WRK, D_IPERF, D_PING, IDLE_CONNS = 1, 1, 1, 1, 1, 1, 1, 2000

    # Every process started inherits the hard RLIMIT_NOFILE as its soft limit
    # (raising the hard limit needs CAP_SYS_RESOURCE, which a container may lack).
    global NOFILE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    NOFILE = hard
    if NOFILE < IDLE_CONNS + 1000:
        IDLE_CONNS = max(100, NOFILE - 1000)
        log(f"RLIMIT_NOFILE hard limit {NOFILE}: idle connections lowered to {IDLE_CONNS}")
    ncpu = os.cpu_count() or 1
    if ncpu < 2:
        CPU_LOAD = CPU_PROXY = 0
    # This script and everything it starts run on the load core unless pinned elsewhere.
    os.sched_setaffinity(0, {CPU_LOAD})

    busy_before = busy_fraction()
    others_before = other_cpu_snapshot()
    # Become the child subreaper: a proxy worker orphaned when its master exits
    # is reparented to this harness (and reaped by it), not to init.
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass
    ENV = Env(args)
    ENV.remove_workdir = not args.keep

    def cleanup():
        stop_all()
        if ENV.remove_workdir:
            shutil.rmtree(ENV.workdir, ignore_errors=True)
    atexit.register(cleanup)
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, lambda *_: sys.exit(130))
    for tool in ("h2load", "wrk", "iperf3", "taskset", "nghttpx", "haproxy", "nginx"):
        if not shutil.which(tool):
            print(f"bench: {tool} not found: run scripts/install-deps.sh (bench/run.sh does)", file=sys.stderr)
            return 1

    log(f"work dir {ENV.workdir}; {RUNS} runs per cell; proxy CPU {CPU_PROXY}, load CPU {CPU_LOAD}; "
        f"other load before start: {busy_before * 100:.0f} % CPU")
    res = Results()
    backend = Proc("backend", [ENV.backend, "--h2", ENV.backend_h2_port, "--h1", ENV.backend_h1_port,
                               "--echo", ENV.backend_echo_port, "--stream-messages", STREAM_MESSAGES,
                               "--stream-size", STREAM_SIZE], CPU_LOAD, ENV.workdir, stdout=subprocess.PIPE)
    if backend.p.stdout.readline().strip() != b"ready":
        print(f"bench: backend did not start:\n{backend.log_tail()}", file=sys.stderr)
        ENV.remove_workdir = False
        return 1
    iperf = Proc("iperf3", ["iperf3", "-s", "-p", ENV.iperf_port, "-B", "127.0.0.1"], CPU_LOAD, ENV.workdir)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", ENV.iperf_port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.01)
    time.sleep(0.2)  # iperf3 -s: let it take its next test after our probe
    try:
        if "memory" in only:
            phase_memory(res, RUNS, names)
        if only - {"memory"}:
            phase_load(res, RUNS, names, only)
    finally:
        iperf.stop()
        backend.stop()
    runtime = time.monotonic() - T0
    other_cpu = other_cpu_seconds(others_before, other_cpu_snapshot())
    info = machine_info()
    info["other_cpu_s"] = other_cpu
    info["busy_before"], info["busy_after"] = busy_before, busy_fraction()
    info["loadavg"] = open("/proc/loadavg").read().split()[0]
    md = report(res, names, info, runtime, RUNS)
    out = Path(args.out) if args.out else HERE / "results" / (
        f"{datetime.date.today().isoformat()}-{re.sub(r'[^A-Za-z0-9_.-]', '_', info['host'])}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md)
    raw = {"info": info, "runs": RUNS, "runtime_s": runtime,
           "cells": {f"{s}/{t}": v for (s, t), v in res.cells.items()},
           "errors": {f"{s}/{t}": v for (s, t), v in res.errors.items()},
           "na": {f"{s}/{t}": v for (s, t), v in res.na.items()}}
    out.with_suffix(".json").write_text(json.dumps(raw, indent=1, default=str) + "\n")
    print()
    print(md)
    log(f"results: {out} (raw: {out.with_suffix('.json').name}); total {runtime:.0f} s")
    if args.keep or res.failed:
        ENV.remove_workdir = False
        log(f"work dir kept: {ENV.workdir}")
    if res.failed:
        log("some scenarios could not run (see 'Not measured / errors'): exit 1")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
