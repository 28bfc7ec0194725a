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
#   DIMS=384 BENCH_ARGS=--no-batching MOCK_ARGS="--latency-ms 2" scripts/bench/cache.sh ...
#
# Defaults: build, 5 rounds, 20000 requests of 8 texts; 64 callers,
# 8 connections, DIMS=8 dimensions, CACHE_ARGS empty (more flags for the
# cache side: a bound small enough that the warm-up fills it measures the
# cache at its steady state, evicting, instead of a growing one). BASE_BIN:
# another build's embedrt (say, the commit before a change), run with --cache
# in the same rounds (on, base, off; the order rotates from round to round):
# the summary adds on / base - 1. BENCH_ARGS: more flags for every run (both
# sides, say --no-batching); MOCK_ARGS: flags for the mock (say --latency-ms 2);
# CONCURRENCY and CONNECTIONS: callers and connections (default 64 and 8; P3's
# shape is 1000 and 16 with MOCK_ARGS="--latency-ms 50");
# WARMUP: unmeasured requests per run (default 2000; enough of them for the
# cache to fill its bound before the measured ones leave its growth out).
# The summary gives each side's median upstream requests too: with batching
# on, how many texts share an upstream request moves the CPU per request by
# more than the cache does (docs/benchmarks.md, "At 384 dimensions").
# BASE_BIN may name several builds, separated by spaces, each PATH or
# NAME=PATH (experimental variants side by side: docs/benchmarks.md, "Where
# the cost at 8 dimensions goes"); each runs with --cache in every round, or
# without it if the entry ends in ",nocache".
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
read -r -a mock_args <<<"${MOCK_ARGS:-}"
start_mock "$bin" "$out" "${mock_args[@]}"
url=$mock_url

args=(--upstream "$url" --requests "$requests" --concurrency "${CONCURRENCY:-64}"
  --connections "${CONNECTIONS:-8}"
  --inputs "$inputs" --dims "${DIMS:-8}" --warmup "${WARMUP:-2000}" --log-level error)
read -r -a bench_args <<<"${BENCH_ARGS:-}"
args+=("${bench_args[@]}")
read -r -a cache_args <<<"${CACHE_ARGS:-}"
read -r -a base_specs <<<"${BASE_BIN:-}"
base_names=()
base_bins=()
base_cache=()
for i in "${!base_specs[@]}"; do
  spec=${base_specs[$i]}
  if [[ $spec == *,nocache ]]; then
    spec=${spec%,nocache}
    base_cache+=(off)
  else
    base_cache+=(on)
  fi
  if [[ $spec == *=* ]]; then
    base_names+=("${spec%%=*}")
    base_bins+=("${spec#*=}")
  else
    base_names+=("$([ ${#base_specs[@]} -eq 1 ] && echo base || echo "base$((i + 1))")")
    base_bins+=("$spec")
  fi
  [ -x "${base_bins[$i]}" ] || { echo "no ${base_bins[$i]} (BASE_BIN)" >&2; exit 2; }
done
# run_variant V: one run of variant V (on, off, or the index of a BASE_BIN
# build), its JSON line appended to its file.
run_variant() {
  case $1 in
    on) timeout 300 "$bin" bench "${args[@]}" --cache "${cache_args[@]}" | tee -a "$out/on.jsonl" ;;
    off) timeout 300 "$bin" bench "${args[@]}" | tee -a "$out/off.jsonl" ;;
    *)
      if [ "${base_cache[$1]}" = on ]; then
        timeout 300 "${base_bins[$1]}" bench "${args[@]}" --cache "${cache_args[@]}"
      else
        timeout 300 "${base_bins[$1]}" bench "${args[@]}"
      fi | tee -a "$out/base-${base_names[$1]}.jsonl"
      ;;
  esac
}
variants=(on "${!base_bins[@]}" off)
echo "# embedrt bench ${args[*]} [--cache ${cache_args[*]}], $rounds rounds interleaved${MOCK_ARGS:+, mock ${MOCK_ARGS}}"
for r in $(seq 0 $((rounds - 1))); do
  # The order rotates from round to round (on, base..., off; then base...,
  # off, on; ...): no variant always runs first or after the same one.
  for j in "${!variants[@]}"; do
    run_variant "${variants[$(((r + j) % ${#variants[@]}))]}"
  done
done

base_files=()
for i in "${!base_names[@]}"; do
  base_files+=("${base_names[$i]}=${base_cache[$i]}=$out/base-${base_names[$i]}.jsonl")
done
/usr/bin/python3 - "$out/on.jsonl" "$out/off.jsonl" "${base_files[@]}" <<'PY'
import json, statistics, sys
def load(p):
    return [json.loads(l) for l in open(p) if l.strip()]
on, off = load(sys.argv[1]), load(sys.argv[2])
# NAME=on|off=FILE: a BASE_BIN build's runs, with the cache on or off.
bases = [(n + (" on" if c == "on" else " (no cache)"), load(f))
         for n, c, f in (a.split("=", 2) for a in sys.argv[3:])]
assert all(r["cache"] for r in on) and not any(r["cache"] for r in off)
def med(rows, k):
    return statistics.median(r[k] for r in rows)
def per_round(xs, ys, k="req_per_s"):
    return [a[k] / b[k] - 1 for a, b in zip(xs, ys)]
def rounds_of(pairs):
    return " ".join("%.1f" % (x * 100) for x in pairs)
for name, rows in [("cache on ", on), ("cache off", off)] + [("%-9s" % n, rows) for n, rows in bases]:
    print("%s: req/s median %.0f (runs: %s), p50 %.3f ms, p99 %.3f ms, cpu_ms_per_1k %.1f, "
          "upstream requests median %.0f, errors %d"
          % (name, med(rows, "req_per_s"), " ".join("%.0f" % r["req_per_s"] for r in rows),
             med(rows, "p50_ms"), med(rows, "p99_ms"), med(rows, "cpu_ms_per_1k"),
             med(rows, "upstream_requests"), sum(sum(r["errors"].values()) for r in rows)))
print("cost (median req/s on / off - 1): %.1f %%" % ((med(on, "req_per_s") / med(off, "req_per_s") - 1) * 100))
pairs = per_round(on, off)
print("cost per round (on_i / off_i - 1): median %.1f %% (rounds: %s)"
      % (statistics.median(pairs) * 100, rounds_of(pairs)))
print("cpu per 1k requests (on / off - 1): %.1f %%; per round: median %.1f %%"
      % ((med(on, "cpu_ms_per_1k") / med(off, "cpu_ms_per_1k") - 1) * 100,
         statistics.median(per_round(on, off, "cpu_ms_per_1k")) * 100))
for name, base in bases:
    pairs = per_round(on, base)
    print("cache on vs %s (on_i / base_i - 1): median %.1f %% (rounds: %s); cpu per 1k: %.1f %%"
          % (name, statistics.median(pairs) * 100, rounds_of(pairs),
             (med(on, "cpu_ms_per_1k") / med(base, "cpu_ms_per_1k") - 1) * 100))
    print("%s's cost per round (base_i / off_i - 1): median %.1f %% (rounds: %s); cpu per 1k per round: median %.1f %%"
          % (name, statistics.median(per_round(base, off)) * 100, rounds_of(per_round(base, off)),
             statistics.median(per_round(base, off, "cpu_ms_per_1k")) * 100))
PY
