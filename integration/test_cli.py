# SPDX-License-Identifier: Apache-2.0
"""meshd's command line: --help, --version, bad flags and values."""
import re
import subprocess

import pytest

TIMEOUT = 20


def run(meshd_bin, *args):
    try:
        return subprocess.run(
            [str(meshd_bin), *args], stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT, text=True
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"meshd {' '.join(args)} kept running ({TIMEOUT}s); stderr: {e.stderr!r}")


def test_help(meshd_bin):
    r = run(meshd_bin, "--help")
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    for flag in ("--bundle", "--concurrency", "--log-level", "--drain-timeout", "--help", "--version"):
        assert flag in out, f"--help does not mention {flag}:\n{out}"
    # Without --bundle meshd runs an embedded default; the usage says so. (Not
    # run here: it binds fixed ports, which parallel tests cannot share.)
    assert re.search(r"default", out, re.I), f"--help does not mention the default bundle:\n{out}"


def test_version(meshd_bin):
    r = run(meshd_bin, "--version")
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"meshd \d+\.\d+\.\d+\n?", r.stdout), repr(r.stdout)


def check_usage_error(r, must_mention):
    assert r.returncode == 2, f"exit {r.returncode}, expected 2; stderr: {r.stderr!r}"
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    errs = [l for l in lines if l.startswith("meshd: error: ")]
    assert len(errs) == 1, f"want one `meshd: error: ...` line, stderr: {r.stderr!r}"
    assert must_mention in errs[0], f"error line does not mention {must_mention!r}: {errs[0]!r}"


def test_unknown_flag(meshd_bin):
    check_usage_error(run(meshd_bin, "--frobnicate"), "--frobnicate")


@pytest.mark.parametrize("value", ["abc", "-3", "2x", ""])
def test_bad_concurrency(meshd_bin, value):
    check_usage_error(run(meshd_bin, "--concurrency", value), "concurrency")


def test_concurrency_missing_value(meshd_bin):
    check_usage_error(run(meshd_bin, "--concurrency"), "concurrency")
