#!/usr/bin/env bash
# Installs the Debian 12 packages embedrt needs, idempotently: each package is
# checked with dpkg first and apt-get runs only when something is missing.
#
#   scripts/setup.sh build   # compiler, CMake, CAF, Boost, OpenSSL, RapidJSON
#   scripts/setup.sh test    # build + Catch2 and the tools the tests use
#   scripts/setup.sh bench   # test + wrk, nginx + njs, python3-httpx,
#                            # python3-aiohttp, gnuplot, linux-perf
set -euo pipefail

profile=${1:-build}
build_pkgs=(g++ make cmake libcaf-dev libboost1.81-dev libssl-dev rapidjson-dev
  ca-certificates curl)
test_pkgs=(catch2 openssl python3 procps util-linux python3-prometheus-client)
bench_pkgs=(wrk nginx libnginx-mod-http-js python3-httpx python3-aiohttp
  gnuplot-nox linux-perf)

case "$profile" in
  build) pkgs=("${build_pkgs[@]}") ;;
  test) pkgs=("${build_pkgs[@]}" "${test_pkgs[@]}") ;;
  bench) pkgs=("${build_pkgs[@]}" "${test_pkgs[@]}" "${bench_pkgs[@]}") ;;
  *) echo "usage: $0 build|test|bench" >&2; exit 2 ;;
esac

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#pkgs[@]} packages present"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
