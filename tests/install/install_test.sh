#!/usr/bin/env bash
# The installed package, end to end (ctest label "install"):
#
#  1. `cmake --install` the build tree into a fresh temporary prefix and check
#     what landed there (libraries, public headers only, package files, the
#     exported type-ID offset, no path of this tree);
#  2. configure docs/examples/host_app out of tree against that prefix alone
#     (same compiler and generator, -Werror) and build it;
#  3. start the real `embedrt mock --listen 127.0.0.1:0`, run the example
#     against its URL and check its output line by line; the vectors must be
#     the ones the mock serves directly over HTTP (curl);
#  4. start `embedrt serve --caf-port P` in front of that mock and run the
#     example with `--remote 127.0.0.1:P` (embedrt::enable_distribution +
#     embedrt::connect, in its own process): the same vector lines as the
#     local run, a header naming the node;
#  5. check the failure paths: a bad URL, a bad --remote address, --remote to
#     a port where no node is published (after the node is stopped) and,
#     after the mock is stopped with SIGTERM, an upstream that refuses
#     connections (exit 1, typed error).
#
# Everything is written under one temporary directory (removed on exit, the
# mock is stopped on every way out); every step has a time limit.
#
# Usage: install_test.sh --build-dir=DIR --source-dir=DIR --cli=FILE
#          --cxx=COMPILER --generator=NAME --type-id-offset=N
#          [--build-type=TYPE] [--cxx-flags=FLAGS]
set -euo pipefail

build_dir='' source_dir='' cli='' cxx='' generator='' build_type=''
offset='' cxx_flags=''
for arg in "$@"; do
  case $arg in
    --build-dir=*) build_dir=${arg#*=} ;;
    --source-dir=*) source_dir=${arg#*=} ;;
    --cli=*) cli=${arg#*=} ;;
    --cxx=*) cxx=${arg#*=} ;;
    --generator=*) generator=${arg#*=} ;;
    --build-type=*) build_type=${arg#*=} ;;
    --type-id-offset=*) offset=${arg#*=} ;;
    --cxx-flags=*) cxx_flags=${arg#*=} ;;
    *) echo "install_test.sh: unknown argument '$arg'" >&2; exit 2 ;;
  esac
done
for v in build_dir source_dir cli cxx generator offset; do
  if [ -z "${!v}" ]; then
    echo "install_test.sh: missing --${v//_/-}" >&2
    exit 2
  fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/embedrt-install-test.XXXXXX")
prefix=$tmp/prefix
app_build=$tmp/host_app-build
mock_pid=''
node_pid=''

# stop_pid PID: SIGTERM, then waits for it (SIGKILL after 15 s); returns its
# exit status.
stop_pid() {
  local pid=$1
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    # Bounded wait: a watchdog kills the mock if SIGTERM is not enough (and
    # takes its sleep with it when it is itself stopped).
    (
      trap 'kill "$s" 2>/dev/null; exit 0' TERM
      sleep 15 &
      s=$!
      wait "$s"
      kill -KILL "$pid" 2>/dev/null
    ) >/dev/null 2>&1 &
    local watchdog=$!
    local rc=0
    wait "$pid" 2>/dev/null || rc=$?
    kill "$watchdog" 2>/dev/null || true
    wait "$watchdog" 2>/dev/null || true
    return "$rc"
  fi
}
stop_mock() {
  local rc=0
  stop_pid "$mock_pid" || rc=$?
  mock_pid=
  return "$rc"
}
stop_node() {
  local rc=0
  stop_pid "$node_pid" || rc=$?
  node_pid=
  return "$rc"
}
cleanup() {
  # Only the script itself: bash also runs the EXIT trap in a subshell that
  # a signal ends (the stop watchdog below, killed once the mock is gone), and
  # there it removed $tmp while the test went on.
  [ "$BASHPID" = "$$" ] || return 0
  stop_node || true
  stop_mock || true
  rm -rf "$tmp"
}
trap cleanup EXIT

step() { echo "install test: $*"; }
fail() {
  echo "install test: FAIL: $*" >&2
  exit 1
}
# run_logged NAME SECONDS CMD...: runs CMD with a time limit, output to
# $tmp/NAME.log; on failure prints the log's end and fails.
run_logged() {
  local name=$1 limit=$2
  shift 2
  if ! timeout --kill-after=10 "$limit" "$@" >"$tmp/$name.log" 2>&1; then
    tail -n 80 "$tmp/$name.log" >&2
    fail "$name failed (limit ${limit}s): $*"
  fi
}

# -- 1. install ---------------------------------------------------------------
step "installing $build_dir into $prefix"
# DESTDIR would redirect the install elsewhere.
run_logged install 120 env -u DESTDIR cmake --install "$build_dir" \
  --prefix "$prefix"

cmakedir=
for f in "$prefix"/lib*/cmake/embedrt/embedrtConfig.cmake \
  "$prefix"/lib/*/cmake/embedrt/embedrtConfig.cmake; do
  if [ -f "$f" ]; then cmakedir=$(dirname "$f"); fi
done
[ -n "$cmakedir" ] || fail "no embedrtConfig.cmake under $prefix/lib*"
for f in embedrtConfig.cmake embedrtConfigVersion.cmake embedrtTargets.cmake \
  FindCAF.cmake; do
  [ -f "$cmakedir/$f" ] || fail "not installed: $cmakedir/$f"
done
libdir=$(dirname "$(dirname "$cmakedir")")
for f in libembedrt.a libembedrt_protocol.a; do
  [ -f "$libdir/$f" ] || fail "not installed: $libdir/$f"
done
[ -x "$prefix/bin/embedrt" ] || fail "not installed: $prefix/bin/embedrt"
# Every public header, and nothing from actors/src.
(cd "$source_dir/protocol" && find embedrt -name '*.hpp') >"$tmp/want-headers"
(cd "$source_dir/actors" && find embedrt -name '*.hpp') >>"$tmp/want-headers"
(cd "$prefix/include" && find . -type f | sed 's|^\./||') >"$tmp/got-headers"
if ! diff <(sort "$tmp/want-headers") <(sort "$tmp/got-headers") >&2; then
  fail "installed headers differ from the public headers (< wanted, > got)"
fi
grep -q "INTERFACE_COMPILE_DEFINITIONS \"EMBEDRT_TYPE_ID_OFFSET=$offset\"" \
  "$cmakedir/embedrtTargets.cmake" \
  || fail "embedrt::protocol does not export EMBEDRT_TYPE_ID_OFFSET=$offset"
grep -q "set(embedrt_TYPE_ID_OFFSET \"$offset\")" "$cmakedir/embedrtConfig.cmake" \
  || fail "embedrtConfig.cmake does not set embedrt_TYPE_ID_OFFSET to $offset"
# Relocatable: no path of the source or build tree in the package files.
if grep -n -e "$source_dir" -e "$build_dir" "$cmakedir"/*.cmake >&2; then
  fail "the installed package files name the source or build tree"
fi

# -- 2. configure and build the example out of tree ----------------------------
step "configuring docs/examples/host_app against $prefix"
run_logged configure 120 cmake -S "$source_dir/docs/examples/host_app" \
  -B "$app_build" -G "$generator" \
  -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF \
  -DCMAKE_CXX_COMPILER="$cxx" \
  -DCMAKE_BUILD_TYPE="$build_type" \
  -DCMAKE_CXX_FLAGS="-Werror $cxx_flags" \
  -DCMAKE_EXPORT_COMPILE_COMMANDS=ON
grep -q "embedrt 0\.1\.[0-9]* from $cmakedir (type IDs from $offset)" \
  "$tmp/configure.log" || {
  cat "$tmp/configure.log" >&2
  fail "find_package(embedrt) did not use the package in $prefix"
}

step "building host_app (one CAF translation unit, takes a while)"
run_logged build 540 cmake --build "$app_build"
host_app=$app_build/host_app
[ -x "$host_app" ] || fail "no $host_app after the build"
# It was compiled against the installed headers, not this tree's.
grep -q -e "-isystem $prefix/include" "$app_build/compile_commands.json" \
  || fail "host_app was not compiled against $prefix/include"
if grep -q -e "$source_dir/protocol" -e "$source_dir/actors" \
  "$app_build/compile_commands.json"; then
  fail "host_app was compiled against the source tree's headers"
fi

# -- 3. against the real mock ----------------------------------------------------
step "starting $cli mock --listen 127.0.0.1:0"
coproc MOCK { exec "$cli" mock --listen 127.0.0.1:0 2>"$tmp/mock.err"; }
# shellcheck disable=SC2153 # MOCK_PID is set by coproc
mock_pid=$MOCK_PID
line=
IFS= read -r -t 20 -u "${MOCK[0]}" line \
  || fail "the mock printed no 'listening on' line in 20 s: $(cat "$tmp/mock.err")"
[[ $line =~ ^listening\ on\ (http://127\.0\.0\.1:[0-9]+/v1)$ ]] \
  || fail "unexpected first line from the mock: '$line'"
url=${BASH_REMATCH[1]}
step "mock at $url"

texts=("the quick brown fox" "actors share nothing" "embeddings map text to vectors")
dims=8
rc=0
timeout --kill-after=5 60 "$host_app" "$url" "${texts[@]}" \
  >"$tmp/host.out" 2>"$tmp/host.err" || rc=$?
cat "$tmp/host.out"
if [ "$rc" -ne 0 ]; then
  cat "$tmp/host.err" >&2
  fail "host_app exited with $rc against $url"
fi

expect_line() {
  grep -qxF -- "$1" "$tmp/host.out" || fail "missing output line: $1"
}
expect_line "host_app: upstream $url, embedrt type IDs from $offset, host_app type IDs from 5000"
expect_line "host_app: ok, $((2 * ${#texts[@]})) host_app::vector_line messages printed"
[ "$(wc -l <"$tmp/host.out")" -eq $((2 + 2 * ${#texts[@]})) ] \
  || fail "host_app printed $(wc -l <"$tmp/host.out") lines, expected $((2 + 2 * ${#texts[@]}))"

# What the mock serves for the same request, straight over HTTP.
command -v curl >/dev/null || fail "curl is needed (scripts/setup.sh installs it)"
json_inputs=$(printf '"%s",' "${texts[@]}")
timeout 20 curl -sS --fail --max-time 15 -H 'content-type: application/json' \
  -d "{\"model\":\"text-embedding-3-small\",\"dimensions\":$dims,\"input\":[${json_inputs%,}]}" \
  "$url/embeddings" >"$tmp/direct.json" || fail "direct request to the mock failed"
mapfile -t direct < <(grep -o '"embedding":\[[^]]*\]' "$tmp/direct.json" \
  | sed 's/^"embedding":\[//; s/\]$//')
[ "${#direct[@]}" -eq "${#texts[@]}" ] \
  || fail "the mock returned ${#direct[@]} vectors, expected ${#texts[@]}: $(cat "$tmp/direct.json")"

line_re='^(actor|client)\[([0-9]+)\] dims=([0-9]+) norm=([0-9.]+) head=([-0-9.e,+]+) text="(.*)"$'
for i in "${!texts[@]}"; do
  a=$(grep -F "actor[$i] " "$tmp/host.out" || true)
  c=$(grep -F "client[$i] " "$tmp/host.out" || true)
  if [ -z "$a" ] || [ -z "$c" ]; then fail "no actor/client line for text $i"; fi
  [ "${a#actor}" = "${c#client}" ] \
    || fail "the actor and the client got different vectors for text $i:
  $a
  $c"
  [[ $a =~ $line_re ]] || fail "malformed line: $a"
  [ "${BASH_REMATCH[3]}" = "$dims" ] || fail "text $i: dims ${BASH_REMATCH[3]}, expected $dims"
  [ "${BASH_REMATCH[6]}" = "${texts[$i]}" ] || fail "text $i: '${BASH_REMATCH[6]}', expected '${texts[$i]}'"
  norm=${BASH_REMATCH[4]} head=${BASH_REMATCH[5]}
  awk -v n="$norm" 'BEGIN { exit !(n > 0.99999 && n < 1.00001) }' \
    || fail "text $i: norm $norm is not 1"
  # The head values equal the first values of the mock's own vector.
  awk -v got="$head" -v want="${direct[$i]}" 'BEGIN {
      n = split(got, g, ","); split(want, w, ",")
      if (n != 4) exit 1
      for (k = 1; k <= n; ++k) {
        d = g[k] - w[k]; if (d < 0) d = -d
        if (d > 1e-6) exit 1
      }
    }' || fail "text $i: head $head differs from the mock's vector ${direct[$i]}"
done
if grep -q . "$tmp/host.err"; then
  cat "$tmp/host.err" >&2
  fail "host_app wrote to stderr on success"
fi

# -- 4. through a remote node ------------------------------------------------------
caf_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
step "starting $cli serve --upstream $url --caf-port $caf_port"
"$cli" serve --listen 127.0.0.1:0 --upstream "$url" --caf-port "$caf_port" \
  --log-level warn >"$tmp/node.out" 2>"$tmp/node.err" &
node_pid=$!
for _ in $(seq 200); do
  grep -q '^listening on ' "$tmp/node.out" && break
  kill -0 "$node_pid" 2>/dev/null || break
  sleep 0.1
done
grep -qxF "published on caf://127.0.0.1:$caf_port" "$tmp/node.out" \
  || fail "the node did not publish on $caf_port: $(cat "$tmp/node.out" "$tmp/node.err")"
grep -q '^listening on ' "$tmp/node.out" \
  || fail "the node printed no 'listening on' line in 20 s: $(cat "$tmp/node.err")"

rc=0
timeout --kill-after=5 60 "$host_app" --remote "127.0.0.1:$caf_port" "${texts[@]}" \
  >"$tmp/remote.out" 2>"$tmp/remote.err" || rc=$?
cat "$tmp/remote.out"
if [ "$rc" -ne 0 ]; then
  cat "$tmp/remote.err" >&2
  fail "host_app --remote exited with $rc against caf://127.0.0.1:$caf_port"
fi
grep -qxF -- "host_app: remote caf://127.0.0.1:$caf_port, embedrt type IDs from $offset, host_app type IDs from 5000" \
  "$tmp/remote.out" || fail "host_app --remote: missing or wrong header line"
grep -qxF -- "host_app: ok, $((2 * ${#texts[@]})) host_app::vector_line messages printed" \
  "$tmp/remote.out" || fail "host_app --remote: missing ok line"
# The same vectors as through the local service (same mock, same texts).
if ! diff <(grep -v '^host_app: ' "$tmp/host.out") \
  <(grep -v '^host_app: ' "$tmp/remote.out") >&2; then
  fail "host_app --remote printed other vector lines than the local run (< local, > remote)"
fi
if grep -q . "$tmp/remote.err"; then
  cat "$tmp/remote.err" >&2
  fail "host_app --remote wrote to stderr on success"
fi

# -- 5. failure paths --------------------------------------------------------------
expect_error() { # expect_error NAME REGEX ARGS...: exit 1 and a typed error
  local name=$1 re=$2 rc=0
  shift 2
  timeout --kill-after=5 45 "$host_app" "$@" >"$tmp/$name.out" \
    2>"$tmp/$name.err" || rc=$?
  [ "$rc" -eq 1 ] || {
    cat "$tmp/$name.out" "$tmp/$name.err" >&2
    fail "$name: host_app exited with $rc, expected 1"
  }
  grep -Eq "$re" "$tmp/$name.err" || {
    cat "$tmp/$name.err" >&2
    fail "$name: no error matching '$re'"
  }
  step "$name: $(head -n 1 "$tmp/$name.err")"
}
expect_error bad-url '^host_app: error: embedrt\.invalid_input: ' "not a url" hello
expect_error bad-remote '^host_app: error: embedrt\.invalid_input: ' --remote "no-port" hello

step "stopping the node (SIGTERM)"
stop_rc=0
stop_node || stop_rc=$?
[ "$stop_rc" -eq 0 ] || fail "the node exited with $stop_rc on SIGTERM: $(cat "$tmp/node.err")"
expect_error no-node '^host_app: error: embedrt\.node_down: ' \
  --remote "127.0.0.1:$caf_port" hello

step "stopping the mock (SIGTERM)"
stop_rc=0
stop_mock || stop_rc=$?
[ "$stop_rc" -eq 0 ] || fail "the mock exited with $stop_rc on SIGTERM: $(cat "$tmp/mock.err")"
grep -q "stopped by signal 15" "$tmp/mock.err" \
  || fail "the mock did not report SIGTERM: $(cat "$tmp/mock.err")"
expect_error no-upstream \
  '^host_app: error: embedrt\.(connection_failed|upstream_down|deadline_exceeded): ' \
  "$url" hello

step "PASS"
