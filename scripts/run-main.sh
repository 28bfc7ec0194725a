#!/usr/bin/env bash
# The README's main-job command: installs the packages, builds the `embedrt`
# command, starts the built-in OpenAI-compatible upstream (`embedrt mock`, the
# embedded default: no API key needed) on 127.0.0.1 and embeds three texts
# through it with curl.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh build
build_dir=${BUILD_DIR:-build}
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DEMBEDRT_BUILD_TESTS=OFF >/dev/null
cmake --build "$build_dir" -j "$(nproc)" --target embedrt_cli

log=$(mktemp)
"$build_dir/app/embedrt" mock --listen 127.0.0.1:0 >"$log" &
mock_pid=$!
trap 'kill "$mock_pid" 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 100); do
  grep -q '^listening on ' "$log" && break
  sleep 0.1
done
base=$(sed -n 's/^listening on //p' "$log")
[ -n "$base" ] || { echo "embedrt mock did not start" >&2; exit 1; }
echo "embedrt mock: $base" >&2

curl -sS --fail-with-body "$base/embeddings" \
  -H 'Content-Type: application/json' \
  -d '{"model":"embedrt-hash","dimensions":8,"input":["The quick brown fox","jumps over the lazy dog","Embeddings without a thread per request"]}'
echo
kill -TERM "$mock_pid"
wait "$mock_pid"
