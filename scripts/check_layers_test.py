#!/usr/bin/python3
"""Tests of check_layers.py: a tiny fake tree (testdata/layers/clean) passes;
a violation planted in a copy of it fails with the rule's message; the
baseline passes what it lists, and fails on what it lists that is gone.
Also the real tree: a copy passes with its baseline, and fails once a codec
includes the router. Standard library only; run by /usr/bin/python3."""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
CHECK = os.path.join(HERE, "check_layers.py")
CLEAN = os.path.join(HERE, "testdata", "layers", "clean")
REPO = os.path.dirname(HERE)


def run(root, *args):
    p = subprocess.run([sys.executable, CHECK, "--root", root, *args], capture_output=True, text=True,
                       timeout=60)
    return p.returncode, p.stdout + p.stderr


def plant(root, rel, include):
    """Append an include line to a file of the tree; returns its line number."""
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    lines = []
    if os.path.exists(path):
        with open(path) as f:
            lines = f.read().splitlines()
    lines.append(f'#include "{include}"')
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return len(lines)


class FakeTree(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="layers_")
        self.root = os.path.join(self.tmp, "tree")
        shutil.copytree(CLEAN, self.root)

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def assert_new(self, out, text):
        self.assertIn("NEW: " + text, out)

    def test_clean_tree_passes(self):
        rc, out = run(self.root)
        self.assertEqual(rc, 0, out)
        self.assertIn("check_layers: 0 new, 0 stale, 0 known (none)", out)

    def test_codec_including_router_fails(self):
        n = plant(self.root, "sidecar/codec/h2_server.c", "router/router.h")
        rc, out = run(self.root)
        self.assertEqual(rc, 1, out)
        self.assert_new(out, f'sidecar/codec/h2_server.c:{n}: #include "router/router.h": codec-includes-router: '
                             "codec/ (layer 4) must not include router/ (layer 6)")

    def test_codec_including_upstream_fails(self):
        n = plant(self.root, "sidecar/codec/h2_server.c", "upstream/upool.h")
        rc, out = run(self.root)
        self.assertEqual(rc, 1, out)
        self.assert_new(out, f'sidecar/codec/h2_server.c:{n}: #include "upstream/upool.h": codec-includes-upstream: '
                             "codec/ (layer 4) must not include upstream/ (layer 5)")
        # upstream already includes the codec: the two reach each other.
        self.assertIn("NEW: cycle: 2 directories reach each other (codec/, upstream/); one loop: "
                      "codec -> upstream (sidecar/codec/h2_server.c:", out)

    def test_upstream_including_router_fails(self):
        n = plant(self.root, "sidecar/upstream/upool.c", "router/router.h")
        rc, out = run(self.root)
        self.assertEqual(rc, 1, out)
        self.assert_new(out, f'sidecar/upstream/upool.c:{n}: #include "router/router.h": upstream-includes-router: '
                             "upstream/ (layer 5) must not include router/ (layer 6)")

    def test_lower_including_higher_fails(self):
        n = plant(self.root, "sidecar/net/sock.h", "loop/worker.h")
        rc, out = run(self.root)
        self.assertEqual(rc, 1, out)
        self.assert_new(out, f'sidecar/net/sock.h:{n}: #include "loop/worker.h": lower-includes-higher: '
                             "net/ (layer 3) must not include loop/ (layer 7)")

    def test_angle_bracket_include_is_read_too(self):
        path = os.path.join(self.root, "sidecar/codec/h2_server.c")
        with open(path, "a") as f:
            f.write("#include <stdio.h>\n#  include <router/router.h>\n")
        rc, out = run(self.root)
        self.assertEqual(rc, 1, out)
        self.assert_new(out, 'sidecar/codec/h2_server.c:4: #include "router/router.h": codec-includes-router')
        self.assertNotIn("stdio.h", out)

    def test_xds_including_the_data_path_fails(self):
        n = plant(self.root, "xds/snapshot.c", "net/sock.h")
        rc, out = run(self.root)
        self.assertEqual(rc, 1, out)
        self.assert_new(out, f'xds/snapshot.c:{n}: #include "net/sock.h": lower-includes-higher: '
                             "xds/ (layer 2) must not include net/ (layer 3)")

    def test_cycle_between_peers_fails(self):
        # http/ and codec/ share a layer, so each may include the other, but not both.
        n = plant(self.root, "sidecar/http/stream.h", "codec/h2_client.h")
        rc, out = run(self.root)
        self.assertEqual(rc, 1, out)
        self.assertIn("NEW: cycle: 2 directories reach each other (codec/, http/); one loop: "
                      "codec -> http (sidecar/codec/h2_client.h:1), "
                      f"http -> codec (sidecar/http/stream.h:{n})", out)
        self.assertIn("check_layers: 1 new, 0 stale, 0 known (none)", out)

    def test_unit_tests_and_generated_headers_are_not_edges(self):
        # The fixture's upool_test.c includes loop/ and router/; snapshot.h a
        # generated header: the clean tree passes all the same.
        rc, out = run(self.root)
        self.assertEqual(rc, 0, out)
        self.assertNotIn("upool_test", out)

    def test_known_violation_passes_and_gone_one_is_stale(self):
        rel = "sidecar/codec/h2_server.c"
        with open(os.path.join(self.root, rel)) as f:
            before = f.read()
        plant(self.root, rel, "router/router.h")
        rc, out = run(self.root, "--write-baseline")
        self.assertEqual(rc, 0, out)
        with open(os.path.join(self.root, "sidecar", "layers.baseline")) as f:
            written = f.read()
        self.assertIn(f"codec-includes-router {rel} -> router/router.h\n", written)
        self.assertIn("cycle codec router upstream\n", written)
        rc, out = run(self.root)
        self.assertEqual(rc, 0, out)
        self.assertIn(f"known: {rel}:", out)
        self.assertIn("check_layers: 0 new, 0 stale, 2 known (codec-includes-router 1, cycle 1)", out)
        # A new violation beside the known ones still fails.
        plant(self.root, "sidecar/upstream/upool.c", "router/router.h")
        rc, out = run(self.root)
        self.assertEqual(rc, 1, out)
        self.assertIn("check_layers: 1 new, 0 stale, 2 known", out)
        # Fixed: the include gone, both entries are stale until removed.
        with open(os.path.join(self.root, rel), "w") as f:
            f.write(before)
        with open(os.path.join(self.root, "sidecar/upstream/upool.c"), "w") as f:
            f.write('#include "upstream/upool.h"\n#include "codec/h2_client.h"\n')
        rc, out = run(self.root)
        self.assertEqual(rc, 1, out)
        self.assertIn("check_layers: 0 new, 2 stale, 0 known", out)

    def test_stale_baseline_entry_fails(self):
        baseline = os.path.join(self.root, "sidecar", "layers.baseline")
        with open(baseline, "w") as f:
            f.write("# a fixed violation left behind\n"
                    "codec-includes-router sidecar/codec/h2_server.c -> router/router.h\n")
        rc, out = run(self.root)
        self.assertEqual(rc, 1, out)
        self.assertIn("STALE: sidecar/layers.baseline: 'codec-includes-router sidecar/codec/h2_server.c -> "
                      "router/router.h' no longer occurs: remove it from the baseline", out)

    def test_shrunk_cycle_is_known_and_its_old_entry_stale(self):
        plant(self.root, "sidecar/http/stream.h", "codec/h2_client.h")
        baseline = os.path.join(self.root, "sidecar", "layers.baseline")
        with open(baseline, "w") as f:
            f.write("cycle codec http net\n")
        rc, out = run(self.root)
        self.assertEqual(rc, 1, out)
        self.assertIn("known: cycle: 2 directories reach each other (codec/, http/)", out)
        self.assertIn("STALE: sidecar/layers.baseline: 'cycle codec http net' no longer occurs", out)

    def test_directory_without_a_layer_is_refused(self):
        plant(self.root, "sidecar/capture/tproxy.c", "core/err.h")
        rc, out = run(self.root)
        self.assertEqual(rc, 2, out)
        self.assertIn("sidecar/capture/tproxy.c: directory capture/ has no layer", out)


class RealTree(unittest.TestCase):
    """A copy of the real sources (the .c and .h files and the baseline)."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="layers_real_")
        for top in ("sidecar", "xds"):
            shutil.copytree(os.path.join(REPO, top), os.path.join(self.tmp, top),
                            ignore=lambda d, names: [n for n in names if os.path.isfile(os.path.join(d, n))
                                                     and not n.endswith((".c", ".h", ".baseline"))])

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def test_real_tree_passes_with_its_baseline(self):
        rc, out = run(self.tmp)
        self.assertEqual(rc, 0, out)
        self.assertIn("check_layers: 0 new, 0 stale", out)

    def test_planted_router_include_in_a_codec_fails(self):
        n = plant(self.tmp, "sidecar/codec/grpc.c", "router/router.h")
        rc, out = run(self.tmp)
        self.assertEqual(rc, 1, out)
        self.assertIn(f'NEW: sidecar/codec/grpc.c:{n}: #include "router/router.h": codec-includes-router', out)
        self.assertIn("check_layers: 1 new, 0 stale", out)


if __name__ == "__main__":
    unittest.main(verbosity=2)
