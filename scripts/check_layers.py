#!/usr/bin/python3
"""Check the #include graph of sidecar/ and xds/ against the layers.

Every #include "x.h" (and <x.h> when x.h is a file of the tree) is an edge
from the including file's directory to the included file's.

The layers (sidecar/README.md, "Layers"; DESIGN.md) from the bottom up:

  0 core/                     errors, logs, buffers, stats, hashing
  1 tls/                      contexts and credentials (mdtls, shared with xds/)
  2 xds/                      configuration as data: bundle, validation, snapshot
  3 net/                      sockets, accept, detect, the transport
  4 http/  codec/             md_stream; tcp, h1, h2 server and client
  5 filter/ upstream/ discovery/ health/
  6 router/                   route match, filter chain, attempt, retries
  7 loop/  admin/             workers and control: own and wire everything
  8 main.c fuzz/              drivers: nothing includes them

A file may include its own directory, a lower layer, or a peer on its own
layer as long as no cycle between directories results. Rules, most specific
first (an include is reported under the first rule it breaks):

  codec-includes-router     codec/ includes router/
  codec-includes-upstream   codec/ includes upstream/
  upstream-includes-router  upstream/ includes router/
  lower-includes-higher     any other include of a higher layer
  cycle                     directories that reach each other (one finding
                            per strongly connected set of directories)

Unit tests (*_test.c) are left out: a test builds fixtures from whatever it
needs (upstream/outlier_test.c makes a worker). Generated headers
(mesh/v1/*.pb-c.h) and anything not found in the tree are not edges.

Today's tree breaks these rules; the refactor of issue 15 removes the
violations step by step. The baseline (sidecar/layers.baseline) lists the
known ones: a known violation is reported and passes, a new one fails, and a
baseline entry that no longer occurs fails too, so the baseline only shrinks.
--write-baseline rewrites it from the tree.

Exit status: 0 clean (or only known violations), 1 new or stale, 2 usage.
Standard library only; run by /usr/bin/python3.
"""

import argparse
import os
import re
import sys
from collections import defaultdict, deque

LAYERS = [
    ["core"],
    ["tls"],
    ["xds"],
    ["net"],
    ["http", "codec"],
    ["filter", "upstream", "discovery", "health"],
    ["router"],
    ["loop", "admin"],
    ["main", "fuzz"],
]
RANK = {d: i for i, line in enumerate(LAYERS) for d in line}

# (from dir, to dir) -> rule name; checked before the layer order.
SPECIFIC = {
    ("codec", "router"): "codec-includes-router",
    ("codec", "upstream"): "codec-includes-upstream",
    ("upstream", "router"): "upstream-includes-router",
}
WHY = {
    "codec-includes-router": "a codec hands a new stream to its owner through a callback the wiring sets",
    "codec-includes-upstream": "codecs never know about clusters",
    "upstream-includes-router": "a pool reports to the attempt through a callback",
    "lower-includes-higher": "lower never includes higher",
}
RULES = ["codec-includes-router", "codec-includes-upstream", "upstream-includes-router",
         "lower-includes-higher", "cycle"]

# "x.h" and <x.h> alike: <router/router.h> must not slip past the check.
INCLUDE_RE = re.compile(r'^\s*#\s*include\s*(?:"([^"]+)"|<([^>]+)>)')
SOURCE_DIRS = ("sidecar", "xds")


class UsageError(Exception):
    pass


def node_of(rel):
    """Directory node of a repo-relative path: 'sidecar/codec/x.c' -> 'codec'."""
    parts = rel.split("/")
    if parts[0] == "xds":
        return "xds"
    if len(parts) == 2:  # sidecar/main.c and any other file at sidecar's top
        return "main"
    return parts[1]


def source_files(root):
    for top in SOURCE_DIRS:
        base = os.path.join(root, top)
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for name in sorted(filenames):
                if name.endswith((".c", ".h")):
                    yield os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")


def resolve(root, rel, inc, quoted):
    """Where the compiler finds an include: beside the file (quoted only), then
    the include roots sidecar/ and xds/. None when not in the tree (system,
    dependency and generated headers)."""
    for base in ((os.path.dirname(rel),) if quoted else ()) + SOURCE_DIRS:
        cand = os.path.normpath(os.path.join(base, inc)).replace(os.sep, "/")
        if os.path.isfile(os.path.join(root, cand)):
            return cand
    return None


def scan(root):
    """Include edges between different directory nodes:
    list of (file, line, include, from node, to node)."""
    edges = []
    for rel in source_files(root):
        if rel.endswith("_test.c"):
            continue
        src = node_of(rel)
        if src not in RANK:
            raise UsageError(f"{rel}: directory {src}/ has no layer; add it to LAYERS in "
                             f"scripts/check_layers.py and to sidecar/README.md")
        with open(os.path.join(root, rel), encoding="utf-8", errors="replace") as f:
            for lineno, text in enumerate(f, 1):
                m = INCLUDE_RE.match(text)
                if not m:
                    continue
                inc = m.group(1) or m.group(2)
                target = resolve(root, rel, inc, m.group(1) is not None)
                if target is None:
                    continue
                dst = node_of(target)
                if dst != src:
                    edges.append((rel, lineno, inc, src, dst))
    return edges


def rule_of(src, dst):
    if (src, dst) in SPECIFIC:
        return SPECIFIC[(src, dst)]
    if RANK[dst] > RANK[src]:
        return "lower-includes-higher"
    return None


def sccs(nodes, graph):
    """Tarjan's strongly connected components (iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for start in sorted(nodes):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return sorted(out)


def shortest_cycle(comp, graph):
    """One shortest cycle through the component's first directory."""
    start = comp[0]
    members = set(comp)
    prev = {}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for w in sorted(graph[v]):
            if w not in members:
                continue
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(prev[path[-1]])
                return [start] + path[::-1][1:] + [start] if len(path) > 1 else [start, start]
            if w not in prev:
                prev[w] = v
                queue.append(w)
    return [start]


def analyse(root):
    """Findings: dict key -> message. Keys are baseline lines:
    '<rule> <file> -> <include>' or 'cycle <dir> <dir> ...'."""
    edges = scan(root)
    findings = {}
    graph = defaultdict(set)
    example = {}
    for rel, lineno, inc, src, dst in edges:
        graph[src].add(dst)
        example.setdefault((src, dst), f"{rel}:{lineno}")
        rule = rule_of(src, dst)
        if rule:
            key = f"{rule} {rel} -> {inc}"
            if key not in findings:
                findings[key] = (f'{rel}:{lineno}: #include "{inc}": {rule}: {src}/ (layer {RANK[src]}) '
                                 f"must not include {dst}/ (layer {RANK[dst]}): {WHY[rule]}")
    nodes = set(graph) | {d for s in graph.values() for d in s}
    for comp in sccs(nodes, graph):
        cyc = shortest_cycle(comp, graph)
        hops = ", ".join(f"{a} -> {b} ({example[(a, b)]})" for a, b in zip(cyc, cyc[1:]))
        findings["cycle " + " ".join(comp)] = (
            f"cycle: {len(comp)} directories reach each other ({', '.join(d + '/' for d in comp)}); "
            f"one loop: {hops}")
    return findings


def read_baseline(path):
    entries = []
    if not os.path.exists(path):
        return entries
    with open(path, encoding="utf-8") as f:
        for lineno, text in enumerate(f, 1):
            text = text.strip()
            if text and not text.startswith("#"):
                if text.split()[0] not in RULES:
                    raise UsageError(f"{path}:{lineno}: unknown rule in '{text}'")
                entries.append(" ".join(text.split()))
    return entries


def cycle_known(key, baseline):
    """A cycle is known when its directories are a subset of a baseline cycle:
    a cycle that shrank is not new (its old entry is stale instead)."""
    dirs = set(key.split()[1:])
    return any(b.startswith("cycle ") and dirs <= set(b.split()[1:]) for b in baseline)


def write_baseline(path, findings):
    counts = defaultdict(int)
    for key in findings:
        counts[key.split()[0]] += 1
    with open(path, "w", encoding="utf-8") as f:
        f.write("# Known layer violations: scripts/check_layers.py passes while these remain and fails on\n"
                "# any other, and on an entry here that no longer occurs (so this file only shrinks).\n"
                "# Rewrite with: /usr/bin/python3 scripts/check_layers.py --write-baseline\n"
                "# The rules and the layers: sidecar/README.md, \"Layers\".\n")
        f.write("# By rule: " + ", ".join(f"{r} {counts[r]}" for r in RULES if counts[r]) + "\n")
        for rule in RULES:
            for key in sorted(k for k in findings if k.split()[0] == rule):
                f.write(key + "\n")


def main(argv):
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=os.path.dirname(here), help="tree holding sidecar/ and xds/")
    ap.add_argument("--baseline", help="known violations (default: ROOT/sidecar/layers.baseline)")
    ap.add_argument("--write-baseline", action="store_true", help="rewrite the baseline from the tree")
    args = ap.parse_args(argv)
    baseline_path = args.baseline or os.path.join(args.root, "sidecar", "layers.baseline")
    try:
        if not os.path.isdir(os.path.join(args.root, "sidecar")):
            raise UsageError(f"{args.root}: no sidecar/ here")
        findings = analyse(args.root)
        if args.write_baseline:
            write_baseline(baseline_path, findings)
            print(f"check_layers: wrote {len(findings)} entries to {baseline_path}")
            return 0
        baseline = read_baseline(baseline_path)
    except UsageError as e:
        print(f"check_layers: {e}", file=sys.stderr)
        return 2

    known, new = [], []
    for key in sorted(findings, key=lambda k: (RULES.index(k.split()[0]), k)):
        listed = key in baseline or (key.startswith("cycle ") and cycle_known(key, baseline))
        (known if listed else new).append(key)
    stale = [b for b in baseline if b not in findings]
    for key in known:
        print("known: " + findings[key])
    for key in new:
        print("NEW: " + findings[key])
    for b in stale:
        print(f"STALE: {os.path.relpath(baseline_path, args.root)}: '{b}' no longer occurs: "
              f"remove it from the baseline (--write-baseline rewrites it)")
    counts = defaultdict(int)
    for key in known:
        counts[key.split()[0]] += 1
    by_rule = ", ".join(f"{r} {counts[r]}" for r in RULES if counts[r]) or "none"
    print(f"check_layers: {len(new)} new, {len(stale)} stale, {len(known)} known ({by_rule})")
    return 1 if new or stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
