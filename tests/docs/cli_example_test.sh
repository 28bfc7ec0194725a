#!/usr/bin/env bash
# docs/cli.md's first example, run exactly as written: the first paragraph
# (up to the first blank line) of the first ```sh block under "### Examples"
# in the `embedrt embed` section. It runs in a fresh directory that has
# docs/examples/sample.jsonl and nothing else (no out/), with the built
# `embedrt` first on PATH and no upstream or key in the environment (the
# embedded default). Every output file the example names must then hold one
# vector line per record of the sample.
#
# Usage: cli_example_test.sh --cli=FILE --source-dir=DIR
set -euo pipefail

cli='' source_dir=''
for arg in "$@"; do
  case $arg in
    --cli=*) cli=${arg#*=} ;;
    --source-dir=*) source_dir=${arg#*=} ;;
    *) echo "cli_example_test.sh: unknown argument '$arg'" >&2; exit 2 ;;
  esac
done
if [ -z "$cli" ] || [ -z "$source_dir" ]; then
  echo "usage: cli_example_test.sh --cli=FILE --source-dir=DIR" >&2
  exit 2
fi

example=$(awk '
  /^## `embedrt embed`/ { in_embed = 1; next }
  in_embed && /^## / { exit }
  in_embed && /^### Examples/ { in_examples = 1; next }
  in_examples && !in_block && /^```sh$/ { in_block = 1; next }
  in_block && (/^```/ || /^$/) { exit }
  in_block { print }
' "$source_dir/docs/cli.md")
echo "docs/cli.md's first example:"
echo "$example"
if ! grep -q '^embedrt embed ' <<<"$example"; then
  echo "FAIL: no 'embedrt embed' command found in the first example" >&2
  exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/embedrt-cli-example.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin" "$tmp/docs/examples"
ln -s "$cli" "$tmp/bin/embedrt"
cp "$source_dir/docs/examples/sample.jsonl" "$tmp/docs/examples/"
records=$(grep -c . "$tmp/docs/examples/sample.jsonl")

(
  cd "$tmp"
  unset OPENAI_BASE_URL OPENAI_API_KEY EMBEDRT_CONFIG
  export PATH="$tmp/bin:$PATH"
  timeout 120 bash -euo pipefail -c "$example"
)

outs=$(grep -o -- '--out [^ ]*' <<<"$example" | cut -d' ' -f2)
for out in $outs; do
  lines=$(wc -l <"$tmp/$out")
  echo "$out: $lines lines"
  if [ "$lines" -ne "$records" ]; then
    echo "FAIL: $out has $lines lines, the sample $records records" >&2
    exit 1
  fi
  if ! head -n 1 "$tmp/$out" | grep -q '^{"id":.*,"embedding":\[.*\]}$'; then
    echo "FAIL: $out's first line is not an {\"id\",\"embedding\"} object" >&2
    exit 1
  fi
done
if [ -z "$outs" ]; then
  echo "FAIL: the example names no --out file" >&2
  exit 1
fi
echo "PASS"
