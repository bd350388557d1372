# SPDX-License-Identifier: Apache-2.0
"""Run one meshd: render bundle -> meshctl encode -> start -> poll /ready ->
stop by PID, keeping its logs in the test's tmp dir.

    m = Meshd(meshd_bin, meshctl_bin, proto_path, workdir, text,
              admin_port=..., values={"listen_port": ..., ...}).start()
    m.admin_get("/ready") -> (status, body)
    m.stats() -> env.stats.Exposition (values keyed (name, frozenset(labels)))
    m.pid, m.memory_kib() -> (VmRSS, VmHWM) in KiB
    m.stop()  -> exit code; fails on a sanitizer report in stderr

Placeholders in the text are `{name}` with no spaces inside the braces, so the
text format's own braces (`listeners {`) are left alone.
"""
import http.client
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from env import stats as prom

PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer")
READY_DEADLINE = 20.0
ADMIN_TIMEOUT = 10.0


class MeshdError(AssertionError):
    pass


def render(template, values):
    """Replace every {name} in `template` by str(values[name])."""
    missing = sorted({m.group(1) for m in PLACEHOLDER_RE.finditer(template)} - set(values))
    if missing:
        raise KeyError(f"bundle placeholders without a value: {missing}")
    return PLACEHOLDER_RE.sub(lambda m: str(values[m.group(1)]), template)


def tail(path, n=40):
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError as e:
        return f"<cannot read {path}: {e}>"
    return "\n".join(lines[-n:])


def meshctl(meshctl_bin, proto_path, *args, timeout=30, input_bytes=None, cwd=None):
    """Run meshctl (in `cwd`: a bundle's relative TLS paths are read from
    there); returns CompletedProcess with bytes stdout/stderr."""
    env = dict(os.environ)
    if proto_path:
        env["MESHCTL_PROTO_PATH"] = str(proto_path)
    return subprocess.run(
        [str(meshctl_bin), *map(str, args)],
        input=input_bytes,
        stdin=None if input_bytes is not None else subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
    )


def encode(meshctl_bin, proto_path, textproto_path, pb_path):
    """`meshctl encode FILE.textproto > FILE.pb`; fails the test on error."""
    r = meshctl(meshctl_bin, proto_path, "encode", textproto_path)
    if r.returncode != 0:
        raise MeshdError(
            f"meshctl encode {textproto_path} exited {r.returncode}:\n"
            f"{r.stderr.decode(errors='replace')}\n--- text ---\n{Path(textproto_path).read_text()}"
        )
    Path(pb_path).write_bytes(r.stdout)
    return Path(pb_path)


def is_sanitized(binary):
    """Whether |binary| is an AddressSanitizer build (its memory figures are
    the sanitizer's, not meshd's)."""
    with open(binary, "rb") as f:
        return b"__asan_init" in f.read()


def sanitizer_lines(text):
    return [l for l in text.splitlines() if any(m in l for m in SANITIZER_MARKERS)]


def _pdeathsig_prefix():
    # If pytest is killed (ctest TIMEOUT), the kernel kills meshd too instead
    # of leaving it holding ports. setpriv execs, so meshd keeps the PID.
    p = shutil.which("setpriv")
    return [p, "--pdeathsig", "KILL", "--"] if p else []


class Meshd:
    _seq = 0

    def __init__(
        self,
        meshd_bin,
        meshctl_bin,
        proto_path,
        workdir,
        bundle_text,
        admin_port,
        values=None,
        concurrency=2,
        drain_timeout=10,
        nofile=None,
        extra_args=(),
        ready_deadline=READY_DEADLINE,
    ):
        Meshd._seq += 1
        self.name = f"meshd{Meshd._seq}"
        self.meshd_bin = str(meshd_bin)
        self.meshctl_bin = str(meshctl_bin)
        self.proto_path = proto_path
        self.workdir = Path(workdir)
        self.admin_port = admin_port
        self.values = dict(values or {})
        self.values.setdefault("admin_port", admin_port)
        self.concurrency = concurrency
        self.drain_timeout = drain_timeout
        self.nofile = nofile  # (soft, hard) RLIMIT_NOFILE for meshd, or None
        self.extra_args = list(extra_args)
        self.ready_deadline = ready_deadline
        text = render(bundle_text, self.values)
        if not re.search(r"^\s*admin\s*\{", text, re.M):
            text += f'\nadmin {{ address {{ address: "127.0.0.1" port: {admin_port} }} }}\n'
        self.bundle_text = text
        self.textproto_path = self.workdir / f"{self.name}.textproto"
        self.pb_path = self.workdir / f"{self.name}.pb"
        self.stderr_path = self.workdir / f"{self.name}.stderr.log"
        self.stdout_path = self.workdir / f"{self.name}.stdout.log"
        self.proc = None
        self.returncode = None
        self._stopped = False

    # -- lifecycle ---------------------------------------------------------------
    @property
    def pid(self):
        return self.proc.pid

    @property
    def listen_port(self):
        """The value given for the bundle's {listen_port} placeholder."""
        return self.values["listen_port"]

    def argv(self):
        return [
            self.meshd_bin,
            "--bundle",
            str(self.pb_path),
            "--concurrency",
            str(self.concurrency),
            "--drain-timeout",
            str(self.drain_timeout),
            *self.extra_args,
        ]

    def start(self):
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.textproto_path.write_text(self.bundle_text)
        encode(self.meshctl_bin, self.proto_path, self.textproto_path, self.pb_path)
        prefix = _pdeathsig_prefix()
        if self.nofile is not None:
            # prlimit execs too, so the PID is still meshd's. No preexec_fn:
            # it is unsafe with the backends' threads running.
            soft, hard = self.nofile
            prefix += ["prlimit", f"--nofile={soft}:{hard}", "--"]
        with open(self.stderr_path, "wb") as err, open(self.stdout_path, "wb") as out:
            self.proc = subprocess.Popen(
                prefix + self.argv(), stdin=subprocess.DEVNULL, stdout=out, stderr=err
            )
        self.wait_ready()
        return self

    def log(self):
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, n=40):
        return tail(self.stderr_path, n)

    def _fail(self, msg):
        raise MeshdError(
            f"{self.name}: {msg}\nargv: {' '.join(self.argv())}\n"
            f"--- stderr tail ({self.stderr_path}) ---\n{self.log_tail()}\n"
            f"--- bundle ---\n{self.bundle_text}"
        )

    def wait_ready(self):
        """Poll GET /ready until 200. Fails with the log tail if meshd exits or
        is not ready within the deadline (the process is then stopped)."""
        deadline = time.monotonic() + self.ready_deadline
        last = None
        for _ in range(int(self.ready_deadline / 0.02) + 100):
            rc = self.proc.poll()
            if rc is not None:
                self.returncode = rc
                self._stopped = True
                self._fail(f"exited with {rc} before becoming ready")
            try:
                status, body = self.admin_get("/ready", timeout=2.0)
                last = (status, body[:80])
                if status == 200:
                    return
            except (OSError, http.client.HTTPException) as e:
                last = e
            if time.monotonic() >= deadline:
                break
            time.sleep(0.02)  # poll interval
        self.stop(check=False)
        self._fail(f"not ready after {self.ready_deadline}s (last /ready: {last!r})")

    def proc_status(self):
        """/proc/<pid>/status of the running meshd as {field: value text}."""
        with open(f"/proc/{self.pid}/status") as f:
            fields = dict(l.rstrip("\n").split(":\t", 1) for l in f if ":\t" in l)
        # setpriv/prlimit exec meshd, so the PID is meshd's own.
        assert fields.get("Name", "").strip() == "meshd", f"pid {self.pid} is {fields.get('Name')!r}"
        return fields

    def memory_kib(self):
        """(VmRSS, VmHWM) of the running meshd in KiB: resident memory now,
        and its peak since meshd started."""
        st = self.proc_status()

        def kib(name):
            val, unit = st[name].split()
            assert unit == "kB", f"{name}: {st[name]!r}"
            return int(val)

        return kib("VmRSS"), kib("VmHWM")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        if self.alive():
            os.kill(self.proc.pid, sig)

    def wait_exit(self, timeout):
        """Wait for meshd to exit on its own; returns the exit code (or raises
        subprocess.TimeoutExpired)."""
        rc = self.proc.wait(timeout)
        self.returncode = rc
        return rc

    def stop(self, timeout=None, check=True):
        """SIGTERM, wait, SIGKILL only as a last resort. With check=True,
        fails unless meshd exited 0 with no sanitizer report in its stderr.
        Returns the exit code. Idempotent."""
        if self.proc is None:
            return None
        problems = []
        if not self._stopped:
            self._stopped = True
            if self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGTERM)
                wait = timeout if timeout is not None else self.drain_timeout + 30
                try:
                    self.proc.wait(wait)
                except subprocess.TimeoutExpired:
                    problems.append(f"did not exit within {wait}s of SIGTERM; sent SIGKILL")
                    self.proc.kill()  # by PID
                    self.proc.wait(30)
            self.returncode = self.proc.returncode
            if check:
                san = sanitizer_lines(self.log())
                if san:
                    problems.append("sanitizer report in stderr:\n  " + "\n  ".join(san[:20]))
                if self.returncode != 0 and not problems:
                    problems.append(f"exited with {self.returncode} after SIGTERM (expected 0)")
        if problems and check:
            self._fail("; ".join(problems))
        return self.returncode

    def check_sanitizers(self):
        san = sanitizer_lines(self.log())
        if san:
            self._fail("sanitizer report in stderr:\n  " + "\n  ".join(san[:20]))

    # -- admin -------------------------------------------------------------------
    def admin_conn(self, timeout=ADMIN_TIMEOUT):
        return http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=timeout)

    def admin_request(self, method, path, timeout=ADMIN_TIMEOUT, body=None):
        c = self.admin_conn(timeout)
        try:
            c.request(method, path, body=body)
            r = c.getresponse()
            data = r.read()
            return r.status, data.decode("utf-8", errors="replace")
        finally:
            c.close()

    def admin_get(self, path, timeout=ADMIN_TIMEOUT):
        return self.admin_request("GET", path, timeout)

    def admin_post(self, path, timeout=ADMIN_TIMEOUT, body=b""):
        return self.admin_request("POST", path, timeout, body=body)

    def stats_text(self):
        status, body = self.admin_get("/stats/prometheus")
        assert status == 200, f"GET /stats/prometheus -> {status}: {body[:200]!r}"
        return body

    def stats(self):
        """Parsed /stats/prometheus (strict); see env.stats.Exposition."""
        return prom.parse_full(self.stats_text())

    def stat(self, name, **labels):
        return self.stats().get(name, **labels)
