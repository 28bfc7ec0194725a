#!/usr/bin/env bash
# Installs the Debian 12 packages embedrt needs, idempotently: each package is
# checked with dpkg first and apt-get runs only when something is missing.
#
#   scripts/setup.sh build   # compiler, CMake, CAF, Boost, OpenSSL, RapidJSON,
#                            # LMDB (the persistent embedding cache)
#   scripts/setup.sh test    # build + Catch2 and the tools the tests use,
#                            # Node.js and the OpenAI Node SDK (npm ci in
#                            # tests/app/sdk, pinned by its package-lock.json),
#                            # Java 17 and WireMock's standalone jar (npm ci in
#                            # tests/app/wiremock)
#   scripts/setup.sh bench   # test + wrk, nginx + njs, python3-httpx,
#                            # python3-aiohttp, gnuplot, linux-perf
set -euo pipefail

profile=${1:-build}
build_pkgs=(g++ make cmake libcaf-dev libboost1.81-dev libssl-dev rapidjson-dev liblmdb-dev
  ca-certificates curl)
test_pkgs=(catch2 openssl python3 procps util-linux python3-prometheus-client
  openjdk-17-jre-headless)
bench_pkgs=(wrk nginx libnginx-mod-http-js python3-httpx python3-aiohttp
  gnuplot-nox linux-perf)

case "$profile" in
  build) pkgs=("${build_pkgs[@]}") ;;
  test) pkgs=("${build_pkgs[@]}" "${test_pkgs[@]}") ;;
  bench) pkgs=("${build_pkgs[@]}" "${test_pkgs[@]}" "${bench_pkgs[@]}") ;;
  *) echo "usage: $0 build|test|bench" >&2; exit 2 ;;
esac

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

# Node.js and npm for the SDK test: the machine's own Node.js if it has one
# (a NodeSource nodejs bundles npm and conflicts with Debian's npm package).
if [ "$profile" != build ]; then
  if ! command -v node >/dev/null 2>&1; then pkgs+=(nodejs); fi
  if ! command -v npm >/dev/null 2>&1; then pkgs+=(npm); fi
fi

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#pkgs[@]} packages present"
else
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q
  $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The clients of the gateway tests (tests/app/sdk: the OpenAI Node SDK,
# LangChain JS, the Vercel AI SDK, LlamaIndex TS), exactly the versions its
# package.json and lock file name: `npm ci` unless every one is installed.
if [ "$profile" != build ]; then
  sdk_dir="$(cd "$(dirname "$0")/.." && pwd)/tests/app/sdk"
  # Prints the dependencies not installed at their pinned version.
  absent=$(cd "$sdk_dir" && node -e '
    const fs = require("fs");
    const deps = JSON.parse(fs.readFileSync("package.json")).dependencies;
    for (const [name, want] of Object.entries(deps)) {
      let have = "";
      try {
        have = JSON.parse(fs.readFileSync(`node_modules/${name}/package.json`)).version;
      } catch (e) {}
      if (have !== want) console.log(`${name}@${want}`);
    }')
  if [ -z "$absent" ]; then
    echo "setup: the gateway tests' Node.js clients present"
  else
    echo "setup: installing the gateway tests' Node.js clients (npm ci):" $absent
    for attempt in 1 2 3; do
      if (cd "$sdk_dir" && npm ci --no-audit --no-fund --loglevel=error); then
        break
      fi
      if [ "$attempt" -eq 3 ]; then
        echo "setup: npm ci failed 3 times" >&2
        exit 1
      fi
      sleep $((attempt * 5))
    done
  fi
fi

# WireMock's standalone jar (the npm package `wiremock` ships it), exactly the
# version the lock file names (tests/app/wiremock_test.cpp).
if [ "$profile" != build ]; then
  wm_dir="$(cd "$(dirname "$0")/.." && pwd)/tests/app/wiremock"
  want=$(sed -n 's/^ *"wiremock": "\(.*\)"$/\1/p' "$wm_dir/package.json")
  if [ -n "$want" ] && [ -f "$wm_dir/node_modules/wiremock/build/wiremock-standalone-$want.jar" ]; then
    echo "setup: WireMock $want present"
  else
    echo "setup: installing WireMock $want (npm ci)"
    for attempt in 1 2 3; do
      if (cd "$wm_dir" && npm ci --no-audit --no-fund --loglevel=error); then
        break
      fi
      if [ "$attempt" -eq 3 ]; then
        echo "setup: npm ci failed 3 times" >&2
        exit 1
      fi
      sleep $((attempt * 5))
    done
  fi
fi
