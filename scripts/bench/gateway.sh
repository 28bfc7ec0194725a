#!/usr/bin/env bash
# P6 of docs/benchmarks.md: `embedrt serve` as a gateway against nginx as a
# plain keep-alive reverse proxy (nginx-proxy.conf.in), both in front of the
# same upstream (the matrix's nginx + njs, nginx-njs.conf.in and
# embeddings.js, answering at once), both with 8 upstream connections, driven
# by wrk with the same body (scripts/bench/post.lua: 1 text, 8 dimensions) at
# 8 and 64 client connections. Rounds interleave the contestants; the table
# shows each one's median round, its ratio to the proxy's median, and per
# request the CPU time, context switches and futex calls of the gateway
# process(es) (perf stat over the wrk run: serve's process, or the proxy's
# workers).
#
#   bash scripts/bench/gateway.sh
#   BASELINES="before=/tmp/embedrt-old" bash scripts/bench/gateway.sh
#
# Environment:
#   EMBEDRT_BIN    the embedrt executable (default: build/app/embedrt)
#   BASELINES      more embedrt executables run as contestants, as
#                  space-separated NAME=PATH (earlier builds: before and after
#                  in the same run), e.g. "before=/tmp/embedrt-old"
#   DURATION       seconds per wrk run (default 5)
#   REPEAT         rounds (default 3; the median counts)
#   CLIENTS        client connection counts (default "8 64")
#   PROXY_WORKERS  nginx proxy worker processes (default 1: its `keepalive
#                  8` then means 8 upstream connections, as serve's)
#   DOC            if set, the table replaces the part of this file between
#                  <!-- gateway:begin --> and <!-- gateway:end -->
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
bench_dir=$root/scripts/bench

if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null \
  || [ ! -f /usr/lib/nginx/modules/ngx_http_js_module.so ] \
  || ! command -v perf >/dev/null; then
  scripts/setup.sh bench
fi

bin=${EMBEDRT_BIN:-$root/build/app/embedrt}
declare -A baseline_bin
baseline_names=()
for nb in ${BASELINES:-}; do
  baseline_names+=("serve-${nb%%=*}")
  baseline_bin[serve-${nb%%=*}]=${nb#*=}
done
duration=${DURATION:-5}
repeat=${REPEAT:-3}
clients=${CLIENTS:-8 64}
proxy_workers=${PROXY_WORKERS:-1}
upstream_connections=8
for b in "$bin" "${baseline_bin[@]}"; do
  if [ ! -x "$b" ]; then
    echo "gateway: $b not found; build embedrt_cli or set EMBEDRT_BIN" >&2
    exit 1
  fi
done

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_http() {
  for _ in $(seq 1 200); do
    if curl -sf -o /dev/null -H 'Content-Type: application/json' \
      -d '{"model":"m","input":"hello world","dimensions":8}' "$1"; then
      return 0
    fi
    sleep 0.05
  done
  echo "gateway: $1 does not answer" >&2
  return 1
}

# start_nginx NAME CONF_IN WORKERS [UPSTREAM_PORT]: sets `port`.
start_nginx() {
  local prefix=$tmp/$1
  mkdir -p "$prefix"
  port=$(free_port)
  sed -e "s|@NJS_MODULE@|/usr/lib/nginx/modules/ngx_http_js_module.so|" \
    -e "s|@WORKERS@|$3|" -e "s|@PREFIX@|$prefix|g" -e "s|@PORT@|$port|" \
    -e "s|@SCRIPT@|$bench_dir/embeddings.js|" \
    -e "s|@UPSTREAM_PORT@|${4:-0}|" -e "s|@KEEPALIVE@|$upstream_connections|" \
    "$bench_dir/$2" >"$prefix/nginx.conf"
  nginx -p "$prefix" -c "$prefix/nginx.conf" -e "$prefix/error.log" \
    </dev/null >/dev/null 2>&1 &
  pids+=($!)
}

# start_serve NAME BIN UPSTREAM_URL: sets url[NAME] and gw_pids[NAME].
start_serve() {
  "$2" serve --listen 127.0.0.1:0 --upstream "$3" \
    --connections "$upstream_connections" </dev/null >"$tmp/$1.out" \
    2>"$tmp/$1.err" &
  pids+=($!)
  gw_pids[$1]=$!
  for _ in $(seq 1 200); do
    if grep -q '^listening on ' "$tmp/$1.out"; then
      url[$1]=$(sed -n 's/^listening on //p' "$tmp/$1.out" | head -n 1)/embeddings
      return 0
    fi
    sleep 0.05
  done
  echo "gateway: $1 did not start: $(cat "$tmp/$1.err")" >&2
  return 1
}

declare -A url gw_pids
port=
start_nginx upstream nginx-njs.conf.in 2
upstream=http://127.0.0.1:$port/v1
wait_http "$upstream/embeddings"

start_nginx proxy nginx-proxy.conf.in "$proxy_workers" "$port"
url[nginx-proxy]=http://127.0.0.1:$port/v1/embeddings
wait_http "${url[nginx-proxy]}"
# The proxy's CPU is its workers' (the master only waits).
gw_pids[nginx-proxy]=$(pgrep -P "$(cat "$tmp/proxy/nginx.pid")" | paste -sd,)

names=(nginx-proxy serve)
start_serve serve "$bin" "$upstream"
for n in "${baseline_names[@]}"; do
  names+=("$n")
  start_serve "$n" "${baseline_bin[$n]}" "$upstream"
done
for n in "${names[@]}"; do
  wait_http "${url[$n]}"
done

# One wrk run with perf stat on the gateway's process(es); appends
# "name|clients|round|req/s|p50|p99|errors|cpu_us|cs|futex" to results.
results=$tmp/results
run() {
  local name=$1 c=$2 round=$3 out=$tmp/wrk.out pstat=$tmp/perf.out
  wrk -t2 -c"$c" -d"${duration}s" --latency -s "$bench_dir/post.lua" \
    "${url[$name]}" >"$out" &
  local wrk_pid=$!
  perf stat -x, -e task-clock,context-switches,syscalls:sys_enter_futex \
    -p "${gw_pids[$name]}" -o "$pstat" -- sleep "$duration" 2>/dev/null || true
  wait "$wrk_pid"
  local n rps p50 p99 errors
  n=$(awk '/requests in/ {print $1}' "$out")
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
  p50=$(awk '$1 == "50%" {print $2}' "$out")
  p99=$(awk '$1 == "99%" {print $2}' "$out")
  errors=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$out")
  # perf counts over `duration` seconds, wrk's requests over about the same
  # time: per request.
  awk -F, -v n="$n" -v rps="$rps" -v d="$duration" \
    -v pre="$name|$c|$round|$rps|$p50|$p99|${errors:-0}" '
    $3 == "task-clock" { cpu = $1 }
    $3 == "context-switches" { cs = $1 }
    $3 == "syscalls:sys_enter_futex" { fx = $1 }
    END {
      r = rps * d
      printf "%s|%.1f|%.2f|%.2f\n", pre, cpu * 1000 / r, cs / r, fx / r
    }' "$pstat" >>"$results"
}

for round in $(seq 1 "$repeat"); do
  for c in $clients; do
    # Alternate the order per round: neither contestant always runs first.
    if [ $((round % 2)) -eq 1 ]; then order=("${names[@]}"); else
      order=()
      for ((i = ${#names[@]} - 1; i >= 0; i--)); do order+=("${names[$i]}"); done
    fi
    for n in "${order[@]}"; do
      echo "round $round/$repeat: $n, $c client connections" >&2
      run "$n" "$c" "$round"
    done
  done
done

# median NAME C: the line of the median round (by req/s).
median() {
  grep "^$1|$2|" "$results" | sort -t'|' -k4 -g |
    awk -v n="$repeat" 'NR == int((n + 1) / 2)'
}
all_rounds() {
  grep "^$1|$2|" "$results" | cut -d'|' -f4 | paste -sd' '
}
table=$tmp/table
{
  echo "Command: \`bash scripts/bench/gateway.sh\` (DURATION=$duration," \
    "REPEAT=$repeat, PROXY_WORKERS=$proxy_workers); \`wrk -t2 -cC" \
    "-d${duration}s -s scripts/bench/post.lua\`; upstream nginx + njs, 2" \
    "workers; $upstream_connections upstream connections each." \
    "$(date -u +%Y-%m-%d), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)" \
    "at the end."
  echo
  echo "| gateway | client connections | req/s (median) | req/s (rounds) | vs nginx proxy | p50 | p99 | non-2xx | CPU µs / req | context switches / req | futex / req |"
  echo "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"
  for c in $clients; do
    base=$(median nginx-proxy "$c" | cut -d'|' -f4)
    for n in "${names[@]}"; do
      IFS='|' read -r _ _ _ rps p50 p99 errors cpu cs fx <<<"$(median "$n" "$c")"
      ratio=$(awk -v a="$rps" -v b="$base" 'BEGIN {printf "%.2f", a / b}')
      echo "| $n | $c | $rps | $(all_rounds "$n" "$c") | $ratio | $p50 | $p99 | $errors | $cpu | $cs | $fx |"
    done
  done
} >"$table"
cat "$table"
if [ -n "${DOC:-}" ]; then
  python3 - "$DOC" "$table" <<'PY'
import sys
doc, table = sys.argv[1], open(sys.argv[2]).read()
text = open(doc).read()
begin, end = "<!-- gateway:begin -->", "<!-- gateway:end -->"
i, j = text.find(begin), text.find(end)
if i < 0 or j < i:
    sys.exit("gateway: %s has no %s ... %s section" % (doc, begin, end))
open(doc, "w").write(text[:i + len(begin)] + "\n" + table + text[j:])
PY
fi
