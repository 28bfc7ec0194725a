#!/usr/bin/env bash
# Builds the Debian packages (docs/packaging.md):
#
#   scripts/package.sh        # -> build-pkg/embedrt_<v>-1_<arch>.deb
#                             #    build-pkg/embedrt-dbg_<v>-1_<arch>.deb
#
# A release build tree of its own (RelWithDebInfo, no tests), installed
# stripped by CPack with the command's debug information in embedrt-dbg.
# Needs dpkg-dev (dpkg-shlibdeps computes the run-time dependencies).
#
#   BUILD_DIR  build directory (default build-pkg)
#   JOBS       parallel jobs (default: nproc)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh build
if ! command -v dpkg-shlibdeps >/dev/null 2>&1; then
  echo "package: installing dpkg-dev (dpkg-shlibdeps)"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends dpkg-dev
fi

build_dir=${BUILD_DIR:-build-pkg}
jobs=${JOBS:-$(nproc)}
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DEMBEDRT_BUILD_TESTS=OFF -DEMBEDRT_INSTALL_STRIP=ON >/dev/null
cmake --build "$build_dir" -j "$jobs"
rm -f "$build_dir"/embedrt*.deb
(cd "$build_dir" && cpack -G DEB)

for deb in "$build_dir"/embedrt*.deb; do
  echo "== $deb ($(du -h "$deb" | cut -f1))"
  dpkg-deb --field "$deb" Package Version Depends Recommends Installed-Size
done
