#!/usr/bin/python3
"""wrk (the limit) as a benchmark contestant: runs `wrk` with a Lua script
that POSTs the same body the other contestants send (one request of
peer_common's texts, `inputs` texts of `text-bytes` bytes, `dims`
dimensions, encoding_format base64), on `connections` connections (wrk's
callers are its connections) for `duration` seconds, and prints the same JSON
line as `embedrt bench`: percentiles from wrk's own latency histogram, CPU
and peak RSS of the wrk process from its rusage. wrk sends one fixed body;
it does not decode the response (the cheapest client possible).

  /usr/bin/python3 scripts/bench/peer_wrk.py --upstream http://127.0.0.1:PORT/v1 \
      --connections 8 --duration 5
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import types

import peer_common

LUA = r"""
wrk.method = "POST"
wrk.body = [==[@BODY@]==]
wrk.headers["Content-Type"] = "application/json"

function done(summary, latency, requests)
  local e = summary.errors
  local p = function(q) return latency:percentile(q) / 1000.0 end
  io.write(string.format(
    '{"wrk_requests":%d,"wrk_duration_us":%d,"wrk_errors":{"connect":%d,' ..
    '"read":%d,"write":%d,"status":%d,"timeout":%d},"p50_ms":%.4f,' ..
    '"p95_ms":%.4f,"p99_ms":%.4f,"p999_ms":%.4f,"max_ms":%.4f,"mean_ms":%.4f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status,
    e.timeout, p(50), p(95), p(99), p(99.9), latency.max / 1000.0,
    latency.mean / 1000.0))
end
"""


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--upstream", required=True)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--threads", type=int, default=None,
                   help="wrk threads (default: min(connections, nproc))")
    p.add_argument("--duration", type=int, default=5, help="seconds")
    p.add_argument("--inputs", type=int, default=1)
    p.add_argument("--dims", type=int, default=8)
    p.add_argument("--text-bytes", type=int, default=40)
    p.add_argument("--model", default="bench-model")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout-ms", type=int, default=30000)
    a = p.parse_args()
    threads = a.threads or max(1, min(a.connections, os.cpu_count() or 1))
    body_args = types.SimpleNamespace(seed=a.seed, inputs=a.inputs,
                                      text_bytes=a.text_bytes, model=a.model,
                                      dims=a.dims, encoding="base64")
    body = peer_common.request_body(body_args, 0).decode()
    url = a.upstream.rstrip("/") + "/embeddings"
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(LUA.replace("@BODY@", body))
        script = f.name
    try:
        cmd = ["wrk", "-t%d" % threads, "-c%d" % a.connections,
               "-d%ds" % a.duration, "--timeout", "%ds" % max(1, a.timeout_ms // 1000),
               "-s", script, url]
        # wrk's peak RSS is sampled (VmHWM) while it runs: its ru_maxrss
        # would include this Python parent's (Linux keeps the parent's
        # high-water mark across fork + exec).
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        hwm = 0.0
        deadline = time.time() + a.duration + 60
        while proc.poll() is None and time.time() < deadline:
            hwm = max(hwm, peer_common.hwm_mb(proc.pid) or 0.0)
            time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            sys.exit("peer_wrk: wrk failed (%d): %s" % (proc.returncode, stderr))
    finally:
        os.unlink(script)
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = [l for l in stdout.splitlines() if l.startswith('{"wrk_')]
    if not line:
        sys.exit("peer_wrk: no summary from wrk:\n" + stdout + stderr)
    w = json.loads(line[-1])
    secs = w.pop("wrk_duration_us") / 1e6
    total = w.pop("wrk_requests")
    errs = {k: v for k, v in w.pop("wrk_errors").items() if v}
    # wrk counts non-2xx answers in "status" (they are also in total).
    failed = errs.get("status", 0) + errs.get("timeout", 0)
    cpu = ru.ru_utime + ru.ru_stime
    report = {
        "client": "wrk", "requests": total, "concurrency": a.connections,
        "inputs": a.inputs, "dims": a.dims, "connections": a.connections,
        "batching": False, "model": a.model, "warmup": 0,
        "text_bytes": a.text_bytes, "workers": threads,
        "ok": total - failed, "errors": errs, "seconds": secs,
        "req_per_s": total / secs, "texts_per_s": (total - failed) * a.inputs / secs,
    }
    report.update(w)
    report.update({
        "error_p50_ms": None, "error_p99_ms": None,
        # wrk's main thread plus its worker threads, fixed for the run.
        "threads_start": threads + 1, "threads_peak": threads + 1,
        "threads_end": threads + 1,
        "connections_opened": None, "upstream_requests": total, "reuse": None,
        "restarts": None, "rejected": None,
        "cpu_s": cpu, "cpu_s_process": cpu,
        "cpu_ms_per_1k": cpu * 1e6 / total if total else None,
        "max_rss_mb": hwm,
    })
    print(json.dumps(report, separators=(",", ":")), flush=True)


if __name__ == "__main__":
    main()
