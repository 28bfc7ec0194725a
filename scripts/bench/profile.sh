#!/usr/bin/env bash
# Hot-path profile of `embedrt bench` in the P1 scenario (docs/benchmarks.md,
# "Targets"; zero-latency
# nginx+njs upstream, 8 callers on 8 connections, one text, 8 dimensions,
# batching off): `perf record` (samples per thread, top symbols) and
# `perf stat` (syscalls and context switches per request) and heap
# allocations per request (scripts/bench/malloc_count.c, LD_PRELOAD). The
# summary the numbers in docs/profile.md come from. Needs linux-perf
# (scripts/setup.sh bench) and a kernel.perf_event_paranoid that allows it.
#
#   EMBEDRT_BIN=build-bench/app/embedrt bash scripts/bench/profile.sh
#
# Environment: EMBEDRT_BIN (default build-bench/app/embedrt), REQUESTS
# (default 30000), CONCURRENCY (callers = connections, default 8),
# BENCH_ARGS (more `embedrt bench` options, e.g. "--workers 1"), RECORD
# (0: skip perf record), OUT (directory for perf.data, default a temp dir).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
bin=${EMBEDRT_BIN:-$root/build-bench/app/embedrt}
requests=${REQUESTS:-30000}
conc=${CONCURRENCY:-8}
record=${RECORD:-1}
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
if [ ! -x "$bin" ]; then
  echo "profile: $bin not found; build embedrt_cli or set EMBEDRT_BIN" >&2
  exit 1
fi
command -v perf >/dev/null || bash scripts/setup.sh bench

tmp=$(mktemp -d)
nginx_pid=""
cleanup() {
  if [ -n "$nginx_pid" ]; then
    kill -QUIT "$nginx_pid" 2>/dev/null || true
    wait "$nginx_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
sed -e "s|@NJS_MODULE@|/usr/lib/nginx/modules/ngx_http_js_module.so|" \
  -e "s|@WORKERS@|$(nproc)|" -e "s|@PREFIX@|$tmp|g" -e "s|@PORT@|$port|" \
  -e "s|@SCRIPT@|$root/scripts/bench/embeddings.js|" \
  scripts/bench/nginx-njs.conf.in >"$tmp/nginx.conf"
nginx -p "$tmp" -c "$tmp/nginx.conf" -e "$tmp/error.log" &
nginx_pid=$!
url=http://127.0.0.1:$port/v1
for _ in $(seq 1 100); do
  curl -sf -o /dev/null -d '{"model":"m","input":["x"],"dimensions":8}' \
    "$url/embeddings" && break
  sleep 0.05
done

# shellcheck disable=SC2206 # BENCH_ARGS is a list of options
run=(bench --upstream "$url" --requests "$requests" --concurrency "$conc"
  --connections "$conc" --no-batching ${BENCH_ARGS:-})
echo "== embedrt ${run[*]}"
echo "== perf stat (whole process, warm-up of 16 requests included)"
perf stat -e task-clock,context-switches,syscalls:sys_enter_futex,syscalls:sys_enter_clock_nanosleep,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_ctl,syscalls:sys_enter_sendmsg,syscalls:sys_enter_recvmsg \
  -- "$bin" "${run[@]}" 2>"$out/stat.txt" >"$out/stat.json" ||
  perf stat -e task-clock,context-switches -- "$bin" "${run[@]}" \
    2>"$out/stat.txt" >"$out/stat.json"
cat "$out/stat.json"
/usr/bin/python3 - "$out/stat.txt" "$requests" <<'PY'
import re, sys
n = int(sys.argv[2]) + 16
for line in open(sys.argv[1]):
    m = re.match(r"\s*([\d,.]+)\s+(?:msec\s+)?(\S+)", line)
    if m and not line.strip().startswith("#") and m.group(2) != "seconds":
        v = float(m.group(1).replace(",", ""))
        unit = " us" if m.group(2) == "task-clock" else ""
        scale = 1000.0 if m.group(2) == "task-clock" else 1.0
        print("%-40s %12.2f%s per request" % (m.group(2), v * scale / n, unit))
PY
echo "== heap allocations (LD_PRELOAD malloc counter; difference of two runs)"
cc -O2 -shared -fPIC -o "$tmp/malloc_count.so" scripts/bench/malloc_count.c
few=$((requests / 10))
for n in "$few" "$requests"; do
  small=("${run[@]}")
  small[4]=$n # --requests N
  MALLOC_COUNT_OUT="$tmp/mallocs.$n" LD_PRELOAD="$tmp/malloc_count.so" \
    "$bin" "${small[@]}" >/dev/null 2>&1
done
/usr/bin/python3 - "$tmp/mallocs.$few" "$tmp/mallocs.$requests" "$few" \
  "$requests" <<'PY'
import sys
a = int(open(sys.argv[1]).read().split()[1])
b = int(open(sys.argv[2]).read().split()[1])
print("%-40s %12.2f per request" % ("malloc+calloc+realloc",
      (b - a) / (int(sys.argv[4]) - int(sys.argv[3]))))
PY
[ "$record" = 0 ] && exit 0
echo "== perf record -F 1999 -g"
perf record -F 1999 -g -o "$out/perf.data" -- "$bin" "${run[@]}" \
  >/dev/null 2>"$out/record.txt"
echo "-- samples per thread"
perf script -i "$out/perf.data" -F comm 2>/dev/null | sort | uniq -c |
  sort -rn | awk '{n[NR]=$1; c[NR]=$2; t+=$1} END {for (i=1;i<=NR;i++) printf "%6.1f %%  %s\n", 100*n[i]/t, c[i]}'
echo "-- samples per shared object"
perf report -i "$out/perf.data" --no-children --sort dso -g none 2>/dev/null |
  grep -v '^#' | grep -v '^$' | head -8
echo "-- top symbols (self)"
perf report -i "$out/perf.data" --no-children --sort sym -g none 2>/dev/null |
  grep -v '^#' | grep -v '^$' | cut -c1-140 | head -30
echo "(perf data in $out)"
