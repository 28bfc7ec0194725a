# Shell helpers the benchmark scripts share (sourced, not run).

# wait_listening FILE: prints the URL of the first "listening on URL" line
# that a server (`embedrt mock`, `embedrt serve`) writes to FILE, waiting at
# most 10 s; fails (status 1) if none came.
wait_listening() {
  for _ in $(seq 1 200); do
    if grep -q '^listening on ' "$1" 2>/dev/null; then
      sed -n 's/^listening on //p' "$1" | head -n 1
      return 0
    fi
    sleep 0.05
  done
  return 1
}

# start_mock BIN DIR [MOCK OPTIONS...]: starts `BIN mock` on a free port of
# 127.0.0.1 in the background (output in DIR/mock.out and DIR/mock.err);
# sets mock_pid and mock_url (the base URL, ending in /v1). Exits the script
# if the mock does not start. The caller kills "$mock_pid" on exit.
start_mock() {
  local bin=$1 dir=$2
  shift 2
  "$bin" mock --listen 127.0.0.1:0 "$@" >"$dir/mock.out" 2>"$dir/mock.err" &
  mock_pid=$!
  mock_url=$(wait_listening "$dir/mock.out") || {
    echo "mock did not start: $(cat "$dir/mock.err")" >&2
    exit 1
  }
}
