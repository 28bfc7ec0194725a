#!/usr/bin/env bash
# Instructions per request of `embedrt bench`, counted by valgrind's
# callgrind instead of timed (docs/benchmarks.md, "The miss path in
# instructions"): exact and repeatable to about ±0.2 % where a timing on a
# shared machine spreads by ±3 % and more, so it shows a change of a few
# hundred instructions per request that `cache.sh` cannot.
#
#   scripts/bench/callgrind.sh [BIN] [NAME=FLAGS ...]
#   scripts/bench/callgrind.sh build-bench/app/embedrt \
#     off= "on=--cache --cache-max-bytes 1048576"
#
# Each variant runs `BIN bench` twice under callgrind, with 10,000 and with
# 30,000 requests (64 callers, 8 connections, one 40-byte text of 8
# dimensions, batching off: one upstream call per request, so that the count
# does not depend on how valgrind's slowness changes the batching), against
# one `BIN mock` in another process (not counted). Per request is
# (I(30,000) - I(10,000)) / 20,000: start-up and warm-up cancel out. The
# callgrind files stay in OUT_DIR (default: a temporary directory, printed)
# for `callgrind_annotate` (self cost per function) or
# `callgrind_annotate --inclusive=yes` (with callees), e.g.
#   callgrind_annotate OUT_DIR/on.30000.out | head -60
# Defaults: BIN build-bench/app/embedrt, variants off= and
# "on=--cache --cache-max-bytes 1048576" (a 1 MiB bound that the warm-up
# fills, so that every fill evicts). DIMS (default 8) and TEXT_BYTES (default
# 40) set the vectors' dimensions and the texts' length of every variant.
# P3's shape instead (docs/benchmarks.md, "Settles in bursts"): CONCURRENCY
# and CONNECTIONS (default 64 and 8), MOCK_ARGS (the mock's flags, e.g.
# "--latency-ms 50"), BATCHING=on (keeps batching; compare the runs' upstream
# requests, which then depend on valgrind's pace) and BENCH_ARGS (more flags
# for every run, e.g. --no-pacing).
# Needs valgrind (apt install valgrind).
# About a minute per variant.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

bin=${1:-build-bench/app/embedrt}
shift || true
[ -x "$bin" ] || { echo "no $bin (build target embedrt_cli)" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "valgrind missing: apt-get install valgrind" >&2; exit 2; }
variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=("off=" "on=--cache --cache-max-bytes 1048576")

out=${OUT_DIR:-$(mktemp -d)}
mkdir -p "$out"
trap 'kill "$mock_pid" 2>/dev/null || true' EXIT
read -r -a mock_args <<<"${MOCK_ARGS:-}"
start_mock "$bin" "$out" "${mock_args[@]}"
batching=(--no-batching)
[ "${BATCHING:-off}" = on ] && batching=()
read -r -a bench_args <<<"${BENCH_ARGS:-}"
echo "# callgrind files in $out"

for n in 10000 30000; do
  for v in "${variants[@]}"; do
    name=${v%%=*}
    read -r -a flags <<<"${v#*=}"
    timeout 1200 valgrind --tool=callgrind --callgrind-out-file="$out/$name.$n.out" \
      "$bin" bench --upstream "$mock_url" --requests "$n" --concurrency "${CONCURRENCY:-64}" \
      --connections "${CONNECTIONS:-8}" --inputs 1 --dims "${DIMS:-8}" --text-bytes "${TEXT_BYTES:-40}" \
      --warmup 2000 --log-level error \
      "${batching[@]}" "${bench_args[@]}" "${flags[@]}" >"$out/$name.$n.json" 2>"$out/$name.$n.err"
  done
done

first=
for v in "${variants[@]}"; do
  name=${v%%=*}
  a=$(awk '/^totals:/ {print $2}' "$out/$name.30000.out")
  b=$(awk '/^totals:/ {print $2}' "$out/$name.10000.out")
  per=$(((a - b) / 20000))
  ua=$(grep -o '"upstream_requests":[0-9]*' "$out/$name.30000.json" | cut -d: -f2)
  ub=$(grep -o '"upstream_requests":[0-9]*' "$out/$name.10000.json" | cut -d: -f2)
  calls="$((ua - ub)) upstream requests per 20,000"
  if [ -z "$first" ]; then
    first=$per
    echo "$name: $per instructions per request; $calls"
  else
    echo "$name: $per instructions per request ($((per - first)) against ${variants[0]%%=*}); $calls"
  fi
done
