#!/usr/bin/env bash
# The install is stripped by default and the command's debug information is
# installed apart (cmake/EmbedrtInstall.cmake, docs/packaging.md):
#
#  1. `cmake --install` into a fresh prefix: bin/embedrt has no symbol table
#     and no .debug_* section, the archives no .debug_* section, and nothing
#     is under lib/debug (the component `debug` is not installed by default);
#  2. `cmake --install --component debug` into a second prefix installs only
#     lib/debug/.build-id/xx/yyyy.debug, named by the installed command's
#     build ID, holding its DWARF (.debug_info) and its symbol table.
#
# Usage: strip_test.sh --build-dir=DIR --readelf=FILE
set -euo pipefail

build_dir='' readelf=''
for arg in "$@"; do
  case $arg in
    --build-dir=*) build_dir=${arg#*=} ;;
    --readelf=*) readelf=${arg#*=} ;;
    *) echo "strip_test.sh: unknown argument '$arg'" >&2; exit 2 ;;
  esac
done
if [ -z "$build_dir" ] || [ -z "$readelf" ]; then
  echo "usage: strip_test.sh --build-dir=DIR --readelf=FILE" >&2
  exit 2
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/embedrt-strip-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() {
  echo "strip test: FAIL: $*" >&2
  exit 1
}
# The section headers of FILE, read whole before anything matches on them:
# with pipefail, `readelf | grep -q` fails at random when grep exits at its
# first match and readelf, still writing, dies of SIGPIPE.
sections() {
  "$readelf" -S -W "$1"
}

env -u DESTDIR cmake --install "$build_dir" --prefix "$tmp/main" >"$tmp/main.log"
exe=$tmp/main/bin/embedrt
[ -x "$exe" ] || fail "not installed: $exe"
exe_sections=$(sections "$exe")
if grep -E '\.debug_|\.symtab' <<<"$exe_sections" >&2; then
  fail "$exe is not stripped"
fi
for a in "$tmp"/main/lib*/libembedrt*.a; do
  a_sections=$(sections "$a")
  if found=$(grep -E '\.debug_' <<<"$a_sections"); then
    head -3 <<<"$found" >&2
    fail "$a has debug sections"
  fi
done
if [ -e "$tmp/main/lib/debug" ]; then
  fail "the debug component was installed by default"
fi
"$exe" version >/dev/null || fail "the stripped command does not run"
echo "strip test: $(du -sh "$tmp/main" | cut -f1) installed, stripped"

id=$("$readelf" -n "$exe" | sed -n 's/.*Build ID: \([0-9a-f]*\).*/\1/p')
[ -n "$id" ] || fail "$exe has no build ID"
env -u DESTDIR cmake --install "$build_dir" --prefix "$tmp/dbg" \
  --component debug >"$tmp/dbg.log"
want="lib/debug/.build-id/${id:0:2}/${id:2}.debug"
got=$(cd "$tmp/dbg" && find . -type f | sed 's|^\./||')
[ "$got" = "$want" ] || fail "the debug component installed '$got', not '$want'"
debug_sections=$(sections "$tmp/dbg/$want")
grep -q '\.debug_info' <<<"$debug_sections" || fail "$want has no .debug_info"
grep -q '\.symtab' <<<"$debug_sections" || fail "$want has no symbol table"
echo "strip test: debug information in $want ($(du -h "$tmp/dbg/$want" | cut -f1))"
