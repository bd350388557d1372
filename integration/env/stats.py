# SPDX-License-Identifier: Apache-2.0
"""A strict parser for the Prometheus text exposition format 0.0.4.

Strict on purpose: it exists to catch malformed /stats/prometheus output, so
anything Prometheus would reject (or only tolerates) is an error here:
  - every sample belongs to a family declared by `# TYPE` (and `# HELP`) lines
    that come before the family's first sample, at most once each;
  - a family's samples are contiguous (no interleaving with other families);
  - metric and label names are valid, label values are quoted with only the
    \\\\, \\" and \\n escapes, no label name repeats, no series repeats;
  - values are floats as Go's strconv.ParseFloat reads them (plus Inf/NaN),
    timestamps are integers, counters are >= 0;
  - lines end with "\\n" (no "\\r"), and the text ends with a newline.

parse(text) -> {(name, frozenset(labels.items())): value}
parse_full(text) -> Exposition(values, types, helps)
"""
import math
import re
from dataclasses import dataclass, field

METRIC_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
FLOAT_RE = re.compile(
    r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[iI][nN][fF](?:[iI][nN][iI][tT][yY])?|[nN][aA][nN])\Z"
)
TIMESTAMP_RE = re.compile(r"-?[0-9]+\Z")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")
# Sample-name suffixes that belong to a histogram or summary family.
SUFFIXES = {
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("_sum", "_count"),
}


class PromParseError(ValueError):
    def __init__(self, lineno, line, msg):
        super().__init__(f"line {lineno}: {msg}: {line!r}")
        self.lineno = lineno
        self.line = line


@dataclass
class Exposition:
    values: dict = field(default_factory=dict)  # (name, frozenset(labels)) -> float
    types: dict = field(default_factory=dict)  # family name -> type
    helps: dict = field(default_factory=dict)  # family name -> docstring

    def get(self, name, **labels):
        """The value of one series, or None if it is absent."""
        return self.values.get((name, frozenset(labels.items())))

    def series(self, name):
        """{frozenset(labels): value} for every series of sample name `name`."""
        return {k[1]: v for k, v in self.values.items() if k[0] == name}


def _unescape_help(s, err):
    out = []
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\":
            if i + 1 >= len(s):
                err("dangling backslash in HELP")
            n = s[i + 1]
            if n == "\\":
                out.append("\\")
            elif n == "n":
                out.append("\n")
            else:
                err(f"invalid escape \\{n} in HELP")
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _parse_labels(s, pos, err):
    """Parse `{...}` starting at s[pos] == '{'. Returns (labels dict, next pos)."""
    assert s[pos] == "{"
    pos += 1
    labels = {}
    while True:
        while pos < len(s) and s[pos] in " \t":
            pos += 1
        if pos >= len(s):
            err("unterminated label set")
        if s[pos] == "}":
            return labels, pos + 1
        m = LABEL_NAME_RE.match(s, pos)
        if not m:
            err(f"invalid label name at column {pos + 1}")
        lname = m.group(0)
        if lname.startswith("__"):
            err(f"reserved label name {lname!r}")
        if lname in labels:
            err(f"duplicate label {lname!r}")
        pos = m.end()
        while pos < len(s) and s[pos] in " \t":
            pos += 1
        if pos >= len(s) or s[pos] != "=":
            err(f"expected '=' after label {lname!r}")
        pos += 1
        while pos < len(s) and s[pos] in " \t":
            pos += 1
        if pos >= len(s) or s[pos] != '"':
            err(f"expected '\"' to open the value of label {lname!r}")
        pos += 1
        val = []
        while True:
            if pos >= len(s):
                err(f"unterminated value of label {lname!r}")
            c = s[pos]
            if c == '"':
                pos += 1
                break
            if c == "\\":
                if pos + 1 >= len(s):
                    err("dangling backslash in label value")
                n = s[pos + 1]
                if n == "\\":
                    val.append("\\")
                elif n == '"':
                    val.append('"')
                elif n == "n":
                    val.append("\n")
                else:
                    err(f"invalid escape \\{n} in value of label {lname!r}")
                pos += 2
                continue
            val.append(c)
            pos += 1
        labels[lname] = "".join(val)
        while pos < len(s) and s[pos] in " \t":
            pos += 1
        if pos >= len(s):
            err("unterminated label set")
        if s[pos] == ",":
            pos += 1
            continue
        if s[pos] == "}":
            return labels, pos + 1
        err(f"expected ',' or '}}' after the value of label {lname!r}")


def _parse_float(tok, err, what):
    if not FLOAT_RE.match(tok):
        err(f"invalid {what} {tok!r}")
    t = tok.lower().lstrip("+-")
    if t.startswith("inf"):
        return -math.inf if tok.startswith("-") else math.inf
    return float(tok)


def parse_full(text):
    """Parse an exposition; raise PromParseError on anything malformed."""
    if not isinstance(text, str):
        raise TypeError("parse_full wants str")
    expo = Exposition()
    if text == "":
        return expo
    if not text.endswith("\n"):
        raise PromParseError(0, text[-80:], "exposition does not end with a newline")
    lines = text[:-1].split("\n")
    family_seen_samples = set()  # families whose samples have started
    current_family = None  # family of the previous sample line
    closed_families = set()  # families whose sample block has ended

    for lineno, line in enumerate(lines, 1):

        def err(msg, _l=line, _n=lineno):
            raise PromParseError(_n, _l, msg)

        if "\r" in line:
            err("carriage return in line")
        if line.strip(" \t") == "":
            # Empty lines are ignored by 0.0.4, but a blank line full of
            # whitespace is suspicious enough to reject.
            if line != "":
                err("whitespace-only line")
            continue
        if line.startswith("#"):
            parts = line[1:].lstrip(" \t").split(None, 2) if line[1:2] in (" ", "\t") else []
            if len(parts) >= 2 and parts[0] in ("HELP", "TYPE"):
                kind, name = parts[0], parts[1]
                rest = parts[2] if len(parts) == 3 else ""
                if not METRIC_NAME_RE.fullmatch(name):
                    err(f"invalid metric name {name!r} in {kind}")
                if name in family_seen_samples:
                    err(f"{kind} for {name!r} after its samples")
                if kind == "HELP":
                    if name in expo.helps:
                        err(f"second HELP for {name!r}")
                    expo.helps[name] = _unescape_help(rest, err)
                else:
                    if name in expo.types:
                        err(f"second TYPE for {name!r}")
                    if rest not in TYPES:
                        err(f"invalid type {rest!r} for {name!r}")
                    expo.types[name] = rest
            elif len(parts) >= 1 and parts[0] in ("HELP", "TYPE"):
                err(f"{parts[0]} line without a metric name")
            # any other comment is ignored
            continue

        # A sample line: name [labels] value [timestamp]
        m = METRIC_NAME_RE.match(line)
        if not m:
            err("invalid metric name")
        name = m.group(0)
        pos = m.end()
        labels = {}
        if pos < len(line) and line[pos] == "{":
            labels, pos = _parse_labels(line, pos, err)
        if pos >= len(line) or line[pos] not in " \t":
            err("expected whitespace before the value")
        toks = line[pos:].split()
        if len(toks) not in (1, 2):
            err("expected `value [timestamp]` after the name and labels")
        value = _parse_float(toks[0], err, "value")
        if len(toks) == 2 and not TIMESTAMP_RE.match(toks[1]):
            err(f"invalid timestamp {toks[1]!r}")

        # Which family does this sample belong to?
        family = None
        if name in expo.types:
            family = name
        else:
            for ftype, sufs in SUFFIXES.items():
                for suf in sufs:
                    if name.endswith(suf):
                        base = name[: -len(suf)]
                        if expo.types.get(base) == ftype:
                            family = base
        if family is None:
            err(f"sample {name!r} has no preceding # TYPE line")
        if family not in expo.helps:
            err(f"sample {name!r} has no preceding # HELP line")
        ftype = expo.types[family]
        if family in closed_families:
            err(f"samples of {family!r} are not contiguous")
        if current_family is not None and current_family != family:
            closed_families.add(current_family)
        current_family = family
        family_seen_samples.add(family)

        if ftype == "counter" and not (value >= 0):
            err(f"counter {name!r} has a negative or NaN value")
        if ftype == "histogram" and name == family + "_bucket" and "le" not in labels:
            err("histogram bucket without an 'le' label")
        key = (name, frozenset(labels.items()))
        if key in expo.values:
            err(f"duplicate series {name}{labels}")
        expo.values[key] = value
    return expo


def parse(text):
    """{(name, frozenset(labels.items())): value}; raises PromParseError."""
    return parse_full(text).values
