#!/usr/bin/env bash
# Cost of the embedding cache when every input is a miss: `embedrt bench`
# (unique texts) with --cache and without, interleaved (on, off, on, off, ...)
# against one zero-latency `embedrt mock` in another process, so that both
# sides see the same machine state (docs/benchmarks.md, "Embedding cache:
# misses only"). Prints every JSON line and a summary: median req/s, p50/p99
# and CPU per 1,000 requests of each side, and on/off - 1.
#
#   scripts/bench/cache.sh [BUILD_DIR] [ROUNDS] [REQUESTS] [INPUTS]
#   DIMS=1536 CACHE_ARGS="--cache-max-bytes 16777216" scripts/bench/cache.sh ...
#   BASE_BIN=/other/build/app/embedrt scripts/bench/cache.sh ...
#
# Defaults: build, 5 rounds, 20000 requests of 8 texts; 64 callers,
# 8 connections, DIMS=8 dimensions, CACHE_ARGS empty (more flags for the
# cache side: a bound small enough that the warm-up fills it measures the
# cache at its steady state, evicting, instead of a growing one). BASE_BIN:
# another build's embedrt (say, the commit before a change), run with --cache
# in the same rounds (on, base, off, ...): the summary adds on / base - 1.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

build=${1:-build}
rounds=${2:-5}
requests=${3:-20000}
inputs=${4:-8}
bin="$build/app/embedrt"
[ -x "$bin" ] || { echo "no $bin (build target embedrt_cli)" >&2; exit 2; }

out=$(mktemp -d)
trap 'kill "$mock_pid" 2>/dev/null || true; rm -rf "$out"' EXIT
start_mock "$bin" "$out"
url=$mock_url

args=(--upstream "$url" --requests "$requests" --concurrency 64 --connections 8
  --inputs "$inputs" --dims "${DIMS:-8}" --warmup 2000 --log-level error)
read -r -a cache_args <<<"${CACHE_ARGS:-}"
echo "# embedrt bench ${args[*]} [--cache ${cache_args[*]}], $rounds rounds interleaved"
for r in $(seq "$rounds"); do
  timeout 300 "$bin" bench "${args[@]}" --cache "${cache_args[@]}" | tee -a "$out/on.jsonl"
  if [ -n "${BASE_BIN:-}" ]; then
    timeout 300 "$BASE_BIN" bench "${args[@]}" --cache "${cache_args[@]}" | tee -a "$out/base.jsonl"
  fi
  timeout 300 "$bin" bench "${args[@]}" | tee -a "$out/off.jsonl"
done

touch "$out/base.jsonl"
/usr/bin/python3 - "$out/on.jsonl" "$out/off.jsonl" "$out/base.jsonl" <<'PY'
import json, statistics, sys
def load(p):
    return [json.loads(l) for l in open(p) if l.strip()]
on, off, base = load(sys.argv[1]), load(sys.argv[2]), load(sys.argv[3])
assert all(r["cache"] for r in on) and not any(r["cache"] for r in off)
def med(rows, k):
    return statistics.median(r[k] for r in rows)
for name, rows in (("cache on ", on), ("cache off", off)) + ((("base on  ", base),) if base else ()):
    print("%s: req/s median %.0f (runs: %s), p50 %.3f ms, p99 %.3f ms, cpu_ms_per_1k %.1f, errors %d"
          % (name, med(rows, "req_per_s"), " ".join("%.0f" % r["req_per_s"] for r in rows),
             med(rows, "p50_ms"), med(rows, "p99_ms"), med(rows, "cpu_ms_per_1k"),
             sum(sum(r["errors"].values()) for r in rows)))
print("cost (median req/s on / off - 1): %.1f %%" % ((med(on, "req_per_s") / med(off, "req_per_s") - 1) * 100))
pairs = [a["req_per_s"] / b["req_per_s"] - 1 for a, b in zip(on, off)]
print("cost per round (on_i / off_i - 1): median %.1f %% (rounds: %s)"
      % (statistics.median(pairs) * 100, " ".join("%.1f" % (x * 100) for x in pairs)))
print("cpu per 1k requests (on / off - 1): %.1f %%" % ((med(on, "cpu_ms_per_1k") / med(off, "cpu_ms_per_1k") - 1) * 100))
if base:
    pairs = [a["req_per_s"] / b["req_per_s"] - 1 for a, b in zip(on, base)]
    print("cache on vs BASE_BIN's cache on (on_i / base_i - 1): median %.1f %% (rounds: %s); cpu per 1k: %.1f %%"
          % (statistics.median(pairs) * 100, " ".join("%.1f" % (x * 100) for x in pairs),
             (med(on, "cpu_ms_per_1k") / med(base, "cpu_ms_per_1k") - 1) * 100))
    pairs = [a["req_per_s"] / b["req_per_s"] - 1 for a, b in zip(base, off)]
    print("BASE_BIN's cost per round (base_i / off_i - 1): median %.1f %%" % (statistics.median(pairs) * 100))
PY
