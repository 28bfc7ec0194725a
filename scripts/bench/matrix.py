#!/usr/bin/python3
"""The benchmark matrix (P1-P5 and F of the targets in docs/benchmarks.md):
every contestant against the same upstreams, with the same connections,
inputs, dimensions and latency, in one run, and the cost of each optional
feature (cache, pacing, adaptive concurrency) in three of those shapes; writes the results (JSON lines), the tables between the
`<!-- matrix:begin -->` / `<!-- matrix:end -->` markers of docs/benchmarks.md
and the plots (docs/bench/*.png, gnuplot).

Upstream A: nginx + njs (scripts/bench/nginx-njs.conf.in, embeddings.js):
  /v1 answers at once, /lat50/v1 after 50 ms; its access log records
  $connection_requests, so connection reuse is also measured upstream-side.
Upstream B: `embedrt mock` (zero latency), for P1's cross-check.
Contestants: wrk (peer_wrk.py), httpx (peer_httpx.py), aiohttp
  (peer_aiohttp.py), `embedrt bench` (batching on and off).

Normally started by scripts/bench/matrix.sh (which installs the Debian
packages and builds embedrt first). Everything listens on 127.0.0.1 only,
every run is bounded in requests or seconds and killed after a timeout.
"""

import argparse
import datetime
import json
import math
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PY = "/usr/bin/python3"
NJS_MODULE = "/usr/lib/nginx/modules/ngx_http_js_module.so"
BEGIN, END = "<!-- matrix:begin -->", "<!-- matrix:end -->"
LATENCY_MS = 50
SWEEP = [1, 5, 64, 1000]
SWEEP_CONNS = 8
# wrk / embedrt pairs of P4 (the first is the P4 table's).
P4_PAIRS = 5

# Requests per run (fixed counts, sized for about 2-6 s each on 2 loaded
# cores: P1's runs of about 1 s were bimodal); wrk runs for `--duration`
# seconds instead.
COUNTS = {
    "embedrt": {1: 20000, 5: 40000, 8: 40000, 64: 100000, 1000: 100000},
    "embedrt-nb": {1: 20000, 5: 30000, 8: 100000, 64: 40000, 1000: 40000},
    "httpx": {1: 2000, 5: 3000, 64: 3000, 1000: 3000},
    "aiohttp": {1: 3000, 5: 5000, 64: 6000, 1000: 6000},
}

# Optional features, each alone against all off ("off": pacing is on by
# default, the cache and adaptive concurrency are off). The cache's bound
# and where it fills are in the report's method text (report()). F-384 has the
# inputs of a small model and a document's chunks (1,000-byte texts, 384 dims),
# batching off so that every request is one upstream call on both sides (with
# batching on, how many texts share a call varies from run to run by more than
# 5 %, and a 2 ms upstream spread the rounds from -22 to +49 %); its warm-up
# fills the cache before the measured requests.
FEATURES = [("off", ["--no-pacing"]),
            ("cache", ["--no-pacing", "--cache", "--cache-max-bytes", "16777216"]),
            ("pacing", []), ("adaptive", ["--no-pacing", "--adaptive-concurrency"])]
FEATURE_NAMES = {"cache": "cache (misses only)", "pacing": "pacing",
                 "adaptive": "adaptive concurrency"}
FEATURE_ROUNDS = 9
# (scenario, upstream, conns, callers, requests, extra flags, description)
FEATURE_SHAPES = [
    ("F-P2", "nginx", 8, 64, 300000, [],
     "P2's shape: zero latency (nginx+njs), 64 callers, 8 conns, 1 text, 8 dims"),
    ("F-P3", "nginx-50ms", 16, 1000, 25000, [],
     "P3's shape: 50 ms upstream (nginx+njs), 1000 callers, 16 conns, 1 text, 8 dims"),
    ("F-1536", "mock", 8, 64, 5000, ["--inputs", "8", "--dims", "1536"],
     "zero latency (embedrt mock), 64 callers, 8 conns, 8 texts of 1,536 dims"),
    ("F-384", "mock", 8, 64, 20000,
     ["--dims", "384", "--text-bytes", "1000", "--warmup", "9000", "--no-batching"],
     "zero latency (embedrt mock), 64 callers, 8 conns, batching off, 1 text of "
     "1,000 bytes, 384 dims, the cache full"),
]


def log(msg):
    print("matrix: " + msg, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


class Nginx:
    def __init__(self, workers, tmp):
        self.prefix = os.path.join(tmp, "nginx")
        os.makedirs(self.prefix)
        self.port = free_port()
        with open(os.path.join(HERE, "nginx-njs.conf.in")) as f:
            conf = f.read()
        for k, v in {"@NJS_MODULE@": NJS_MODULE, "@WORKERS@": str(workers),
                     "@PREFIX@": self.prefix, "@PORT@": str(self.port),
                     "@SCRIPT@": os.path.join(HERE, "embeddings.js")}.items():
            conf = conf.replace(k, v)
        self.conf = os.path.join(self.prefix, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.log = os.path.join(self.prefix, "access.log")
        self.proc = subprocess.Popen(
            ["nginx", "-p", self.prefix, "-c", self.conf, "-e",
             os.path.join(self.prefix, "error.log")])
        self.base = "http://127.0.0.1:%d" % self.port
        wait_http(self.base + "/v1/embeddings", self.proc)
        self.offset = 0
        self.slice()  # skip the readiness probe

    def slice(self):
        """Flushes the access log (SIGUSR1 reopens it) and returns the lines
        written since the previous call as (requests, new connections,
        non-200 answers)."""
        self.proc.send_signal(signal.SIGUSR1)
        time.sleep(0.4)
        with open(self.log) as f:
            f.seek(self.offset)
            data = f.read()
            self.offset = f.tell()
        lines = [l.split() for l in data.splitlines() if l.strip()]
        new = sum(1 for l in lines if l[1] == "1")
        bad = sum(1 for l in lines if l[2] != "200")
        return len(lines), new, bad

    def stop(self):
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Mock:
    def __init__(self, binary, threads, tmp):
        self.out = os.path.join(tmp, "mock.out")
        with open(self.out, "w") as out:
            self.proc = subprocess.Popen(
                [binary, "mock", "--listen", "127.0.0.1:0", "--threads",
                 str(threads)], stdout=out, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            with open(self.out) as f:
                m = re.search(r"^listening on (\S+)", f.read(), re.M)
            if m:
                self.url = m.group(1)
                return
            time.sleep(0.05)
        self.proc.kill()
        raise SystemExit("matrix: the mock did not start")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)


def proc_status_mb(pid):
    """(VmHWM, RssAnon) of a process in MB, or (None, None)."""
    hwm = anon = None
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) / 1024.0
                elif line.startswith("RssAnon:"):
                    anon = int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return hwm, anon


def run_sampled(cmd, limit):
    """Runs `cmd` (killed after `limit` s), sampling its peak RSS (VmHWM)
    and its anonymous RSS every 20 ms; returns (its last JSON stdout line or
    None, peak MB, peak anonymous MB)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        hwm = anon = 0.0
        deadline = time.time() + limit
        while proc.poll() is None:
            if time.time() > deadline:
                proc.kill()
                proc.wait()
                log("  killed after %d s" % limit)
                return None, hwm, anon
            h, a = proc_status_mb(proc.pid)
            hwm, anon = max(hwm, h or 0.0), max(anon, a or 0.0)
            time.sleep(0.02)
        out.seek(0)
        err.seek(0)
        lines = [l for l in out.read().splitlines() if l.startswith("{")]
        if proc.returncode != 0 or not lines:
            log("  failed (exit %d): %s" % (proc.returncode, err.read()[-2000:]))
            return None, hwm, anon
        return json.loads(lines[-1]), hwm, anon


def wait_http(url, proc):
    body = b'{"model":"m","input":["x"],"dimensions":8}'
    deadline = time.time() + 10
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit("matrix: nginx exited with %d" % proc.returncode)
        try:
            s = socket.create_connection(("127.0.0.1", int(url.split(":")[2].split("/")[0])), 1)
            path = "/" + url.split("/", 3)[3]
            s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                      % (path.encode(), len(body), body))
            reply = s.recv(100)
            s.close()
            if reply.startswith(b"HTTP/1.1 200"):
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit("matrix: nginx did not answer")


class Matrix:
    def __init__(self, args, tmp):
        self.args = args
        self.tmp = tmp
        self.results = []
        self.nginx = None

    def run(self, scenario, contestant, upstream, url, conns, callers,
            requests=None, extra=(), tags=None):
        """Runs one contestant, returns its JSON report extended with the
        scenario, the upstream, `tags` and (for nginx) the upstream-side
        counts."""
        a = self.args
        scale = a.scale
        common = ["--upstream", url, "--connections", str(conns)]
        if contestant == "wrk":
            cmd = [PY, os.path.join(HERE, "peer_wrk.py"), "--duration",
                   str(a.duration)] + common
            limit = a.duration + 60
        else:
            n = max(10, int(requests * scale))
            common += ["--concurrency", str(callers), "--requests", str(n)]
            if contestant.startswith("embedrt"):
                cmd = [a.embedrt, "bench"] + common
                if contestant == "embedrt-nb":
                    cmd.append("--no-batching")
            else:
                cmd = [PY, os.path.join(HERE, "peer_%s.py" % contestant)] + common
            limit = 120
        cmd += list(extra)
        log("%-4s %-10s %-7s C=%-5d M=%-3d %s (load %s)"
            % (scenario, contestant, upstream, callers, conns,
               "" if contestant == "wrk" else "N=%s" % cmd[cmd.index("--requests") + 1],
               loadavg()))
        t0 = time.time()
        rep, hwm, anon = run_sampled(cmd, limit)
        if rep is not None and contestant != "wrk":
            # Private memory (heap, stacks); the rest of RSS is file-backed
            # pages of the executable and shared libraries.
            rep["max_rss_anon_mb"] = anon
        if rep is not None and contestant.startswith("embedrt"):
            # embedrt bench reports ru_maxrss, which Linux carries over from
            # this (larger) Python parent across fork + exec; its own peak is
            # the VmHWM sampled while it ran.
            rep["max_rss_mb_rusage"] = rep.get("max_rss_mb")
            rep["max_rss_mb"] = hwm
        rep = rep or {"failed": True}
        rep.update({"scenario": scenario, "contestant": contestant,
                    "upstream": upstream, "callers": callers,
                    "conns": conns, "wall_s": time.time() - t0,
                    "command": " ".join(os.path.relpath(c, ROOT)
                                        if c.startswith(ROOT) else c
                                        for c in cmd)})
        rep.update(tags or {})
        if upstream.startswith("nginx"):
            n, new, bad = self.nginx.slice()
            rep["nginx_requests"] = n
            rep["nginx_new_connections"] = new
            rep["nginx_non200"] = bad
            rep["nginx_reuse"] = (n - new) / n if n else None
        if not rep.get("failed"):
            log("  %.0f req/s, p99 %.2f ms, %s errors, %.1f s"
                % (rep.get("req_per_s") or 0, rep.get("p99_ms") or -1,
                   sum(rep.get("errors", {}).values()), rep["wall_s"]))
        self.results.append(rep)
        with open(self.args.results, "a") as f:
            f.write(json.dumps(rep, separators=(",", ":")) + "\n")
        return rep

    def all(self):
        a = self.args
        zero = self.nginx.base + "/v1"
        lat = self.nginx.base + "/lat%d/v1" % LATENCY_MS
        # Throughput vs concurrency (zero latency, 8 connections); P2 at C=64.
        for c in SWEEP:
            m = min(c, SWEEP_CONNS)
            if c <= SWEEP_CONNS or c == SWEEP[-1]:
                # wrk's callers are its connections: one run per connection
                # count (C >= 8 share the 8-connection run).
                self.run("sweep", "wrk", "nginx", zero, m, m)
            for who in ("embedrt", "embedrt-nb", "httpx", "aiohttp"):
                self.run("sweep", who, "nginx", zero, m, c, COUNTS[who][c])
        # P1: 8 callers on 8 connections, one text each, batching off (exactly
        # wrk's load: 8 requests in flight, one upstream request each).
        self.run("P1", "embedrt-nb", "nginx", zero, 8, 8, COUNTS["embedrt-nb"][8])
        mock = Mock(a.embedrt, os.cpu_count() or 1, self.tmp)
        try:
            self.run("P1", "wrk", "mock", mock.url, 8, 8)
            self.run("P1", "embedrt-nb", "mock", mock.url, 8, 8,
                     COUNTS["embedrt-nb"][8])
        finally:
            mock.stop()
        # P3: 50 ms upstream, 16 connections, 1000 single-text callers.
        self.run("P3", "wrk", "nginx-50ms", lat, 16, 16)
        self.run("P3", "embedrt", "nginx-50ms", lat, 16, 1000, 50000)
        self.run("P3", "embedrt-nb", "nginx-50ms", lat, 16, 1000, 1600)
        self.run("P3", "httpx", "nginx-50ms", lat, 16, 1000, 1600)
        self.run("P3", "aiohttp", "nginx-50ms", lat, 16, 1000, 1600)
        # P4: 64 callers, 64 connections, 50 ms upstream.
        self.run("P4", "wrk", "nginx-50ms", lat, 64, 64)
        self.run("P4", "embedrt", "nginx-50ms", lat, 64, 64, 6400)
        self.run("P4", "httpx", "nginx-50ms", lat, 64, 64, 3200)
        self.run("P4", "aiohttp", "nginx-50ms", lat, 64, 64, 3200)
        # More wrk / embedrt pairs back to back: P4's check is the median of
        # the pairs' differences (one pair's wrk p99 moves by several ms with
        # the machine's load, as much as the 1 ms judged).
        for _ in range(P4_PAIRS - 1):
            self.run("P4-pair", "wrk", "nginx-50ms", lat, 64, 64)
            self.run("P4-pair", "embedrt", "nginx-50ms", lat, 64, 64, 6400)
        # P5: 10,000 callers on 16 connections (50 ms upstream).
        self.run("P5", "embedrt", "nginx-50ms", lat, 16, 10000, 50000,
                 extra=["--deadline-ms", "60000"])
        self.features(zero, lat)

    def features(self, zero, lat, rounds=FEATURE_ROUNDS, shapes=None):
        """The cost of each optional feature (the cache with misses only:
        every text is new; pacing against an upstream that sends no rate
        limits; adaptive concurrency) alone against all of them off, on each
        shape of FEATURE_SHAPES: in every round each feature runs back to back
        with an all-off run of its own (its pair, which of the two goes first
        alternating), so that the two share the machine's state; the features'
        order rotates from round to round."""
        mock = Mock(self.args.embedrt, os.cpu_count() or 1, self.tmp)
        try:
            urls = {"nginx": zero, "nginx-50ms": lat, "mock": mock.url}
            off_flags = FEATURES[0][1]
            feats = FEATURES[1:]
            for shape, up, conns, callers, n, extra, _ in FEATURE_SHAPES:
                if shapes and shape not in shapes:
                    continue
                for rnd in range(rounds):
                    k = rnd % len(feats)
                    for j, (name, flags) in enumerate(feats[k:] + feats[:k]):
                        pair = [(name, flags, {}), ("off", off_flags, {"pair": name})]
                        if (rnd + j) % 2:
                            pair.reverse()
                        for variant, vflags, tag in pair:
                            self.run(shape, "embedrt", up, urls[up], conns, callers, n,
                                     extra=list(extra) + vflags,
                                     tags=dict(tag, feature=variant, round=rnd))
        finally:
            mock.stop()


# -- report ------------------------------------------------------------------

def find(results, scenario, contestant, upstream=None, callers=None):
    for r in results:
        if (r["scenario"] == scenario and r["contestant"] == contestant
                and (upstream is None or r["upstream"] == upstream)
                and (callers is None or r["callers"] == callers)
                and not r.get("failed")):
            return r
    return None


def nerr(r):
    return sum(r.get("errors", {}).values()) if r else None


def fmt(x, digits=1):
    if x is None:
        return "–"
    if isinstance(x, float):
        return "{:,.{d}f}".format(x, d=digits)
    return "{:,}".format(x)


# The verdict of a check whose measurement cannot tell: an F row whose
# confidence interval holds both sides of its bound.
INCONCLUSIVE = "inconclusive"


def passed(ok):
    return ok is not None and ok != INCONCLUSIVE and bool(ok)


def missed(ok):
    return ok is not None and ok != INCONCLUSIVE and not ok


def verdict(ok):
    if ok is None:
        return "–"
    if ok == INCONCLUSIVE:
        return "**inconclusive**"
    return "**pass**" if passed(ok) else "**FAIL**"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


NAMES = {"wrk": "wrk (the limit)", "embedrt": "embedrt bench",
         "embedrt-nb": "embedrt bench --no-batching",
         "httpx": "httpx + Semaphore + breaker", "aiohttp": "aiohttp"}


def targets(results):
    """The P1-P5 rows: (id, what, target, measured, ratio text, pass)."""
    rows = []
    g = lambda *k, **kw: find(results, *k, **kw)
    for up in ("nginx", "mock"):
        e = g("P1", "embedrt-nb", up)
        w = g("P1", "wrk", up) if up == "mock" else g("sweep", "wrk", "nginx", 8)
        r = ratio(e and e["req_per_s"], w and w["req_per_s"])
        rows.append(("P1", "zero latency, 8 callers, 8 conns, 1 text, 8 dims; "
                     "upstream %s" % ("nginx+njs" if up == "nginx" else "embedrt mock"),
                     "≥ 0.6 × wrk req/s",
                     "%s vs %s req/s" % (fmt(e and e["req_per_s"], 0),
                                         fmt(w and w["req_per_s"], 0)),
                     fmt(r, 2) + " ×", None if r is None else
                     r >= 0.6 and nerr(e) == 0))
    e = g("sweep", "embedrt-nb", "nginx", 1)
    w = g("sweep", "wrk", "nginx", 1)
    r = ratio(e and e["req_per_s"], w and w["req_per_s"])
    rows.append(("P1", "zero latency, 1 caller, 1 conn, 1 text, 8 dims; upstream nginx+njs",
                 "≥ 0.5 × wrk req/s",
                 "%s vs %s req/s" % (fmt(e and e["req_per_s"], 0),
                                     fmt(w and w["req_per_s"], 0)),
                 fmt(r, 2) + " ×", None if r is None else r >= 0.5 and nerr(e) == 0))
    for up in ("nginx", "mock"):
        e = g("P1", "embedrt-nb", up)
        us = e and e["cpu_ms_per_1k"]  # ms per 1000 requests = µs per request
        rows.append(("P1", "CPU per request, 8 callers, 8 conns; upstream %s"
                     % ("nginx+njs" if up == "nginx" else "embedrt mock"),
                     "≤ 40 µs", "%s µs" % fmt(us, 1), "–",
                     None if us is None else us <= 40))
    e = g("sweep", "embedrt", "nginx", 64)
    for peer, need in (("httpx", 10), ("aiohttp", 3)):
        p = g("sweep", peer, "nginx", 64)
        r = ratio(e and e["req_per_s"], p and p["req_per_s"])
        rows.append(("P2", "req/s vs %s, 64 callers, 8 conns, zero latency" % peer,
                     "≥ %d ×" % need,
                     "%s vs %s req/s" % (fmt(e and e["req_per_s"], 0),
                                         fmt(p and p["req_per_s"], 0)),
                     fmt(r, 1) + " ×", None if r is None else r >= need))
    for peer in ("httpx", "aiohttp"):
        p = g("sweep", peer, "nginx", 64)
        r = ratio(e and e["cpu_ms_per_1k"], p and p["cpu_ms_per_1k"])
        rows.append(("P2", "CPU-s per 1k requests vs %s" % peer, "≤ 1/5 (0.20 ×)",
                     "%s vs %s ms" % (fmt(e and e["cpu_ms_per_1k"], 1),
                                      fmt(p and p["cpu_ms_per_1k"], 1)),
                     fmt(r, 3) + " ×", None if r is None else r <= 0.2))
        r = ratio(e and e["max_rss_mb"], p and p["max_rss_mb"])
        rows.append(("P2", "max RSS vs %s" % peer, "≤ 1/3 (0.33 ×)",
                     "%s vs %s MB (anonymous: %s vs %s MB)" % (
                         fmt(e and e["max_rss_mb"], 1), fmt(p and p["max_rss_mb"], 1),
                         fmt(e and e.get("max_rss_anon_mb"), 1),
                         fmt(p and p.get("max_rss_anon_mb"), 1)),
                     fmt(r, 2) + " ×", None if r is None else r <= 1 / 3))
    on, off = g("P3", "embedrt"), g("P3", "embedrt-nb")
    r = ratio(on and on["texts_per_s"], off and off["texts_per_s"])
    rows.append(("P3", "50 ms upstream, 16 conns, 1000 single-text callers: "
                 "batching on vs off", "≥ 20 ×",
                 "%s vs %s texts/s" % (fmt(on and on["texts_per_s"], 0),
                                       fmt(off and off["texts_per_s"], 0)),
                 fmt(r, 1) + " ×", None if r is None else
                 r >= 20 and nerr(on) == 0 and nerr(off) == 0))
    floor = 0.95 * 16 / (LATENCY_MS / 1000)
    r = ratio(off and off["req_per_s"], 16 / (LATENCY_MS / 1000))
    w3 = g("P3", "wrk")
    rows.append(("P3", "no-batching run vs 16 / 0.05 s = 320 req/s",
                 "≥ 0.95 × (%.0f req/s)" % floor,
                 "%s req/s (wrk, 16 conns, same upstream: %s req/s, p50 %s ms; "
                 "embedrt / wrk = %s ×)" % (
                     fmt(off and off["req_per_s"], 1), fmt(w3 and w3["req_per_s"], 1),
                     fmt(w3 and w3["p50_ms"], 2),
                     fmt(ratio(off and off["req_per_s"], w3 and w3["req_per_s"]), 2)),
                 fmt(r, 3) + " ×", None if r is None else r >= 0.95))
    e, w = g("P4", "embedrt"), g("P4", "wrk")
    # The pairs in the order they ran: the P4 table's, then the P4-pair runs.
    pw = [r for r in results if r["scenario"] == "P4-pair"
          and r["contestant"] == "wrk"]
    pe = [r for r in results if r["scenario"] == "P4-pair"
          and r["contestant"] == "embedrt"]
    pairs = ([(e, w)] if e and w else []) + [
        (a, b) for a, b in zip(pe, pw) if not a.get("failed")
        and not b.get("failed")]
    diffs = [a["p99_ms"] - b["p99_ms"] for a, b in pairs]
    added = median(diffs) if diffs else None
    rows.append(("P4", "64 callers, 64 conns, 50 ms upstream: p99 added over "
                 "wrk's p99 on the same upstream (median of %d pairs run back "
                 "to back)" % len(diffs), "≤ 1 ms",
                 "per pair %s ms; first pair p99 %s vs %s ms (p50 %s vs %s ms)" % (
                     " ".join("%+.2f" % d for d in diffs),
                     fmt(e and e["p99_ms"], 2), fmt(w and w["p99_ms"], 2),
                     fmt(e and e["p50_ms"], 2), fmt(w and w["p50_ms"], 2)),
                 "%s ms" % fmt(added, 2),
                 None if added is None else added <= 1.0
                 and all(nerr(a) == 0 for a, _ in pairs)))
    p5 = g("P5", "embedrt")
    if p5:
        answered = p5["ok"] + nerr(p5)
        thr = (p5["threads_start"], p5["threads_peak"], p5["threads_end"])
        checks = [
            ("every caller answered", "all ok",
             "%s of %s ok, %d errors" % (fmt(p5["ok"]), fmt(p5["requests"]), nerr(p5)),
             p5["ok"] == p5["requests"] and answered == p5["requests"]),
            ("threads constant (start / peak / end)", "start = peak = end",
             "%d / %d / %d" % thr,
             len(set(thr)) == 1),
            ("max RSS", "≤ 200 MB", "%s MB" % fmt(p5["max_rss_mb"], 1),
             p5["max_rss_mb"] <= 200),
            ("reuse (runtime counters)", "≥ 99 %", fmt((p5.get("reuse") or 0) * 100, 2) + " %",
             (p5.get("reuse") or 0) >= 0.99),
            ("reuse seen by nginx ($connection_requests)",
             "≥ 99 %, and no connection opened beyond the 16",
             "%s requests on %s new connections: %s %% (%s %% not counting "
             "the 16 first opens)" % (
                 fmt(p5.get("nginx_requests")), fmt(p5.get("nginx_new_connections")),
                 fmt((p5.get("nginx_reuse") or 0) * 100, 2),
                 fmt(nginx_reuse_after_open(p5) * 100, 2)),
             nginx_reuse_after_open(p5) >= 0.99
             and (p5.get("nginx_new_connections") or 0) <= p5["conns"]),
        ]
        for what, tgt, measured, ok in checks:
            rows.append(("P5", "10,000 callers, 16 conns, 50 ms upstream: " + what,
                         tgt, measured, "–", ok))
    else:
        rows.append(("P5", "10,000 callers, 16 conns", "all answered, …",
                     "run failed", "–", False))
    return rows + feature_rows(results)


def feature_rows(results):
    """The F checks of `results`: one per shape and feature, judged by
    `feature_verdict`."""
    rows = []
    for c in feature_costs(results):
        what = "%s on vs all off; %s" % (FEATURE_NAMES[c["feature"]], c["desc"])
        if not (c["runs"] or c["off"] or c["failed_runs"]):
            continue  # a shape the results predate
        if not c["req"] or c["failed_runs"]:
            rows.append(("F", what, "cost ≤ 5 % (req/s and CPU per request)",
                         "%d of its runs or of the all-off runs failed" % c["failed_runs"], "–", False))
            continue
        rq, cp = median(c["req"]), median(c["cpu"])
        rci, cci = median_ci(c["req"]), median_ci(c["cpu"])
        rows.append(("F", what, "cost ≤ 5 % (req/s and CPU per request)",
                     "req/s %s (%s; rounds %s … %s), CPU per request %s (%s); "
                     "%d errors" % (
                         pct(rq), ci_text(rci), pct(min(c["req"])),
                         pct(max(c["req"])), pct(cp), ci_text(cci), c["errors"]),
                     "–", feature_verdict(rci, cci, c["errors"] == 0
                                          and c["off_errors"] == 0)))
    return rows


def median_ci(xs, conf=0.95):
    """A distribution-free confidence interval for the median of xs: the
    order statistics x_(k) and x_(n-k+1) (1-based) for the largest k whose
    coverage, 1 - 2 P(Binomial(n, 1/2) < k), is at least conf. Returns
    (low, high, coverage), or None when no k reaches conf (fewer than 6
    values). With the matrix's 9 rounds: the 2nd and 8th smallest, 96.1 %."""
    n, best = len(xs), None
    ys = sorted(xs)
    for k in range(1, n // 2 + 1):
        tail = sum(math.comb(n, i) for i in range(k)) / 2 ** n
        if 1 - 2 * tail >= conf:
            best = (ys[k - 1], ys[n - k], 1 - 2 * tail)
    return best


def ci_text(ci):
    if ci is None:
        return "too few rounds for a 95 % interval"
    return "%.0f %% CI %s … %s" % (ci[2] * 100, pct(ci[0]), pct(ci[1]))


def feature_verdict(req_ci, cpu_ci, no_errors):
    """An F check passes when the whole confidence interval of the median of
    the per-round ratios lies within 5 % (req/s not below -5 %, CPU per
    request not above +5 %), fails when the interval lies wholly beyond it
    on either (or a run had errors), and is inconclusive otherwise: the
    rounds spread too widely to tell (docs/benchmarks.md, "How F is
    judged")."""
    if not no_errors:
        return False
    if req_ci is None or cpu_ci is None:
        return INCONCLUSIVE
    if req_ci[0] >= -0.05 and cpu_ci[1] <= 0.05:
        return True
    if req_ci[1] < -0.05 or cpu_ci[0] > 0.05:
        return False
    return INCONCLUSIVE


def median(xs):
    """statistics.median, None for no values."""
    return statistics.median(xs) if xs else None


def feature_costs(results):
    """Per shape and feature: the per-round ratios to its all-off pair of the
    same round (req/s, CPU per request), their medians and ranges, and the
    errors of the feature's runs. (Results written before the features had
    pairs have one all-off run per round, the baseline of all three.)"""
    out = []
    for shape, _, _, _, _, _, desc in FEATURE_SHAPES:
        failed = [(r.get("feature"), r.get("pair")) for r in results
                  if r["scenario"] == shape and r.get("failed")]
        by = {(r.get("feature"), r.get("round"), r.get("pair")): r for r in results
              if r["scenario"] == shape and not r.get("failed")}
        rounds = sorted(set(k[1] for k in by))
        for feat, _ in FEATURES[1:]:
            pair = feat if any(k[2] == feat for k in by) else None
            req, cpu, errs, runs = [], [], 0, []
            for k in rounds:
                a, b = by.get((feat, k, None)), by.get(("off", k, pair))
                if a:
                    errs += nerr(a)
                    runs.append(a)
                if a and b and b["req_per_s"] and b["cpu_ms_per_1k"]:
                    req.append(a["req_per_s"] / b["req_per_s"] - 1)
                    cpu.append(a["cpu_ms_per_1k"] / b["cpu_ms_per_1k"] - 1)
            off = [by[("off", k, pair)] for k in rounds if ("off", k, pair) in by]
            out.append({"shape": shape, "desc": desc, "feature": feat,
                        "req": req, "cpu": cpu, "errors": errs, "runs": runs,
                        # Its own failed runs and those of its baseline.
                        "failed_runs": sum(1 for f in failed
                                           if f in ((feat, None), ("off", pair))),
                        "off": off, "off_errors": sum(nerr(r) for r in off)})
    return out


def pct(x):
    return "–" if x is None else "%+.1f %%" % (x * 100)


def nginx_reuse_after_open(r):
    """Upstream-side reuse not counting the pool's first M connection opens
    (a pool of M connections must open M once; every further open is a
    reconnect)."""
    n, new = r.get("nginx_requests") or 0, r.get("nginx_new_connections") or 0
    return (n - max(0, new - r["conns"])) / n if n else 0.0


def rss_text(r):
    anon = r.get("max_rss_anon_mb")
    return fmt(r["max_rss_mb"], 1) + ("" if anon is None else " (%s)" % fmt(anon, 1))


def run_table(rs):
    head = ("| contestant | upstream | callers | conns | requests | req/s | texts/s "
            "| p50 ms | p95 ms | p99 ms | p99.9 ms | CPU ms / 1k req | max RSS MB (anon) "
            "| threads start/peak/end | errors | reuse (client) | nginx: requests / new conns |")
    out = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:"
                 "|---|---:|---:|---:|"]
    for r in rs:
        if r.get("failed"):
            out.append("| %s | %s | %d | %d | run failed | | | | | | | | | | | | |"
                       % (NAMES[r["contestant"]], r["upstream"], r["callers"], r["conns"]))
            continue
        thr = "%s/%s/%s" % (r["threads_start"], r["threads_peak"], r["threads_end"])
        reuse = r.get("reuse")
        out.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            NAMES[r["contestant"]], r["upstream"], fmt(r["callers"]), r["conns"],
            fmt(r["ok"] + nerr(r)), fmt(r["req_per_s"], 0), fmt(r["texts_per_s"], 0),
            fmt(r["p50_ms"], 2), fmt(r["p95_ms"], 2), fmt(r["p99_ms"], 2),
            fmt(r["p999_ms"], 2), fmt(r["cpu_ms_per_1k"], 1), rss_text(r),
            thr, nerr(r) or 0,
            "–" if reuse is None else fmt(reuse * 100, 2) + " %",
            "–" if r.get("nginx_requests") is None else "%s / %s" % (
                fmt(r["nginx_requests"]), fmt(r["nginx_new_connections"]))))
    return "\n".join(out)


def plots(results, outdir):
    """Renders the PNGs with gnuplot; returns their file names."""
    os.makedirs(outdir, exist_ok=True)
    tmp = tempfile.mkdtemp()
    names = []
    order = ["wrk", "embedrt", "embedrt-nb", "aiohttp", "httpx"]
    # 1. throughput vs concurrency
    files = []
    for who in order:
        pts = []
        for c in SWEEP:
            r = find(results, "sweep", who, "nginx", c)
            if r is None and who == "wrk":
                r = find(results, "sweep", who, "nginx", min(c, SWEEP_CONNS))
            if r:
                pts.append((c, r["req_per_s"], r["p50_ms"], r["p99_ms"]))
        path = os.path.join(tmp, who + ".dat")
        with open(path, "w") as f:
            for p in pts:
                f.write("%d %f %f %f\n" % p)
        files.append((who, path))
    plot = ", ".join("'%s' using 1:2 with linespoints lw 2 pt 7 title '%s'"
                     % (p, NAMES[w]) for w, p in files)
    gp = """set terminal pngcairo size 900,560 font 'DejaVu Sans,10'
set output '%s'
set title 'Throughput vs concurrency (zero-latency nginx+njs, min(C, 8) connections, 1 text, 8 dims)'
set logscale xy
set xlabel 'concurrent callers C'
set ylabel 'requests / s (log)'
set xtics (1, 5, 64, 1000)
set grid
set key outside right
plot %s
""" % (os.path.join(outdir, "throughput.png"), plot)
    gnuplot(gp)
    names.append("throughput.png")
    # 2. latency percentiles and 3. CPU / RSS at C=64 (the P2 point)
    with open(os.path.join(tmp, "c64.dat"), "w") as f:
        for who in order:
            r = find(results, "sweep", who, "nginx", 64) or (
                find(results, "sweep", who, "nginx", 8) if who == "wrk" else None)
            if r:
                f.write('"%s" %f %f %f %f %f %f\n' % (
                    NAMES[who].replace(" + Semaphore + breaker", ""),
                    r["p50_ms"], r["p95_ms"], r["p99_ms"], r["p999_ms"],
                    r["cpu_ms_per_1k"], r["max_rss_mb"]))
    c64 = os.path.join(tmp, "c64.dat")
    gp = """set terminal pngcairo size 900,520 font 'DejaVu Sans,10'
set output '%s'
set title "Latency percentiles, 64 callers, 8 connections, zero-latency nginx+njs\\n(wrk: its 8 connections are its callers)"
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set logscale y
set ylabel 'ms (log)'
set xtics rotate by -15
set grid ytics
set key top left
plot '%s' using 2:xtic(1) title 'p50', '' using 3 title 'p95', '' using 4 title 'p99', '' using 5 title 'p99.9'
""" % (os.path.join(outdir, "latency.png"), c64)
    gnuplot(gp)
    names.append("latency.png")
    gp = """set terminal pngcairo size 900,520 font 'DejaVu Sans,10'
set output '%s'
set multiplot layout 1,2 title "Cost per request and memory, 64 callers (wrk: 8), 8 connections, zero-latency nginx+njs"
set style data histogram
set style fill solid 0.8 border -1
set xtics rotate by -30
set grid ytics
set logscale y
set key off
set title 'CPU ms per 1000 requests (log)'
plot '%s' using 6:xtic(1) lc rgb '#4477aa'
unset logscale y
set yrange [0:*]
set title 'max RSS, MB'
plot '%s' using 7:xtic(1) lc rgb '#cc6677'
unset multiplot
""" % (os.path.join(outdir, "cpu_rss.png"), c64, c64)
    gnuplot(gp)
    names.append("cpu_rss.png")
    return names


def gnuplot(script):
    subprocess.run(["gnuplot"], input=script, text=True, check=True)


def exact_percentiles(results):
    """embedrt bench prints two sets of percentiles: its metrics' histogram
    (p50_ms ... p999_ms: the upper bound of a bucket up to 12.5 % wide, 4.2 ms
    at 50 ms) and the exact ones (exact_p50_ms ...). The peers' are exact
    (wrk: to the microsecond; the Python peers: nearest rank of every sample),
    so every comparison here uses embedrt's exact ones; the histogram's stay
    in the results as hist_p50_ms ...."""
    for r in results:
        if "exact_p99_ms" in r and "hist_p99_ms" not in r:
            for k in ("p50", "p95", "p99", "p999"):
                r["hist_%s_ms" % k] = r["%s_ms" % k]
                r["%s_ms" % k] = r["exact_%s_ms" % k]
    return results


def report(results, meta, doc, plotdir, results_path):
    rows = targets(results)
    pngs = plots(results, plotdir)
    rel = os.path.relpath(plotdir, os.path.dirname(doc))
    L = []
    L.append("## Side-by-side matrix: P1–P5 and F (see [Targets](#targets))")
    L.append("")
    L.append("Generated by `%s` on %s (%.0f s for the runs). Every row below "
             "comes from this one run; compare ratios, not absolute numbers "
             "across runs." % (meta["command"], meta["date"], meta["runs_s"]))
    L.append("")
    L.append("Machine: %s; load average %s before the runs, %s after (other "
             "jobs on the machine share its cores and perturb the figures)."
             % (meta["machine"], meta["load_before"], meta["load_after"]))
    L.append("Versions: %s." % meta["versions"])
    L.append("")
    L.append("### Against the targets")
    L.append("")
    L.append("| # | scenario | target | measured | ratio / value | result |")
    L.append("|---|---|---|---|---:|---|")
    for pid, what, tgt, meas, rat, ok in rows:
        L.append("| %s | %s | %s | %s | %s | %s |" % (pid, what, tgt, meas, rat, verdict(ok)))
    L.append("")
    failed = [r for r in rows if missed(r[5])]
    unsure = [r for r in rows if r[5] == INCONCLUSIVE]
    L.append("%d of %d checks pass%s%s." % (
        sum(1 for r in rows if passed(r[5])), len(rows),
        "" if not failed else "; missed: " + ", ".join(
            sorted(set(r[0] for r in failed))) + " (docs/profile.md analyses the "
        "gaps of P1–P5; the sections on the cache and on pacing in this document "
        "those of F)",
        "" if not unsure else "; %d inconclusive (F: the rounds' 95 %% "
        "interval holds both sides of 5 %%: [How F is judged](#how-f-is-judged))"
        % len(unsure)))
    L.append("")
    L.append("### Throughput vs concurrency (zero latency; P1, P2)")
    L.append("")
    L.append("nginx+njs answering at once, callers C ∈ {1, 5, 64, 1000} on "
             "min(C, 8) connections, 1 text of 40 bytes per request, 8 "
             "dimensions, base64 vectors. wrk's callers are its connections, "
             "so its C ≥ 8 rows are one 8-connection run.")
    L.append("")
    sweep = [r for r in results if r["scenario"] == "sweep"]
    sweep.sort(key=lambda r: (["wrk", "embedrt", "embedrt-nb", "aiohttp", "httpx"]
                              .index(r["contestant"]), r["callers"]))
    L.append(run_table(sweep))
    L.append("")
    L.append("![throughput vs concurrency](%s/%s)" % (rel, pngs[0]))
    L.append("")
    L.append("![latency percentiles](%s/%s)" % (rel, pngs[1]))
    L.append("")
    L.append("![CPU and RSS](%s/%s)" % (rel, pngs[2]))
    L.append("")
    L.append("### P1 (8 callers, 8 connections, batching off) on both upstreams")
    L.append("")
    p1 = [r for r in results if r["scenario"] == "P1"]
    w8 = find(results, "sweep", "wrk", "nginx", 8)
    L.append(run_table(([w8] if w8 else []) + p1))
    L.append("")
    for sc, title in (("P3", "P3: 50 ms upstream, 16 connections, 1000 single-text callers"),
                      ("P4", "P4: 50 ms upstream, 64 callers, 64 connections"),
                      ("P5", "P5: 10,000 callers, 16 connections, 50 ms upstream")):
        L.append("### " + title)
        L.append("")
        L.append(run_table([r for r in results if r["scenario"] == sc]))
        L.append("")
    costs = feature_costs(results)
    if any(c["req"] for c in costs):
        L.append("### Optional features on: the cache (misses only), pacing, adaptive concurrency")
        L.append("")
        paired = any(r.get("pair") for r in results)
        how = ("In every round each feature runs back to back with an all-off run of "
               "its own, which of the two first alternating (so that the two share the "
               "machine's state: variants seconds apart differ by more than 5 % on this "
               "shared machine), and the features' order rotates from round to round"
               if paired else
               "The variants are interleaved within each round (their order rotating "
               "from one round to the next)")
        long_texts = ""
        if any(r["scenario"] == "F-384" for r in results):
            extra = next(x[5] for x in FEATURE_SHAPES if x[0] == "F-384")
            warmup = int(extra[extra.index("--warmup") + 1])
            long_texts = (" In the shape of 1,000-byte texts of 384 dimensions (about "
                          "6,400 entries; batching off, so that every request is one "
                          "upstream call on both sides), {:,} unmeasured requests "
                          "fill it before the measured ones.".format(warmup))
        L.append("Each feature alone against all three off (`--no-pacing`; pacing is "
                 "on by default), %d rounds per shape. %s; the cost is the "
                 "median of the per-round ratios (feature_i / its off_i − 1). A check "
                 "passes when the distribution-free 95 %% interval of that median "
                 "(with 9 rounds the 2nd and 8th smallest ratio: 96.1 %%) lies within "
                 "5 %% in both req/s and CPU, fails when it lies wholly beyond 5 %% in "
                 "either, and is inconclusive otherwise ([How F is judged]"
                 "(#how-f-is-judged)). Every "
                 "text is new, so the cache never hits (its cost is all there is to "
                 "it). Its bound, `--cache-max-bytes "
                 "16777216` (about 60,000 entries of 8 dimensions, 2,600 of 1,536), "
                 "fills in the first fifth of a run in P2's shape and in the first "
                 "tenth at 1,536 dimensions, and then evicts, as a long-running cache "
                 "does; a run in P3's shape (25,000 inputs, about 7 MB) ends with the "
                 "cache still growing, so its figure includes the kernel zeroing the "
                 "store's fresh pages.%s The upstreams send no "
                 "rate-limit headers, so pacing never holds a call."
                 % (max(len(c["req"]) for c in costs), how, long_texts))
        L.append("")
        L.append("| shape | feature | req/s: feature vs off, median (rounds) | CPU per request "
                 "vs off, median (rounds) | req/s median (off) | CPU µs / request, median "
                 "(off: median, range) | errors |")
        L.append("|---|---|---|---|---:|---:|---:|")
        for c in costs:
            if not c["runs"]:
                continue
            off_cpu = [r["cpu_ms_per_1k"] for r in c["off"]]
            L.append("| %s | %s | %s (%s) | %s (%s) | %s (%s) | %s (%s, %s–%s) | %d |" % (
                c["desc"], FEATURE_NAMES[c["feature"]], pct(median(c["req"])),
                " ".join("%+.1f" % (x * 100) for x in c["req"]), pct(median(c["cpu"])),
                " ".join("%+.1f" % (x * 100) for x in c["cpu"]),
                fmt(median([r["req_per_s"] for r in c["runs"]]), 0),
                fmt(median([r["req_per_s"] for r in c["off"]]), 0),
                fmt(median([r["cpu_ms_per_1k"] for r in c["runs"]]), 1),
                fmt(median(off_cpu), 1), fmt(min(off_cpu), 1), fmt(max(off_cpu), 1),
                c["errors"]))
        L.append("")
    L.append("### Method")
    L.append("")
    L.append(
        "- Upstream A is nginx with njs (`scripts/bench/nginx-njs.conf.in`, "
        "`embeddings.js`; one worker per core): it parses every request and "
        "computes one normalised vector per input; `/lat50/v1` answers after a "
        "50 ms njs `setTimeout`. Its access log records `$connection_requests`; "
        "\"nginx: requests / new conns\" counts the log lines of the run "
        "(warm-up included) and those with `$connection_requests` = 1 (a new "
        "connection); a pool of M connections opens M once. Upstream "
        "B is `embedrt mock --threads %d`." % meta["cores"])
    L.append(
        "- Every contestant sends the same texts (`bench text R-I` + filler, "
        "40 bytes; wrk one fixed text of that length), asks for 8 dimensions "
        "as base64 (embedrt's wire default) and, except wrk, decodes the "
        "vectors and checks their count and length. Closed loop: C callers, "
        "each sending its next request when the previous was answered; a "
        "warm-up of 2 × connections requests first (not measured).")
    e = next((r for r in results if r["contestant"].startswith("embedrt")
              and not r.get("failed")), {})
    if e.get("io_threads") == 0:
        threads = ("%s CAF worker(s) that also run the sockets (`%s` scheduler, "
                   "no I/O thread: the defaults)" % (e.get("workers"), e.get("scheduler")))
    else:
        threads = ("%s CAF worker(s), %s I/O thread(s), `%s` scheduler" % (
            e.get("workers"), e.get("io_threads"), e.get("scheduler")))
    L.append(
        "- `embedrt bench`: %s. httpx: `httpx.AsyncClient(limits=httpx.Limits("
        "max_connections=C, max_keepalive_connections=C))`, `asyncio.Semaphore(C)` "
        "around each call, a consecutive-failure circuit breaker "
        "(`peer_httpx.py`). aiohttp: `TCPConnector(limit=C)` (`peer_aiohttp.py`). "
        "wrk: `peer_wrk.py` (Lua POST body, %d s per run). The Python peers run on "
        "Debian's `/usr/bin/python3` with the default asyncio loop." % (
            threads, meta["duration"]))
    L.append(
        "- CPU is each client's own user + system time over its measured "
        "phase (`getrusage`; wrk: its whole run), per 1000 answered requests; "
        "max RSS is the process's peak `VmHWM` (sampled every 20 ms by the "
        "harness for embedrt; not `ru_maxrss`, which Linux carries over from "
        "the parent across fork and exec), in brackets the peak anonymous "
        "(private) part, the rest being file-backed pages of the executable "
        "and shared libraries. Client and upstream share the same cores, so "
        "a client that burns CPU also slows the upstream it measures.")
    L.append(
        "- P1's ratio uses embedrt with batching off and 8 callers on 8 "
        "connections: exactly wrk's load (8 requests in flight, one upstream "
        "request per caller request). P2 uses embedrt's defaults (batching "
        "on) against the peers with the same 64 callers and 8 connections. "
        "P4's added latency is embedrt's p99 minus wrk's p99 against the same "
        "50 ms endpoint with the same 64 connections (wrk's p99 is the "
        "upstream's own latency as the cheapest client sees it). Every "
        "percentile in these tables is exact, embedrt's too (`embedrt bench`'s "
        "`exact_p99_ms`: before 2026-12-06 it was the upper bound of its "
        "metrics histogram's bucket, up to 4.2 ms above the true value at "
        "50 ms). P3's wrk row "
        "(16 connections on the 50 ms endpoint) is the upstream's real "
        "ceiling for the no-batching run: on a loaded machine nginx's 50 ms "
        "timers fire late and even wrk stays below 320 req/s.")
    L.append("- Raw results of this run (one JSON line per run, with the exact "
             "command of each): `%s`." % os.path.relpath(
                 results_path, os.path.dirname(os.path.dirname(os.path.abspath(doc)))))
    section = "\n".join(L)
    text = open(doc).read() if os.path.exists(doc) else "# Benchmarks\n"
    block = BEGIN + "\n" + section + "\n" + END
    if BEGIN in text and END in text:
        pre = text[:text.index(BEGIN)]
        post = text[text.index(END) + len(END):]
        text = pre + block + post
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    with open(doc, "w") as f:
        f.write(text)


def machine():
    model = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) / 1024 / 1024
    return "%d cores (nproc), %s, %.0f GB RAM, Linux %s" % (
        os.cpu_count(), model, mem, platform.release())


def versions(binary):
    def first(cmd):
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (p.stdout + p.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"
    import httpx  # noqa: E402 - only for the version
    import aiohttp  # noqa: E402
    return ", ".join([
        first([binary, "--version"]), first(["nginx", "-v"]),
        "njs " + first(["dpkg-query", "-W", "-f=${Version}", "libnginx-mod-http-js"]),
        first(["wrk", "-v"]).split(" [")[0],
        "Python " + platform.python_version(), "httpx " + httpx.__version__,
        "aiohttp " + aiohttp.__version__])


def run_matrix(a, body):
    """Runs `body(matrix)` with the nginx + njs upstream up; returns the
    matrix (its results) and the seconds the runs took."""
    tmp = tempfile.mkdtemp(prefix="embedrt-matrix-")
    m = Matrix(a, tmp)
    t0 = time.time()
    m.nginx = Nginx(os.cpu_count() or 1, tmp)
    try:
        body(m)
    finally:
        m.nginx.stop()
    return m, time.time() - t0


def features_only(a):
    """Only the F shapes, with more rounds than the matrix gives them (its
    9 rounds cannot settle most F checks on a shared machine: "How F is
    judged"); prints the checks as the matrix's table rows."""
    shapes = [x for x in a.shapes.split(",") if x]
    unknown = set(shapes) - set(x[0] for x in FEATURE_SHAPES)
    if unknown:
        raise SystemExit("matrix: no F shape %s" % ", ".join(sorted(unknown)))
    # One file per run (UTC start time in its name): a later run must not
    # overwrite the results an earlier section of the document cites.
    a.results = a.results or os.path.join(
        a.plots, "features-results-%s.jsonl"
        % datetime.datetime.utcnow().strftime("%Y-%m-%d-%H%M"))
    os.makedirs(os.path.dirname(os.path.abspath(a.results)), exist_ok=True)
    open(a.results, "w").close()
    load_before = loadavg()
    m, runs_s = run_matrix(a, lambda m: m.features(
        m.nginx.base + "/v1", m.nginx.base + "/lat%d/v1" % LATENCY_MS,
        rounds=a.features_only, shapes=shapes))
    print("F checks, %d rounds per shape, %s UTC, %.0f s; load average %s "
          "before, %s after; results in %s" % (
              a.features_only,
              datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M"),
              runs_s, load_before, loadavg(), a.results))
    print()
    print_feature_rows(m.results)


def print_feature_rows(results):
    print("| # | scenario | target | measured | ratio / value | result |")
    print("|---|---|---|---|---:|---|")
    for pid, what, tgt, meas, rat, ok in feature_rows(results):
        print("| %s | %s | %s | %s | %s | %s |" % (pid, what, tgt, meas, rat,
                                                  verdict(ok)))


def pooled_feature_results(paths):
    """The F runs of several results files as one set of rounds: each file's
    rounds are renumbered after the previous file's, so that a feature's run
    stays paired with the all-off run of its own round and file."""
    pooled, offset = [], 0
    for path in paths:
        with open(path) as f:
            runs = [json.loads(l) for l in f if l.strip()]
        rounds = [r["round"] for r in runs if r.get("round") is not None]
        for r in runs:
            if r.get("round") is not None:
                r = dict(r, round=r["round"] + offset)
            pooled.append(r)
        offset += max(rounds) + 1 if rounds else 0
    return pooled


def judge_features(paths):
    """Prints the F checks of the rounds of `paths` pooled (e.g. two F-only
    runs of the same build: more rounds, a narrower interval)."""
    results = pooled_feature_results(paths)
    print("F checks of %s pooled" % ", ".join(paths))
    print()
    print_feature_rows(results)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--embedrt", help="the embedrt executable (required "
                   "unless --judge-features)")
    p.add_argument("--doc", default=os.path.join(ROOT, "docs", "benchmarks.md"))
    p.add_argument("--plots", default=os.path.join(ROOT, "docs", "bench"))
    p.add_argument("--results", default=None,
                   help="JSON lines of the runs (default: <plots>/matrix-results.jsonl)")
    p.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiplies every request count (smoke test: 0.05)")
    p.add_argument("--report-only", action="store_true",
                   help="regenerate the doc and plots from --results")
    p.add_argument("--command", default="bash scripts/bench/matrix.sh",
                   help="the command named in the doc")
    p.add_argument("--features-only", type=int, metavar="ROUNDS", default=0,
                   help="run only the F shapes, with ROUNDS rounds, and print "
                   "their checks (the doc is not touched; results go to "
                   "<plots>/features-results-DATE-HHMM.jsonl, UTC, unless --results)")
    p.add_argument("--shapes", default="",
                   help="with --features-only: the F shapes to run, "
                   "comma-separated (default: all of them)")
    p.add_argument("--judge-features", default="", metavar="FILES",
                   help="run nothing: print the F checks of these results "
                   "files (comma-separated), their rounds pooled")
    a = p.parse_args()
    if a.judge_features:
        judge_features([x for x in a.judge_features.split(",") if x])
        return
    if not a.embedrt:
        p.error("--embedrt is required")
    a.embedrt = os.path.abspath(a.embedrt)
    if a.features_only:
        features_only(a)
        return
    a.results = a.results or os.path.join(a.plots, "matrix-results.jsonl")
    os.makedirs(os.path.dirname(os.path.abspath(a.results)), exist_ok=True)
    meta_path = a.results + ".meta.json"
    if a.report_only:
        results = [json.loads(l) for l in open(a.results)]
        meta = json.load(open(meta_path))
    else:
        open(a.results, "w").close()
        meta = {"command": a.command, "machine": machine(),
                "versions": versions(a.embedrt), "cores": os.cpu_count(),
                "duration": a.duration, "results": os.path.abspath(a.results),
                "date": datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC"),
                "load_before": loadavg()}
        m, meta["runs_s"] = run_matrix(a, Matrix.all)
        meta["load_after"] = loadavg()
        with open(meta_path, "w") as f:
            json.dump(meta, f)
        results = m.results
    report(exact_percentiles([dict(r) for r in results]), meta, a.doc,
           a.plots, os.path.abspath(a.results))
    log("wrote %s and %s" % (a.doc, a.plots))


if __name__ == "__main__":
    main()
