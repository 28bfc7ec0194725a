#!/usr/bin/env bash
# Rate-limit pacing and adaptive concurrency (docs/benchmarks.md, "Pacing and
# adaptive concurrency"), in one go:
#
# 1. pacing: `embedrt mock --tpm 60000` behind `embedrt serve`, pacing on and
#    then off, each 60 s of open-loop load at 3 x the allowed tokens per
#    minute after one request emptied the mock's bucket
#    (docs/bench/pacing-results.jsonl);
# 2. adaptive: the concurrency limit while the mock's latency doubles and
#    while it answers 429 (docs/bench/adaptive.csv, plotted with gnuplot to
#    docs/bench/adaptive.png);
# 3. cost: P1's shape (`embedrt bench`, zero-latency mock, 64 callers, 8
#    connections, 1 input, 8 dims) with pacing on (the default, no limits
#    sent), pacing off, and adaptive concurrency on, interleaved rounds
#    (docs/bench/pacing-cost.jsonl).
#
#   scripts/bench/pacing.sh [BUILD_DIR] [SECONDS] [ROUNDS] [REQUESTS]
#   PARTS="cost" scripts/bench/pacing.sh ...   # only some of the parts
#
# Defaults: build, 60 s, 5 rounds, 20000 requests, PARTS="pacing adaptive
# cost". About 5 minutes.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

build=${1:-build}
seconds=${2:-60}
rounds=${3:-5}
requests=${4:-20000}
parts=" ${PARTS:-pacing adaptive cost} "
bin="$build/app/embedrt"
[ -x "$bin" ] || { echo "no $bin (build target embedrt_cli)" >&2; exit 2; }
command -v gnuplot >/dev/null || {
  echo "gnuplot missing: scripts/setup.sh bench" >&2
  exit 2
}
here=$(cd "$(dirname "$0")" && pwd)
docs="$here/../../docs/bench"
unset OPENAI_BASE_URL OPENAI_API_KEY EMBEDRT_CONFIG EMBEDRT_CONNECTIONS

if [[ $parts == *" pacing "* ]]; then
  echo "# pacing: ${seconds} s at 3 x the mock's tpm, pacing on then off"
  /usr/bin/python3 "$here/pacing.py" pacing "$bin" \
    "$docs/pacing-results.jsonl" "$seconds"
fi

if [[ $parts == *" adaptive "* ]]; then
  echo "# adaptive: latency x2 at 10-20 s, 429s at 30-40 s"
  /usr/bin/python3 "$here/pacing.py" adaptive "$bin" "$docs/adaptive.csv"
  gnuplot <<GP
set terminal pngcairo size 900,460 font ",10"
set output "$docs/adaptive.png"
set datafile separator ","
set key outside bottom center horizontal
set xlabel "seconds"
set ylabel "upstream calls"
set yrange [0:18]
set object 1 rect from 10,0 to 20,18 fc rgb "#fff2cc" fs solid 0.6 behind
set object 2 rect from 30,0 to 40,18 fc rgb "#f4cccc" fs solid 0.6 behind
set label 1 "latency x2" at 11,17
set label 2 "every call 429" at 31,17
set title "Adaptive concurrency: limit and calls in flight (16 connections, 32 callers, mock 20 ms)"
plot "$docs/adaptive.csv" every ::1 using 1:2 with steps lw 2 title "concurrency limit", \
     "" every ::1 using 1:3 with lines lw 1 title "calls in flight"
GP
fi
[[ $parts == *" cost "* ]] || exit 0

echo "# cost: P1's shape, pacing on (default) / --no-pacing / --adaptive-concurrency"
out=$(mktemp -d)
trap 'kill "$mock_pid" 2>/dev/null || true; rm -rf "$out"' EXIT
start_mock "$bin" "$out"
url=$mock_url
args=(--upstream "$url" --requests "$requests" --concurrency 64 --connections 8
  --inputs 1 --dims 8 --warmup 2000 --log-level error)
: >"$docs/pacing-cost.jsonl"
for r in $(seq "$rounds"); do
  for variant in pacing no-pacing adaptive; do
    case $variant in
      pacing) extra=() ;;
      no-pacing) extra=(--no-pacing) ;;
      adaptive) extra=(--adaptive-concurrency) ;;
    esac
    "$bin" bench "${args[@]}" "${extra[@]}" >"$out/run.json"
    /usr/bin/python3 -c 'import json,sys; d=json.load(open(sys.argv[3])); d["variant"]=sys.argv[1]; d["round"]=int(sys.argv[2]); d["command"]=sys.argv[4]; print(json.dumps(d))' \
      "$variant" "$r" "$out/run.json" "embedrt bench ${args[*]} ${extra[*]}" |
      tee -a "$docs/pacing-cost.jsonl"
  done
done
/usr/bin/python3 - "$docs/pacing-cost.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {}
for r in rows:
    by.setdefault(r["variant"], []).append(r)
def med(v, k):
    return statistics.median(r[k] for r in by[v])
for v in ("pacing", "no-pacing", "adaptive"):
    print("%-9s req/s median %.0f (runs: %s), p99 %.3f ms, cpu_ms_per_1k %.1f"
          % (v, med(v, "req_per_s"), " ".join("%.0f" % r["req_per_s"] for r in by[v]),
             med(v, "p99_ms"), med(v, "cpu_ms_per_1k")))
base = {r["round"]: r["req_per_s"] for r in by["no-pacing"]}
for v in ("pacing", "adaptive"):
    pairs = [r["req_per_s"] / base[r["round"]] - 1 for r in by[v]]
    print("%s vs no-pacing, per round: median %+.1f %% (rounds: %s)"
          % (v, statistics.median(pairs) * 100, " ".join("%+.1f" % (x * 100) for x in pairs)))
PY
