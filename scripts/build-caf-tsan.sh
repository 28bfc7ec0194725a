#!/usr/bin/env bash
# Builds CAF 0.17.6 (Debian's source package `actor-framework`, the same
# version as libcaf-dev) with ThreadSanitizer into a private prefix, so that
# the TSan build of embedrt can see CAF's own thread hand-overs (mailboxes,
# scheduler queues). Debian's libcaf_core.so is not instrumented: against it,
# TSan reports false positives inside CAF (docs/testing.md).
#
#   scripts/build-caf-tsan.sh [PREFIX]          # default: build-caf-tsan/prefix
#   EMBEDRT_SANITIZE=thread BUILD_DIR=build-tsan-caf \
#     CMAKE_PREFIX_PATH=$PWD/build-caf-tsan/prefix scripts/test.sh
#
# `-include limits`: 0.17.6's receive_buffer.hpp lacks <limits> for g++ 12
# (Debian's packaging patches it; only the upstream tarball is used here).
# Uses a private apt source list (deb-src from the Debian mirror); nothing in
# /etc is changed.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$PWD/build-caf-tsan
prefix=${1:-$work/prefix}
mkdir -p "$work/apt/lists/partial" "$work/src"
cat >"$work/apt/src.sources" <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
apt_opts=(-o "Dir::Etc::SourceList=$work/apt/src.sources"
  -o "Dir::Etc::SourceParts=/dev/null" -o "Dir::State::Lists=$work/apt/lists")
if ! ls "$work"/src/actor-framework_0.17.6.orig.tar.gz >/dev/null 2>&1; then
  apt-get "${apt_opts[@]}" update -q
  # Only the upstream tarball is needed (Debian's packaging tarball is not).
  (cd "$work/src" && apt-get "${apt_opts[@]}" source --download-only \
    actor-framework=0.17.6-2.1 || true)
fi
tarball="$work/src/actor-framework_0.17.6.orig.tar.gz"
[ -f "$tarball" ] || { echo "could not fetch $tarball" >&2; exit 1; }
[ -d "$work/src/actor-framework-0.17.6" ] || tar -C "$work/src" -xzf "$tarball"
cmake -S "$work/src/actor-framework-0.17.6" -B "$work/build" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX="$prefix" \
  -DCMAKE_CXX_FLAGS="-fsanitize=thread -O1 -g -include limits" \
  -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=thread" \
  -DCAF_NO_EXAMPLES=ON -DCAF_NO_UNIT_TESTS=ON -DCAF_NO_TOOLS=ON \
  -DCAF_NO_OPENCL=ON -DCAF_NO_PYTHON=ON -DCAF_NO_SUMMARY=ON \
  -DCAF_LOG_LEVEL=QUIET
cmake --build "$work/build" -j "$(nproc)"
cmake --install "$work/build"
echo "TSan-instrumented CAF installed in $prefix"
