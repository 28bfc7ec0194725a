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
set -euo pipefail
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

# wait_for_line FILE: waits (10 s at most) for the mock's "listening on" line.
wait_for_line() {
  for _ in $(seq 1 200); do
    if grep -q '^listening on ' "$1"; then
      sed -n 's/^listening on //p' "$1" | head -n 1
      return 0
    fi
    sleep 0.05
  done
  echo "mock_vs_nginx: the server did not report its address" >&2
  return 1
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

sample_body=""
for threads in 1 2; do
  "$bin" mock --listen 127.0.0.1:0 --threads "$threads" >"$tmp/mock.out" \
    2>"$tmp/mock.err" &
  server_pid=$!
  url=$(wait_for_line "$tmp/mock.out")/embeddings
  if [ -z "$sample_body" ]; then
    sample_body=$(curl -sf -H 'Content-Type: application/json' \
      -d "$request_body" "$url")
  fi
  run_wrk "$url" "embedrt mock, $threads I/O thread(s)"
  stop_server
done

mkdir -p "$tmp/nginx"
for workers in 1 2; do
  port=$(free_port)
  sed -e "s|@WORKERS@|$workers|" -e "s|@PREFIX@|$tmp/nginx|g" \
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
  run_wrk "$url" "nginx static return, $workers worker(s)"
  kill -QUIT "$server_pid"
  wait "$server_pid" || true
  server_pid=""
done

echo "wrk -t$wrk_threads -c$connections -d$duration -s scripts/bench/post.lua," \
  "response body ${#sample_body} bytes: $sample_body"
echo
echo "| server | req/s | avg latency | p99 latency | non-2xx | vs nginx (same thread count) |"
echo "|---|---:|---:|---:|---:|---:|"
nginx1=$(awk -F'|' '/^nginx.*1 worker/ {print $2}' "$results")
nginx2=$(awk -F'|' '/^nginx.*2 worker/ {print $2}' "$results")
while IFS='|' read -r name rps avg p99 errors; do
  ratio="1.00"
  case "$name" in
    "embedrt mock, 1"*) ratio=$(awk -v a="$rps" -v b="$nginx1" 'BEGIN {printf "%.2f", a / b}') ;;
    "embedrt mock, 2"*) ratio=$(awk -v a="$rps" -v b="$nginx2" 'BEGIN {printf "%.2f", a / b}') ;;
  esac
  echo "| $name | $rps | $avg | $p99 | $errors | $ratio |"
done <"$results"
