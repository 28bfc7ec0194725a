#!/usr/bin/env bash
# The README's test command: installs the packages, builds everything with
# -Wall -Wextra -Werror and runs the whole test suite with ctest.
#
# Environment:
#   BUILD_DIR        build directory (default: build)
#   EMBEDRT_SANITIZE sanitizers, e.g. address,undefined or thread; the build
#                    directory then defaults to build-<sanitizers>
#   CTEST_ARGS       extra ctest arguments (e.g. "-R protocol")
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh test

san=${EMBEDRT_SANITIZE:-}
default_dir=build
if [ -n "$san" ]; then default_dir="build-${san//,/-}"; fi
build_dir=${BUILD_DIR:-$default_dir}
jobs=${JOBS:-$(nproc)}

cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DEMBEDRT_SANITIZE="$san" -DEMBEDRT_BUILD_TESTS=ON
cmake --build "$build_dir" -j "$jobs"

if [ -n "$san" ]; then
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
  export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/scripts/tsan.supp}
fi
# shellcheck disable=SC2086
ctest --test-dir "$build_dir" --output-on-failure -j "$jobs" ${CTEST_ARGS:-}
