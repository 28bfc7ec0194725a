#!/usr/bin/env bash
# The README's main-job command: installs the packages (idempotently),
# builds the `embedrt` command and runs the bulk job `embedrt embed` on the
# sample shipped in the repo. With no upstream and no API key configured it
# uses the embedded default (the built-in upstream, started inside the
# embed process on 127.0.0.1), so the whole path - HTTP, pool, batching -
# runs for real without a network or a key.
#
#   BUILD_DIR  build directory (default build)
#   OUT_DIR    where the vectors go (default out/)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh build
build_dir=${BUILD_DIR:-build}
out_dir=${OUT_DIR:-out}
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DEMBEDRT_BUILD_TESTS=OFF >/dev/null
cmake --build "$build_dir" -j "$(nproc)" --target embedrt_cli

mkdir -p "$out_dir"
in=docs/examples/sample.jsonl
out="$out_dir/sample.vectors.jsonl"
# The embedded default is used only when nothing else is configured.
unset OPENAI_BASE_URL OPENAI_API_KEY EMBEDRT_CONFIG
# --fresh: start over on every run (without it, a rerun resumes and skips
# the ids already in the output).
"$build_dir/app/embedrt" embed --in "$in" --out "$out" --dims 64 --fresh

echo "vectors: $out ($(wc -l <"$out") lines, one {\"id\",\"embedding\"} object each)"
echo "first record: $(head -n 1 "$out" | cut -c 1-120)..."
