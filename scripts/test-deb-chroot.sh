#!/usr/bin/env bash
# The .deb on a clean Debian 12 (docs/packaging.md records a run): a minimal
# bookworm chroot made by debootstrap, where
#
#  1. `apt-get install ./embedrt_*.deb` resolves its dependencies from the
#     Debian mirror (the Recommends, the development packages, included);
#  2. `embedrt version`, the README's bulk job through the embedded default,
#     and `embedrt embed` against a separate `embedrt mock` run;
#  3. `embedrt serve` starts with docs/examples/deploy/embedrt.conf (its
#     upstream pointed at the mock) and answers /v1/embeddings with a token;
#  4. cmake, g++ and make are installed and docs/examples/host_app is built
#     against the installed CMake package (/usr/lib/cmake/embedrt) and run
#     against the mock;
#  5. systemd is installed and `systemd-analyze verify` checks
#     docs/examples/deploy/embedrt.service with its credential.conf drop-in
#     (the command it names, /usr/bin/embedrt, is the installed one);
#  6. in a second minimal bookworm (CHROOT_DIR-lean), the Dockerfile's RUN
#     line as written (no recommends: no development packages), then
#     `embedrt serve` as nobody, as its USER/ENTRYPOINT/CMD say (on 127.0.0.1):
#     /readyz answers 200 (the built-in upstream; no key).
#
#   scripts/test-deb-chroot.sh [CHROOT_DIR]    # as root; default
#                                              # /tmp/embedrt-bookworm
# The chroot is made once (debootstrap --variant=minbase) and reused; the
# packages come from build-pkg/ (scripts/package.sh).
#   DEBIAN_MIRROR  default http://deb.debian.org/debian
set -euo pipefail
cd "$(dirname "$0")/.."

root=${1:-/tmp/embedrt-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
deb=$(ls build-pkg/embedrt_*.deb)

if [ ! -x "$root/usr/bin/apt-get" ]; then
  command -v debootstrap >/dev/null || apt-get install -y -q debootstrap
  debootstrap --variant=minbase bookworm "$root" "$mirror"
fi
cp /etc/resolv.conf "$root/etc/resolv.conf"
mountpoint -q "$root/proc" || mount -t proc proc "$root/proc"
cleanup() {
  for f in mock.pid serve.pid; do
    if [ -f "$root/tmp/t/$f" ]; then kill "$(cat "$root/tmp/t/$f")" 2>/dev/null || true; fi
  done
  if [ -n "${lean_pid:-}" ]; then kill "$lean_pid" 2>/dev/null || true; fi
  umount "$root/proc" 2>/dev/null || true
  umount "$root-lean/proc" 2>/dev/null || true
}
trap cleanup EXIT

rm -rf "$root/tmp/t" && mkdir -p "$root/tmp/t"
cp "$deb" "$root/tmp/t/"
cp docs/examples/sample.jsonl "$root/tmp/t/"
cp -r docs/examples/host_app "$root/tmp/t/host_app"
cp docs/examples/deploy/embedrt.conf "$root/tmp/t/embedrt.conf"

in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  HOME=/root DEBIAN_FRONTEND=noninteractive /bin/bash -euo pipefail -c "$1"; }

echo "== 1. apt-get install ./$(basename "$deb")"
in_root 'apt-get update -q && cd /tmp/t && apt-get install -y -q ./embedrt_*.deb'
in_root 'dpkg -l embedrt libcaf-dev libboost1.81-dev libssl-dev | tail -4'

echo "== 2. embedrt version, embed (embedded default and against embedrt mock)"
in_root 'embedrt version; command -v embedrt'
in_root 'cd /tmp/t && mkdir -p out &&
  embedrt embed --in sample.jsonl --out out/sample.vectors.jsonl --dims 64 --fresh &&
  test "$(wc -l <out/sample.vectors.jsonl)" -eq 100'
in_root 'cd /tmp/t
  embedrt mock --listen 127.0.0.1:0 >mock.out & echo $! >mock.pid
  for _ in $(seq 100); do grep -q listening mock.out && break; sleep 0.1; done
  url=$(sed -n "s/^listening on //p" mock.out); echo "mock: $url"
  embedrt embed --upstream "$url" --in sample.jsonl --out mock.vectors.jsonl --dims 8
  test "$(wc -l <mock.vectors.jsonl)" -eq 100'

echo "== 3. embedrt serve with docs/examples/deploy/embedrt.conf"
in_root 'cd /tmp/t && url=$(sed -n "s/^listening on //p" mock.out)
  sed -e "s|^listen = .*|listen = 127.0.0.1:0|" \
      -e "s|^base_url = .*|base_url = $url|" embedrt.conf >serve.conf
  EMBEDRT_AUTH_TOKEN=t0ken OPENAI_API_KEY=unused \
    embedrt serve --config serve.conf >serve.out 2>serve.err & echo $! >serve.pid
  for _ in $(seq 100); do grep -q listening serve.out && break; sleep 0.1; done
  base=$(sed -n "s/^listening on //p" serve.out); echo "serve: $base"
  host=${base#http://}; host=${host%/v1}
  exec 3<>"/dev/tcp/${host%:*}/${host#*:}"
  body="{\"model\":\"text-embedding-3-small\",\"input\":[\"hello\"],\"dimensions\":4}"
  printf "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0ken\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" "${#body}" "$body" >&3
  reply=$(cat <&3); echo "$reply" | head -1
  echo "$reply" | grep -q "^HTTP/1.1 200" && echo "$reply" | grep -q "\"embedding\""
  kill -TERM "$(cat serve.pid)"; wait "$(cat serve.pid)"; echo "serve exit: $?"'

echo "== 4. docs/examples/host_app against the installed CMake package"
in_root 'apt-get install -y -q --no-install-recommends cmake g++ make'
in_root 'cd /tmp/t && rm -rf host_app-build &&
  cmake -S host_app -B host_app-build -DCMAKE_BUILD_TYPE=RelWithDebInfo | grep "embedrt 0" &&
  cmake --build host_app-build &&
  url=$(sed -n "s/^listening on //p" mock.out) &&
  host_app-build/host_app "$url" "hello world" "actors share nothing"'
in_root 'cd /tmp/t && kill -TERM "$(cat mock.pid)" && rm mock.pid'

echo "== 5. systemd-analyze verify docs/examples/deploy/embedrt.service (+ credential.conf)"
in_root 'apt-get install -y -q --no-install-recommends systemd >/dev/null'
install -d "$root/etc/systemd/system/embedrt.service.d"
cp docs/examples/deploy/embedrt.service "$root/etc/systemd/system/"
cp docs/examples/deploy/credential.conf "$root/etc/systemd/system/embedrt.service.d/"
in_root 'systemd-analyze verify /etc/systemd/system/embedrt.service && echo "verify: ok"
  systemd-analyze security --offline=true embedrt.service | tail -1'
echo "== 6. the Dockerfile's install and command, in a second minimal bookworm"
# docs/examples/deploy/Dockerfile's COPY and RUN lines as written (no
# recommends), then its USER, ENV and ENTRYPOINT + CMD: `embedrt serve` as
# nobody (on 127.0.0.1 here, not the image's 0.0.0.0) with the built-in
# upstream (no key given).
lean=${root}-lean
if [ ! -x "$lean/usr/bin/apt-get" ]; then
  debootstrap --variant=minbase bookworm "$lean" "$mirror"
fi
cp /etc/resolv.conf "$lean/etc/resolv.conf"
mountpoint -q "$lean/proc" || mount -t proc proc "$lean/proc"
cp "$deb" "$lean/tmp/"
run=$(sed -n '/^RUN /,/[^\\]$/p' docs/examples/deploy/Dockerfile | sed 's/^RUN //')
echo "RUN $run"
chroot "$lean" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  DEBIAN_FRONTEND=noninteractive /bin/sh -ec "$run"
chroot "$lean" dpkg -l libcaf-dev 2>/dev/null | grep -q '^ii' \
  && { echo "FAIL: the lean install has libcaf-dev" >&2; exit 1; }
echo "lean install: $(chroot "$lean" dpkg -l | grep -c '^ii') packages, no -dev"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
chroot --userspec=nobody:nogroup "$lean" /usr/bin/env -i \
  PATH=/usr/bin:/bin EMBEDRT_LISTEN="127.0.0.1:$port" \
  /usr/bin/embedrt serve >"$lean/tmp/serve.out" 2>"$lean/tmp/serve.err" &
lean_pid=$!
for _ in $(seq 100); do grep -q listening "$lean/tmp/serve.out" && break; sleep 0.1; done
cat "$lean/tmp/serve.out"
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&3
reply=$(cat <&3); exec 3<&-
echo "$reply" | head -1; echo "$reply" | tail -1
kill -TERM "$lean_pid"; wait "$lean_pid"; echo "serve (nobody) exit: $?"
umount "$lean/proc"
echo "$reply" | grep -q '^HTTP/1.1 200' || { echo "FAIL: /readyz" >&2; exit 1; }
echo "== all steps passed"
