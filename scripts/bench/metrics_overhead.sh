#!/usr/bin/env bash
# Overhead of the runtime's metrics on the hot path: `embedrt bench` with
# metrics on and with --no-metrics, interleaved (on, off, on, off, ...)
# against one zero-latency `embedrt mock` in another process, so that both
# sides see the same machine state. Prints every JSON line and a summary
# (median req/s and p50/p99 of each side, and off/on - 1 as the overhead).
#
#   scripts/bench/metrics_overhead.sh [BUILD_DIR] [ROUNDS] [REQUESTS]
#
# Defaults: build-metrics, 5 rounds, 20000 requests; the bench arguments are
# P1's shape (8 connections, 1 input, 8 dims) with 64 callers.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

build=${1:-build-metrics}
rounds=${2:-5}
requests=${3:-20000}
bin="$build/app/embedrt"
[ -x "$bin" ] || { echo "no $bin (build target embedrt_cli)" >&2; exit 2; }

out=$(mktemp -d)
trap 'kill "$mock_pid" 2>/dev/null || true; rm -rf "$out"' EXIT
start_mock "$bin" "$out"
url=$mock_url

args=(--upstream "$url" --requests "$requests" --concurrency 64 --connections 8
  --inputs 1 --dims 8 --warmup 2000 --log-level error)
echo "# embedrt bench ${args[*]} [--no-metrics], $rounds rounds interleaved"
for r in $(seq "$rounds"); do
  "$bin" bench "${args[@]}" | tee -a "$out/on.jsonl"
  "$bin" bench "${args[@]}" --no-metrics | tee -a "$out/off.jsonl"
done

/usr/bin/python3 - "$out/on.jsonl" "$out/off.jsonl" <<'PY'
import json, statistics, sys
def load(p):
    return [json.loads(l) for l in open(p) if l.strip()]
on, off = load(sys.argv[1]), load(sys.argv[2])
def med(rows, k):
    return statistics.median(r[k] for r in rows)
for name, rows in (("metrics on ", on), ("metrics off", off)):
    print("%s: req/s median %.0f (runs: %s), p50 %.3f ms, p99 %.3f ms, cpu_ms_per_1k %.1f, errors %d"
          % (name, med(rows, "req_per_s"), " ".join("%.0f" % r["req_per_s"] for r in rows),
             med(rows, "p50_ms"), med(rows, "p99_ms"), med(rows, "cpu_ms_per_1k"),
             sum(sum(r["errors"].values()) for r in rows)))
print("overhead (median req/s off / on - 1): %.1f %%" % ((med(off, "req_per_s") / med(on, "req_per_s") - 1) * 100))
pairs = [b["req_per_s"] / a["req_per_s"] - 1 for a, b in zip(on, off)]
print("overhead per round (off_i / on_i - 1): median %.1f %% (rounds: %s)"
      % (statistics.median(pairs) * 100, " ".join("%.1f" % (x * 100) for x in pairs)))
PY
