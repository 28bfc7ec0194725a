#!/usr/bin/env python3
"""Rate-limit pacing and adaptive concurrency benchmarks (docs/benchmarks.md,
"Pacing and adaptive concurrency"). Python's standard library only.

pacing BIN OUT.json [SECONDS]
    `embedrt mock --rpm/--tpm` behind `embedrt serve`, once with pacing on and
    once off (same load, one after the other): one request empties the mock's
    token bucket (a minute's worth, as OpenAI's starts full), then SECONDS (60)
    of open-loop load at 3 x the allowed tokens per minute. The mock's /stats
    before and after the window give the tokens it accepted and its 429s.

adaptive BIN OUT.csv
    `embedrt mock` (20 ms) behind `embedrt serve` with adaptive concurrency on
    (16 connections), 32 closed-loop callers; the mock's latency doubles at
    10 s (POST /latency) and returns at 20 s, it answers every request 429 from
    30 s (POST /outage) to 40 s; /metrics is sampled every 100 ms (the
    concurrency limit, calls in flight). Writes t,limit,busy,phase rows.
"""
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

# The bucket: 60,000 tokens per minute (1,000 per second), a request limit
# that does not bind; 100 tokens per caller request (one token-id array, the
# same count for the runtime's estimate and the mock); offered 3 x.
TPM = 60000
RPM = 100000
TOKENS = 100
OFFERED = 3.0


def start(cmd, what):
    """Starts a process that prints 'listening on URL'; returns (proc, url)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if line.startswith("listening on "):
            return proc, line.split()[-1]
    raise SystemExit(f"{what} did not start: {' '.join(cmd)}")


def host_port(url):
    hp = url.split("//")[1].split("/")[0]
    h, p = hp.rsplit(":", 1)
    return h, int(p)


def call(url, method, path, body=None, headers=None, timeout=30):
    h, p = host_port(url)
    c = http.client.HTTPConnection(h, p, timeout=timeout)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def post(conn, reconnect, body, headers):
    """POSTs `body` to /v1/embeddings on a keep-alive connection; returns
    (connection, status). When the exchange fails on the wire: a new
    connection from `reconnect()` and status 0."""
    try:
        conn.request("POST", "/v1/embeddings", body=body, headers=headers)
        r = conn.getresponse()
        r.read()
        return conn, r.status
    except (OSError, http.client.HTTPException):
        conn.close()
        return reconnect(), 0


def mock_stats(mock_url):
    _, data = call(mock_url, "GET", "/stats")
    return json.loads(data)


def serve(bin_, mock_url, dirname, keys):
    ini = os.path.join(dirname, "serve.ini")
    with open(ini, "w") as f:
        f.write(f"[upstream m]\nbase_url = {mock_url}\nconnections = 16\n")
        for k, v in keys.items():
            f.write(f"{k} = {v}\n")
    return start([bin_, "serve", "--listen", "127.0.0.1:0", "--config", ini,
                  "--log-level", "error", "--grace-ms", "1000"], "serve")


class worker_pool:
    """Threads with one keep-alive connection each, taking jobs from a list."""

    def __init__(self, url, n):
        self.url = url
        self.jobs = []
        self.cv = threading.Condition()
        self.done = False
        self.statuses = {}
        self.threads = [threading.Thread(target=self.run, daemon=True)
                        for _ in range(n)]
        for t in self.threads:
            t.start()

    def submit(self, body):
        with self.cv:
            self.jobs.append(body)
            self.cv.notify()

    def run(self):
        h, p = host_port(self.url)

        def connect():
            return http.client.HTTPConnection(h, p, timeout=60)

        conn = connect()
        headers = {"content-type": "application/json",
                   "x-embedrt-timeout-ms": "10000"}
        while True:
            with self.cv:
                while not self.jobs and not self.done:
                    self.cv.wait()
                if not self.jobs:
                    return
                body = self.jobs.pop(0)
            conn, status = post(conn, connect, body, headers)
            with self.cv:
                self.statuses[status] = self.statuses.get(status, 0) + 1

    def stop(self):
        with self.cv:
            self.done = True
            self.cv.notify_all()
        for t in self.threads:
            t.join()


def body_of(inputs, ids):
    return json.dumps({"model": "m", "encoding_format": "base64",
                       "input": [[17 + i] * ids for i in range(inputs)]})


def pacing_run(bin_, pacing, seconds):
    with tempfile.TemporaryDirectory() as d:
        mock, mock_url = start([bin_, "mock", "--listen", "127.0.0.1:0",
                                "--rpm", str(RPM), "--tpm", str(TPM),
                                "--latency", "fixed:50"], "mock")
        srv, url = serve(bin_, mock_url, d, {"pacing": "on" if pacing else "off"})
        try:
            # Empty the bucket: a minute's tokens in one request.
            status, _ = call(url, "POST", "/v1/embeddings",
                             body_of(TPM // 1000, 1000),
                             {"content-type": "application/json"})
            assert status == 200, status
            pool = worker_pool(url, 200)
            before = mock_stats(mock_url)
            t_before = time.monotonic()
            rate = OFFERED * TPM / 60.0 / TOKENS  # requests per second
            body = body_of(1, TOKENS)
            t0 = time.monotonic()
            n = 0
            while True:
                due = t0 + n / rate
                now = time.monotonic()
                if due - t0 >= seconds:
                    break
                if due > now:
                    time.sleep(due - now)
                pool.submit(body)
                n += 1
            after = mock_stats(mock_url)
            # The window between the two snapshots (the bucket refills in
            # it all along).
            elapsed = time.monotonic() - t_before
            pool.stop()
        finally:
            for p in (srv, mock):
                p.terminate()
                p.wait(timeout=15)
    tokens = after["tokens"] - before["tokens"]
    upstream = after["embedding_requests"] - before["embedding_requests"]
    s429 = (after["by_status"].get("429", 0)
            - before["by_status"].get("429", 0))
    return {
        "pacing": pacing, "seconds": round(elapsed, 2), "offered_requests": n,
        "offered_tokens_per_min": round(n * TOKENS * 60 / elapsed),
        "tpm_limit": TPM,
        "tokens_per_min": round(tokens * 60 / elapsed),
        "share_of_limit": round(tokens * 60 / elapsed / TPM, 4),
        "upstream_requests": upstream, "upstream_429": s429,
        "upstream_429_share": round(s429 / upstream, 4) if upstream else 0,
        "caller_statuses": {str(k): v for k, v in sorted(pool.statuses.items())},
    }


def metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return float("nan")


def adaptive_run(bin_, out_csv):
    with tempfile.TemporaryDirectory() as d:
        mock, mock_url = start([bin_, "mock", "--listen", "127.0.0.1:0",
                                "--latency", "fixed:20"], "mock")
        srv, url = serve(bin_, mock_url, d, {"adaptive_concurrency": "on",
                                             "min_connections": "1",
                                             "breaker": "off"})
        stop = threading.Event()

        def caller():
            h, p = host_port(url)

            def connect():
                return http.client.HTTPConnection(h, p, timeout=60)

            conn = connect()
            body = body_of(1, 10)
            while not stop.is_set():
                conn, _ = post(conn, connect, body,
                               {"content-type": "application/json"})

        threads = [threading.Thread(target=caller, daemon=True)
                   for _ in range(32)]
        for t in threads:
            t.start()
        schedule = [(10, "/latency", "fixed:40", "latency x2"),
                    (20, "/latency", "default", "normal"),
                    (30, "/outage", "429", "429 outage"),
                    (40, "/outage", "none", "normal")]
        rows = []
        phase = "normal"
        t0 = time.monotonic()
        try:
            while True:
                t = time.monotonic() - t0
                if t >= 50:
                    break
                while schedule and t >= schedule[0][0]:
                    _, path, body, phase = schedule.pop(0)
                    call(mock_url, "POST", path, body)
                _, text = call(url, "GET", "/metrics")
                text = text.decode()
                rows.append((round(t, 2),
                             metric(text, "embedrt_concurrency_limit"),
                             metric(text, "embedrt_connections_busy"), phase))
                time.sleep(0.1)
        finally:
            stop.set()
            for t in threads:
                t.join()
            for p in (srv, mock):
                p.terminate()
                p.wait(timeout=15)
    with open(out_csv, "w") as f:
        f.write("t,limit,busy,phase\n")
        for r in rows:
            f.write(f"{r[0]},{r[1]:g},{r[2]:g},{r[3]}\n")


def main():
    if len(sys.argv) >= 4 and sys.argv[1] == "pacing":
        secs = float(sys.argv[4]) if len(sys.argv) > 4 else 60.0
        runs = [pacing_run(sys.argv[2], True, secs),
                pacing_run(sys.argv[2], False, secs)]
        with open(sys.argv[3], "w") as f:
            for r in runs:
                f.write(json.dumps(r) + "\n")
        for r in runs:
            print(json.dumps(r))
    elif len(sys.argv) == 4 and sys.argv[1] == "adaptive":
        adaptive_run(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
