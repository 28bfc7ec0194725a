#!/usr/bin/python3
"""Checks a Prometheus text exposition (format 0.0.4) with the official
Python client's parser (Debian: python3-prometheus-client) plus the rules the
parser does not enforce. Usage: check_prometheus.py FILE

Prints one line per sample: NAME{k="v",...} VALUE (labels sorted), after a
first line "families=F samples=S". Exits 1 with a message on any problem.
"""
import math
import sys

from prometheus_client.parser import text_string_to_metric_families


def fail(msg):
    print("check_prometheus: " + msg, file=sys.stderr)
    sys.exit(1)


def escape(v):
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def main():
    if len(sys.argv) != 2:
        fail("usage: check_prometheus.py FILE")
    with open(sys.argv[1], encoding="utf-8") as f:
        text = f.read()
    if not text.endswith("\n"):
        fail("exposition must end with a newline")
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as e:  # the parser raises ValueError and others
        fail("parser rejected the exposition: %r" % (e,))
    # Every family declared once, with HELP and TYPE.
    declared = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            parts = line.split(" ")
            if len(parts) != 4:
                fail("bad TYPE line: " + line)
            if parts[2] in declared:
                fail("family declared twice: " + parts[2])
            declared[parts[2]] = parts[3]
    seen = set()
    out = []
    nsamples = 0
    for fam in families:
        # The parser names a counter family without its "_total" suffix.
        name = fam.name
        if name not in declared and fam.type == "counter":
            name = fam.name + "_total"
        if name not in declared:
            fail("family without TYPE: " + fam.name)
        if fam.type != declared[name]:
            fail("type mismatch for %s: %s vs %s" % (name, fam.type, declared[name]))
        if not fam.documentation:
            fail("family without HELP: " + fam.name)
        buckets = {}
        counts = {}
        for s in fam.samples:
            nsamples += 1
            key = (s.name, tuple(sorted(s.labels.items())))
            if key in seen:
                fail("duplicate sample: %s %s" % key)
            seen.add(key)
            if math.isnan(s.value):
                fail("NaN sample: %s" % (key,))
            if fam.type == "counter" and s.value < 0:
                fail("negative counter: %s" % (key,))
            if fam.type == "histogram":
                other = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
                if s.name.endswith("_bucket"):
                    buckets.setdefault(other, []).append((float(s.labels["le"]), s.value))
                elif s.name.endswith("_count"):
                    counts[other] = s.value
            labels = ",".join('%s="%s"' % (k, escape(v)) for k, v in sorted(s.labels.items()))
            out.append("%s{%s} %r" % (s.name, labels, s.value))
        for other, bs in buckets.items():
            les = [le for le, _ in bs]
            if les != sorted(les):
                fail("%s: buckets not in increasing le order" % fam.name)
            if les[-1] != math.inf:
                fail("%s: no +Inf bucket" % fam.name)
            vals = [v for _, v in bs]
            if any(b < a for a, b in zip(vals, vals[1:])):
                fail("%s%s: buckets not cumulative" % (fam.name, other))
            if counts.get(other) != vals[-1]:
                fail("%s%s: +Inf bucket != _count" % (fam.name, other))
    print("families=%d samples=%d" % (len(families), nsamples))
    for line in out:
        print(line)


main()
