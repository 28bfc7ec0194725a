#!/usr/bin/python3
"""P1 side by side (docs/benchmarks.md, "Targets"): `embedrt bench
--no-batching` with C callers on C connections against wrk with C
connections, same nginx+njs upstream, same body, for each C given, in
interleaved rounds (wrk, embedrt, wrk, embedrt, ...). Prints one JSON line
per run and a table of the medians: req/s, embedrt / wrk, CPU us per request.

  /usr/bin/python3 scripts/bench/p1.py --embedrt build-bench/app/embedrt \\
      --rounds 3 --concurrency 1 8 --requests 30000 --duration 5

Extra `embedrt bench` options (e.g. --workers 1) go after `--`; with several
--embedrt binaries each is run in every round (A/B comparisons).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import matrix  # noqa: E402  (Nginx: the matrix's nginx+njs upstream)

PY = "/usr/bin/python3"


def run_json(cmd):
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, check=False)
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if out.returncode != 0 or not lines:
        sys.exit("p1: %s failed (%d): %s" % (cmd[0], out.returncode,
                                             out.stderr[-2000:]))
    return json.loads(lines[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--embedrt", action="append", required=True)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    p.add_argument("--requests", type=int, default=30000)
    p.add_argument("--duration", type=int, default=5, help="wrk seconds")
    p.add_argument("extra", nargs="*", help="more embedrt bench options")
    a = p.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        nginx = matrix.Nginx(os.cpu_count() or 1, tmp)
        url = nginx.base + "/v1"
        try:
            for r in range(a.rounds):
                for c in a.concurrency:
                    w = run_json([PY, os.path.join(HERE, "peer_wrk.py"),
                                  "--upstream", url, "--connections", str(c),
                                  "--duration", str(a.duration)])
                    w.update(round=r + 1, contestant="wrk", loadavg=matrix.loadavg())
                    print(json.dumps(w), flush=True)
                    results.setdefault(("wrk", c), []).append(w)
                    for b in a.embedrt:
                        e = run_json([b, "bench", "--upstream", url,
                                      "--requests", str(a.requests),
                                      "--concurrency", str(c), "--connections",
                                      str(c), "--no-batching"] + a.extra)
                        e.update(round=r + 1, contestant=b,
                                 loadavg=matrix.loadavg(),
                                 ratio=e["req_per_s"] / w["req_per_s"])
                        print(json.dumps(e), flush=True)
                        results.setdefault((b, c), []).append(e)
        finally:
            nginx.stop()
    print("| C | contestant | req/s (median of %d) | ÷ wrk (median of rounds) | "
          "CPU µs/request | errors |" % a.rounds)
    print("|---:|---|---:|---:|---:|---:|")
    for c in a.concurrency:
        for name in ["wrk"] + a.embedrt:
            rs = results[(name, c)]
            rps = statistics.median(x["req_per_s"] for x in rs)
            ratio = "" if name == "wrk" else "%.2f" % statistics.median(
                x["ratio"] for x in rs)
            cpu = statistics.median(x["cpu_ms_per_1k"] for x in rs)
            errs = sum(sum(x["errors"].values()) if x["errors"] else 0
                       for x in rs)
            print("| %d | %s | %.0f | %s | %.1f | %d |" % (
                c, name, rps, ratio, cpu, errs))


if __name__ == "__main__":
    main()
