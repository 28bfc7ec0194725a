#!/usr/bin/env bash
# Runs a test binary again and again, each run bounded, to catch a rare hang
# or failure (docs/testing.md, "Sanitizers"). When a run outlives its bound,
# the stacks of all its threads are written (gdb) before it is killed.
#
#   scripts/stress-hang.sh BINARY [FILTER] [RUNS] [SECONDS]
#   scripts/stress-hang.sh build-address-undefined/tests/actors/supervision_tests "*" 20
#
# FILTER is a Catch test spec (default "*"; a ',' in a name must be written
# '\,'), RUNS the number of runs (default 10), SECONDS the bound of one run
# (default 120). Output of the last run: $OUT/stress.log; stacks of a hung
# run: $OUT/hang.txt (OUT defaults to a new temporary directory). Exit status:
# 0 when every run passed, 1 on a failure or a hang. Sanitizer options come
# from the environment (ASAN_OPTIONS, TSAN_OPTIONS, UBSAN_OPTIONS).
set -uo pipefail
bin=${1:?usage: stress-hang.sh BINARY [FILTER] [RUNS] [SECONDS]}
filter=${2:-*}
runs=${3:-10}
bound=${4:-120}
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
command -v gdb >/dev/null || { echo "stress-hang: gdb is needed" >&2; exit 2; }
for ((i = 1; i <= runs; ++i)); do
  "$bin" "$filter" >"$out/stress.log" 2>&1 &
  pid=$!
  for ((t = 0; t < bound * 2; ++t)); do
    sleep 0.5
    kill -0 "$pid" 2>/dev/null || break
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "stress-hang: run $i still running after ${bound} s; stacks in $out/hang.txt"
    gdb -p "$pid" -batch -ex "thread apply all bt 40" >"$out/hang.txt" 2>&1
    kill -9 "$pid"
    wait "$pid" 2>/dev/null
    exit 1
  fi
  if ! wait "$pid"; then
    echo "stress-hang: run $i failed; its output: $out/stress.log"
    tail -20 "$out/stress.log"
    exit 1
  fi
done
echo "stress-hang: $runs of $runs runs passed"
