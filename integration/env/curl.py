# SPDX-License-Identifier: Apache-2.0
"""curl, the one wrapper: curl() builds the argv for plaintext (h2c prior
knowledge, HTTP/1.1, HTTP/1.0) or https (ALPN h2 or http/1.1, --resolve
localhost to 127.0.0.1), fetches one or more paths on one run, and parses
what every caller needs into a CurlRun:

  transfers  curl's %{json} per URL (http_code, http_version, num_connects...)
  blocks     every response header block in order (1xx included) as
             (status line, [(lower-case name, value)])
  bodies     the Path each URL's body was written to

The thin names keep the call sites short: curl_h1 returns the CurlRun;
curl_h2 (h2c) and curl_https return its first transfer as a ToolResult
(status, headers and body of the final response, .http_version "2" | "1.1").
"""
import itertools
import json
from pathlib import Path

from env.clients import ToolResult, _run_tool

# curl's --http* flag per protocol; https takes ALPN, plaintext h2 prior knowledge
_HTTP_FLAGS = {("2", False): "--http2-prior-knowledge", ("2", True): "--http2",
               ("1.1", False): "--http1.1", ("1.1", True): "--http1.1",
               ("1.0", False): "--http1.0", ("1.0", True): "--http1.0"}

_seq = itertools.count(1)


class CurlRun:
    """One curl run: rc, stdout, stderr, argv, transfers, blocks, bodies (see
    the module text)."""

    def __init__(self, argv, proc, transfers, blocks, bodies):
        self.argv = argv
        self.rc = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.proc = proc
        self.transfers = transfers
        self.blocks = blocks
        self.bodies = bodies

    def final_blocks(self):
        return [b for b in self.blocks if not b[0].split()[1].startswith("1")]

    def body(self, i=0):
        return self.bodies[i].read_bytes() if self.bodies[i].exists() else None

    def tool_result(self):
        """The (single) transfer as a ToolResult: the last header block wins
        (after any 1xx)."""
        status, hdrs = None, []
        if self.blocks:
            line, hdrs = self.blocks[-1]
            status = int(line.split()[1])
        r = ToolResult(self.argv, self.proc, status=status, headers=hdrs, body=self.body(0))
        r.http_version = self.transfers[0].get("http_version") if self.transfers else None
        return r

    def __repr__(self):
        return (f"CurlRun(rc={self.rc}, transfers={[{k: t.get(k) for k in ('http_code', 'num_connects', 'http_version', 'size_download', 'errormsg')} for t in self.transfers]}, "
                f"blocks={self.blocks}, stderr={self.stderr[-600:]!r}, argv={self.argv})")


def curl(port, paths, workdir, http="2", https=False, ca=None, cert=None, method=None, headers=(), data=None,
         data_file=None, upload_file=None, host="127.0.0.1", max_time=30, extra=()):
    """curl fetching every path in `paths` (a str or a list) in one run, in
    order. http: "2" | "1.1" | "1.0"; https: TLS to localhost:port (resolved
    to host), ca: --cacert, cert: a Workload for --cert/--key; headers:
    ["Name: value", ...]; data: bytes sent from a file; data_file:
    --data-binary @file; upload_file: -T file. Returns a CurlRun."""
    if isinstance(paths, str):
        paths = [paths]
    n = next(_seq)
    wd = Path(workdir)
    hfile = wd / f"curl{n}.headers"
    argv = ["curl", "-sS", _HTTP_FLAGS[(http, https)], "--noproxy", "*", "--max-time", max_time,
            "-D", hfile, "-w", "%{json}\\n"]
    if https:
        argv += ["--resolve", f"localhost:{port}:{host}"]
    if ca is not None:
        argv += ["--cacert", ca]
    if cert is not None:
        argv += ["--cert", cert.chain, "--key", cert.key]
    if method:
        argv += ["-X", method]
    for h in headers:
        argv += ["-H", h]
    if data is not None:
        data_file = wd / f"curl{n}.data"
        data_file.write_bytes(data)
    if data_file is not None:
        argv += ["--data-binary", f"@{data_file}"]
    if upload_file is not None:
        argv += ["-T", upload_file]
    argv += list(extra)
    base = f"https://localhost:{port}" if https else f"http://{host}:{port}"
    bodies = []
    for i, p in enumerate(paths):
        bf = wd / f"curl{n}_{i}.body"
        bodies.append(bf)
        argv += ["-o", bf, base + p]
    proc = _run_tool(argv, timeout=max_time + 30)
    transfers = []
    for line in proc.stdout.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if line.startswith("{"):
            transfers.append(json.loads(line))
    blocks = []
    if hfile.exists():
        for line in hfile.read_bytes().decode("latin-1").split("\r\n"):
            if line.startswith("HTTP/"):
                blocks.append((line, []))
            elif ":" in line and blocks:
                k, _, v = line.partition(":")
                blocks[-1][1].append((k.strip().lower(), v.strip()))
    return CurlRun([str(a) for a in argv], proc, transfers, blocks, bodies)


def curl_h1(port, paths, workdir, headers=(), method=None, data_file=None, upload_file=None, http10=False,
            host="127.0.0.1", max_time=60, extra=()):
    """curl --http1.1 (or --http1.0) over plaintext; returns the CurlRun."""
    return curl(port, paths, workdir, http="1.0" if http10 else "1.1", headers=headers, method=method,
                data_file=data_file, upload_file=upload_file, host=host, max_time=max_time, extra=extra)


def curl_h2(port, path, workdir, method=None, headers=(), data=None, host="127.0.0.1", max_time=30, extra=()):
    """curl --http2-prior-knowledge for one path; returns a ToolResult."""
    return curl(port, path, workdir, http="2", method=method, headers=headers, data=data, host=host,
                max_time=max_time, extra=extra).tool_result()


def curl_https(port, path, workdir, http="2", ca=None, cert=None, headers=(), max_time=30, extra=()):
    """curl over https to localhost:port (ALPN h2 or http/1.1) for one path;
    returns a ToolResult."""
    return curl(port, path, workdir, http=http, https=True, ca=ca, cert=cert, headers=headers,
                max_time=max_time, extra=extra).tool_result()
