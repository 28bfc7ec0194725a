#!/usr/bin/env bash
# Throughput of the built-in upstream (`embedrt mock`, 1 and 2 I/O threads)
# next to nginx returning the same response as a static string (1 and 2
# workers), measured with wrk on loopback: POST /v1/embeddings with one
# input and 8 dimensions (scripts/bench/post.lua). Prints a markdown table.
#
# Environment:
#   EMBEDRT_BIN  the embedrt executable (default: build/app/embedrt)
#   DURATION     wrk duration per run (default 10s)
#   CONNECTIONS  wrk connections (default 8)
#   WRK_THREADS  wrk threads (default 2)
#   REPEAT       rounds over all four servers (default 3; the median counts)
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/../.."
root=$PWD
bench_dir=$root/scripts/bench

if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then
  scripts/setup.sh bench
fi
nginx_bin=$(command -v nginx)

bin=${EMBEDRT_BIN:-$root/build/app/embedrt}
duration=${DURATION:-10s}
connections=${CONNECTIONS:-8}
wrk_threads=${WRK_THREADS:-2}
repeat=${REPEAT:-3}
if [ ! -x "$bin" ]; then
  echo "mock_vs_nginx: $bin not found; build embedrt_cli or set EMBEDRT_BIN" >&2
  exit 1
fi

tmp=$(mktemp -d)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

request_body='{"model":"m","input":"hello world","dimensions":8}'

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}


stop_server() {
  kill -TERM "$server_pid"
  wait "$server_pid" || {
    echo "mock_vs_nginx: server exited with $?" >&2
    return 1
  }
  server_pid=""
}

# run_wrk URL NAME: runs wrk and appends "NAME req/s avg p99" to results.
results=$tmp/results
run_wrk() {
  local out=$tmp/wrk.out
  wrk -t"$wrk_threads" -c"$connections" -d"$duration" --latency \
    -s "$bench_dir/post.lua" "$1" >"$out"
  local rps avg p99 errors
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
  avg=$(awk '$1 == "Latency" {print $2; exit}' "$out")
  p99=$(awk '$1 == "99%" {print $2}' "$out")
  errors=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$out")
  echo "$2|$rps|$avg|$p99|${errors:-0}" >>"$results"
}

# The response nginx serves: the mock's own answer to the benchmark request.
"$bin" mock --listen 127.0.0.1:0 >"$tmp/mock.out" 2>"$tmp/mock.err" &
server_pid=$!
url=$(wait_listening "$tmp/mock.out")/embeddings
sample_body=$(curl -sf -H 'Content-Type: application/json' \
  -d "$request_body" "$url")
stop_server

run_mock() {
  "$bin" mock --listen 127.0.0.1:0 --threads "$1" >"$tmp/mock.out" \
    2>"$tmp/mock.err" &
  server_pid=$!
  local url
  url=$(wait_listening "$tmp/mock.out")/embeddings
  run_wrk "$url" "embedrt mock, $1 I/O thread(s)"
  stop_server
}

mkdir -p "$tmp/nginx"
run_nginx() {
  local port url nginx_body
  port=$(free_port)
  sed -e "s|@WORKERS@|$1|" -e "s|@PREFIX@|$tmp/nginx|g" \
    -e "s|@PORT@|$port|" -e "s|@BODY@|$sample_body|" \
    "$bench_dir/nginx.conf.in" >"$tmp/nginx/nginx.conf"
  "$nginx_bin" -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" \
    -e "$tmp/nginx/error.log" &
  server_pid=$!
  url=http://127.0.0.1:$port/v1/embeddings
  for _ in $(seq 1 200); do
    curl -sf -o /dev/null -d "$request_body" "$url" && break
    sleep 0.05
  done
  nginx_body=$(curl -sf -d "$request_body" "$url")
  if [ "$nginx_body" != "$sample_body" ]; then
    echo "mock_vs_nginx: nginx does not serve the mock's body" >&2
    exit 1
  fi
  run_wrk "$url" "nginx static return, $1 worker(s)"
  kill -QUIT "$server_pid"
  wait "$server_pid" || true
  server_pid=""
}

# Rounds interleave the four servers, so that load from other processes on
# the machine hits all of them alike; the table shows the median round.
for round in $(seq 1 "$repeat"); do
  echo "round $round/$repeat" >&2
  run_mock 1
  run_mock 2
  run_nginx 1
  run_nginx 2
done

echo "wrk -t$wrk_threads -c$connections -d$duration -s scripts/bench/post.lua," \
  "response body ${#sample_body} bytes: $sample_body"
echo
echo "| server | req/s (median) | req/s (all rounds) | avg latency | p99 latency | non-2xx | vs nginx, same thread count |"
echo "|---|---:|---|---:|---:|---:|---:|"
# median NAME: the line of the median round (by req/s) of a server.
median() {
  grep -F "$1|" "$results" | sort -t'|' -k2 -g |
    awk -v n="$repeat" 'NR == int((n + 1) / 2)'
}
all_rounds() {
  grep -F "$1|" "$results" | cut -d'|' -f2 | paste -sd' '
}
nginx1=$(median "nginx static return, 1 worker(s)" | cut -d'|' -f2)
nginx2=$(median "nginx static return, 2 worker(s)" | cut -d'|' -f2)
for name in "embedrt mock, 1 I/O thread(s)" "embedrt mock, 2 I/O thread(s)" \
  "nginx static return, 1 worker(s)" "nginx static return, 2 worker(s)"; do
  IFS='|' read -r _ rps avg p99 errors <<<"$(median "$name")"
  case "$name" in
    *"1 I/O"* | *"1 worker"*) base=$nginx1 ;;
    *) base=$nginx2 ;;
  esac
  ratio=$(awk -v a="$rps" -v b="$base" 'BEGIN {printf "%.2f", a / b}')
  echo "| $name | $rps | $(all_rounds "$name") | $avg | $p99 | $errors | $ratio |"
done
