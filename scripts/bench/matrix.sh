#!/usr/bin/env bash
# The benchmark matrix in one command (P1–P6 of the targets in
# docs/benchmarks.md; P6 is scripts/bench/gateway.sh):
# installs the Debian packages (scripts/setup.sh bench, idempotent), builds
# embedrt (Release) and runs every contestant (wrk, httpx, aiohttp, embedrt
# bench) against the same nginx+njs and embedrt mock upstreams on 127.0.0.1;
# writes docs/benchmarks.md (between its matrix markers), docs/bench/*.png and
# docs/bench/matrix-results.jsonl. See scripts/bench/README.md.
#
#   bash scripts/bench/matrix.sh            # full run (about 5 min of runs)
#   SCALE=0.05 DURATION=1 bash scripts/bench/matrix.sh   # smoke test
#
# Environment:
#   BUILD_DIR    build directory (default: build-bench); reused if present
#   EMBEDRT_BIN  use this embedrt executable instead of building one
#   SCALE        multiplies every request count (default 1)
#   DURATION     seconds per wrk run (default 5)
#   DOC, PLOTS   output document / plot directory (default docs/benchmarks.md,
#                docs/bench)
#   FEATURES_ONLY=ROUNDS  only the F shapes (the optional features' cost),
#                ROUNDS rounds each, their checks printed; the document is not
#                touched, the runs go to
#                docs/bench/features-results-DATE-HHMM.jsonl (UTC; one file per
#                run, pooled by matrix.py --judge-features; docs/benchmarks.md,
#                "How F is judged")
#   SHAPES       with FEATURES_ONLY: which, e.g. F-P2,F-P3 (default: all)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

bash scripts/setup.sh bench

if [ -n "${EMBEDRT_BIN:-}" ]; then
  bin=$EMBEDRT_BIN
else
  build=${BUILD_DIR:-$root/build-bench}
  if [ ! -f "$build/CMakeCache.txt" ]; then
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release
  fi
  cmake --build "$build" -j"$(nproc)" --target embedrt_cli
  bin=$build/app/embedrt
fi

args=(--embedrt "$bin" --scale "${SCALE:-1}" --duration "${DURATION:-5}"
  --command "bash scripts/bench/matrix.sh")
if [ -n "${DOC:-}" ]; then args+=(--doc "$DOC"); fi
if [ -n "${PLOTS:-}" ]; then args+=(--plots "$PLOTS"); fi
if [ -n "${FEATURES_ONLY:-}" ]; then
  exec /usr/bin/python3 scripts/bench/matrix.py "${args[@]}" \
    --features-only "$FEATURES_ONLY" --shapes "${SHAPES:-}"
fi
/usr/bin/python3 scripts/bench/matrix.py "${args[@]}"

# P6: the gateway against nginx as a plain reverse proxy (its own section of
# the document, between <!-- gateway:begin --> and <!-- gateway:end -->).
EMBEDRT_BIN=$bin DURATION=${DURATION:-5} DOC=${DOC:-docs/benchmarks.md} \
  bash scripts/bench/gateway.sh
