#!/usr/bin/env python3
"""Compares two runs of the benchmark matrix (scripts/bench/matrix.sh) row by
row, by ratios within each run, so that two runs on a shared, noisy machine
can be compared: each embedrt row's req/s and p99 are divided by wrk's on the
same upstream and connection count in the same run (wrk is "the limit"), and
by the same peer's when there is no wrk row (P5 has none: it is compared by
its own checks). CPU per 1k requests and max RSS are compared as measured
(they depend little on the machine's load).

    python3 scripts/bench/compare.py OLD.jsonl NEW.jsonl [--tolerance 0.15]

Prints a Markdown table; a row is flagged "worse" when a ratio moved against
embedrt by more than the tolerance (default 15 %, the run-to-run noise seen
on this machine). Exit code 0 in any case: the table is for a reader.
"""
import argparse
import json
import sys


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def key(r):
    return (r["scenario"], r["contestant"], r["upstream"], r["callers"],
            r["conns"])


def wrk_for(rows, r):
    """wrk's row on the same upstream with the same connection count."""
    for w in rows:
        if (w["contestant"] == "wrk" and w["upstream"] == r["upstream"]
                and w["conns"] == r["conns"]):
            return w
    return None


def fmt(x, digits=3):
    return "–" if x is None else f"{x:.{digits}f}"


def change(old, new, higher_is_better):
    """Relative change of `new` against `old`, signed so that > 0 is better."""
    if old in (None, 0) or new is None:
        return None
    rel = (new - old) / old
    return rel if higher_is_better else -rel


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--tolerance", type=float, default=0.15)
    a = ap.parse_args()
    old_rows, new_rows = load(a.old), load(a.new)
    old_by_key = {key(r): r for r in old_rows}
    out = [
        "| scenario | contestant | upstream | callers | conns | req/s old → "
        "new | req/s ÷ wrk old → new | p99 ÷ wrk p99 old → new | CPU ms/1k "
        "old → new | max RSS MB old → new | verdict |",
        "|---|---|---|---:|---:|---|---|---|---|---|---|",
    ]
    worse = 0
    for r in new_rows:
        if not r["contestant"].startswith("embedrt"):
            continue
        o = old_by_key.get(key(r))
        if o is None:
            continue
        ow, nw = wrk_for(old_rows, o), wrk_for(new_rows, r)
        # embedrt's exact p99 (wrk's is exact) when both runs have it; runs
        # before 2026-12-06 have only its histogram's bucket bound.
        pk = "exact_p99_ms" if "exact_p99_ms" in o and "exact_p99_ms" in r \
            else "p99_ms"
        tput_old = o["req_per_s"] / ow["req_per_s"] if ow else None
        tput_new = r["req_per_s"] / nw["req_per_s"] if nw else None
        p99_old = o[pk] / ow["p99_ms"] if ow else None
        p99_new = r[pk] / nw["p99_ms"] if nw else None
        if ow is None:  # no limit in the run: compare as measured
            tput_old, tput_new = o["req_per_s"], r["req_per_s"]
            p99_old, p99_new = o[pk], r[pk]
        changes = [
            change(tput_old, tput_new, True),
            change(p99_old, p99_new, False),
            change(o.get("cpu_ms_per_1k"), r.get("cpu_ms_per_1k"), False),
            change(o.get("max_rss_mb"), r.get("max_rss_mb"), False),
        ]
        bad = [c for c in changes if c is not None and c < -a.tolerance]
        verdict = "worse" if bad else "same or better"
        worse += 1 if bad else 0
        out.append(
            f"| {r['scenario']} | {r['contestant']} | {r['upstream']} | "
            f"{r['callers']:,} | {r['conns']} | {o['req_per_s']:,.0f} → "
            f"{r['req_per_s']:,.0f} | {fmt(tput_old)} → "
            f"{fmt(tput_new)} | {fmt(p99_old, 2)} → {fmt(p99_new, 2)} | "
            f"{fmt(o.get('cpu_ms_per_1k'), 1)} → "
            f"{fmt(r.get('cpu_ms_per_1k'), 1)} | "
            f"{fmt(o.get('max_rss_mb'), 1)} → {fmt(r.get('max_rss_mb'), 1)} "
            f"| {verdict} |")
    print("\n".join(out))
    print(f"\n{worse} row(s) worse than the tolerance of "
          f"{a.tolerance:.0%}.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
