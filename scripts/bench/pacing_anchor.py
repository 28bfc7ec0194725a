#!/usr/bin/env python3
"""Pacing against its anchor: OpenAI's cookbook script for parallel requests
(`api_request_parallel_processor.py`) and `embedrt embed`, each embedding the
same corpus through the same rate-limited `embedrt mock` (docs/benchmarks.md,
"Pacing against OpenAI's cookbook script"). Python's standard library; the
script itself needs Debian's python3-aiohttp.

  pacing_anchor.py BIN SCRIPT OUT.jsonl [TEXTS]

BIN is `embedrt`; SCRIPT the cookbook's examples/api_request_parallel_processor.py
(not part of this repository: docs/benchmarks.md names the version measured).
Its `tiktoken` import is served by tiktoken_shim/ (same directory), which counts
tokens exactly as the mock does.

The mock: HTTPS on loopback (the script accepts only https:// URLs), a test CA
made here with `openssl`, 50 ms per response, --tpm 600000 --rpm 10000, a
fresh process (full buckets, as OpenAI's are at the start of a minute) for
every run. The corpus: TEXTS (12,000) distinct texts of exactly 100 tokens,
1.2 M tokens; at the limit, with the first 600,000 tokens free, that takes
60 s. Contestants:

  cookbook-100  the script told the limits (--max_tokens_per_minute 600000,
                --max_requests_per_minute 10000), one text per request as in
                its own example file
  cookbook-75   the same at 75 % of the limits, the headroom its
                documentation advises
  embedrt       `embedrt embed` with its defaults (batches of 64, 16 requests
                in flight, pacing on), told nothing: it learns the limits
                from the responses' x-ratelimit-* headers

Two settings: `alone`, and `shared`, where another client of the same key
spends a quarter of the token limit (one request of 2,500 tokens every
second, no retries) during the whole run. Each run writes one JSON line.
RUNS="shared:embedrt alone:cookbook-75 ..." runs only those.
"""
import http.client
import json
import os
import ssl
import subprocess
import sys
import tempfile
import threading
import time

from pacing import host_port, post, start

TPM = 600000
RPM = 10000
TOKENS = 100
LATENCY_MS = 50
OTHER_TOKENS_PER_S = TPM // 60 // 4
HERE = os.path.dirname(os.path.abspath(__file__))


def word(k):
    """Four lowercase letters (one token by the mock's count)."""
    s = ""
    for _ in range(4):
        s += chr(ord("a") + k % 26)
        k //= 26
    return s


def text(i):
    """The i-th text: 50 words and 49 spaces and a full stop, 100 tokens
    (letters count one token per 4, any other ASCII character one)."""
    return " ".join(word(i * 50 + j) for j in range(50)) + "."


def make_ca(d):
    def run(*args):
        subprocess.run(["openssl", *args], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
          "-nodes"]
    run("req", "-x509", *ec, "-keyout", f"{d}/ca.key", "-out", f"{d}/ca.pem",
        "-days", "2", "-subj", "/CN=embedrt pacing bench CA")
    run("req", *ec, "-keyout", f"{d}/srv.key", "-out", f"{d}/srv.csr",
        "-subj", "/CN=127.0.0.1")
    with open(f"{d}/ext", "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    run("x509", "-req", "-in", f"{d}/srv.csr", "-CA", f"{d}/ca.pem",
        "-CAkey", f"{d}/ca.key", "-CAcreateserial", "-out", f"{d}/srv.pem",
        "-days", "2", "-extfile", f"{d}/ext")


class mock:
    def __init__(self, bin_, d):
        # url: https://127.0.0.1:PORT/v1
        self.proc, self.url = start(
            [bin_, "mock", "--listen", "127.0.0.1:0", "--tls-cert",
             f"{d}/srv.pem", "--tls-key", f"{d}/srv.key", "--tpm", str(TPM),
             "--rpm", str(RPM), "--latency-ms", str(LATENCY_MS),
             "--dims-default", "64"], "mock")
        _, self.port = host_port(self.url)
        self.ctx = ssl.create_default_context(cafile=f"{d}/ca.pem")

    def connect(self):
        return http.client.HTTPSConnection("127.0.0.1", self.port,
                                           context=self.ctx, timeout=60)

    def stats(self):
        c = self.connect()
        c.request("GET", "/stats")
        data = json.loads(c.getresponse().read())
        c.close()
        return data

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=15)


class other_client(threading.Thread):
    """Another user of the same key: OTHER_TOKENS_PER_S tokens in one
    request each second, whatever the answer."""

    def __init__(self, m):
        super().__init__(daemon=True)
        self.m = m
        self.stop_ = threading.Event()
        self.statuses = {}
        self.tokens_ok = 0
        n = OTHER_TOKENS_PER_S // TOKENS
        self.body = json.dumps({"model": "other", "input": [
            text(10_000_000 + i) for i in range(n)]})

    def run(self):
        conn = self.m.connect()
        t0 = time.monotonic()
        k = 0
        while not self.stop_.is_set():
            due = t0 + k
            now = time.monotonic()
            if due > now and self.stop_.wait(due - now):
                break
            k += 1
            conn, status = post(conn, self.m.connect, self.body, {
                "content-type": "application/json",
                "authorization": "Bearer sk-bench"})
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status == 200:
                self.tokens_ok += OTHER_TOKENS_PER_S // TOKENS * TOKENS

    def stop(self):
        self.stop_.set()
        self.join()


def run_child(cmd, env, log, ok_codes=(0,)):
    """Runs cmd to its end; returns (wall seconds, CPU seconds)."""
    t0 = time.monotonic()
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                stderr=err)
        _, status, ru = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    if proc.returncode not in ok_codes:
        with open(log) as f:
            tail = f.readlines()[-20:]
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n"
                         + "".join(tail))
    return wall, ru.ru_utime + ru.ru_stime


def contestant(name, bin_, script, m, d, n):
    env = dict(os.environ, OPENAI_API_KEY="sk-bench")
    for k in ("OPENAI_BASE_URL", "EMBEDRT_CONFIG", "EMBEDRT_CONNECTIONS"):
        env.pop(k, None)
    log = f"{d}/{name}.stderr"
    if name.startswith("cookbook"):
        share = 1.0 if name == "cookbook-100" else 0.75
        out = f"{d}/{name}.results.jsonl"
        if os.path.exists(out):  # the script appends to it
            os.remove(out)
        env["PYTHONPATH"] = os.path.join(HERE, "tiktoken_shim")
        env["SSL_CERT_FILE"] = f"{d}/ca.pem"
        wall, cpu = run_child(
            ["/usr/bin/python3", script, "--requests_filepath",
             f"{d}/requests.jsonl", "--save_filepath", out, "--request_url",
             m.url + "/embeddings", "--max_requests_per_minute",
             str(int(RPM * share)), "--max_tokens_per_minute",
             str(int(TPM * share)), "--logging_level", "30"], env, log)
        ok = failed = 0
        with open(out) as f:
            for line in f:
                rec = json.loads(line)
                if isinstance(rec[1], dict) and "data" in rec[1]:
                    ok += 1
                else:
                    failed += 1
        with open(log) as f:
            pauses = sum("Pausing to cool down" in line for line in f)
        return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                "texts_ok": ok, "texts_failed": failed,
                "cooldown_pauses": pauses}
    out = f"{d}/embed.jsonl"
    rejects = f"{d}/embed.rejects.jsonl"
    if os.path.exists(rejects):
        os.remove(rejects)
    # Exit 3: finished, some records rejected (counted below).
    wall, cpu = run_child(
        [bin_, "embed", "--in", f"{d}/texts.jsonl", "--out", out, "--fresh",
         "--upstream", m.url, "--ca-file", f"{d}/ca.pem", "--model",
         "text-embedding-3-small", "--progress", "never", "--log-level",
         "error"], env, log, ok_codes=(0, 3))
    with open(out) as f:
        ok = sum(1 for _ in f)
    errors = {}
    if os.path.exists(rejects):
        with open(rejects) as f:
            for line in f:
                e = json.loads(line)["error"]
                errors[e] = errors.get(e, 0) + 1
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "texts_ok": ok,
            "texts_failed": n - ok, "rejected": errors}


def one_run(name, setting, bin_, script, d, n):
    m = mock(bin_, d)
    other = None
    try:
        before = m.stats()
        if setting == "shared":
            other = other_client(m)
            other.start()
        r = contestant(name, bin_, script, m, d, n)
    finally:
        if other:
            other.stop()
        after = m.stats()
        m.stop()
    reqs = after["embedding_requests"] - before["embedding_requests"]
    s429 = (after["by_status"].get("429", 0)
            - before["by_status"].get("429", 0))
    tokens = after["tokens"] - before["tokens"]
    o_reqs = sum(other.statuses.values()) if other else 0
    o_429 = other.statuses.get(429, 0) if other else 0
    own_reqs = reqs - o_reqs
    own_429 = s429 - o_429
    # Everything the key took beyond its first (full) bucket, against what
    # refilled during the run: 1.0 = the limit used to the full.
    refill = r["wall_s"] * TPM / 60.0
    r.update({
        "contestant": name, "setting": setting, "texts": n,
        "tokens_per_text": TOKENS, "tpm": TPM, "rpm": RPM,
        "latency_ms": LATENCY_MS,
        # The corpus less the first bucket, at the rate left to it.
        "ideal_wall_s": round((n * TOKENS - TPM)
                              / (TPM / 60.0 * (0.75 if other else 1.0)), 1),
        "upstream_requests": own_reqs, "upstream_429": own_429,
        "upstream_429_share": round(own_429 / own_reqs, 4) if own_reqs else 0,
        "key_tokens_accepted": tokens,
        "key_use_of_refill": round((tokens - TPM) / refill, 3),
    })
    if other:
        r.update({"other_requests": o_reqs, "other_429": o_429,
                  "other_tokens_accepted": other.tokens_ok})
    return r


def main():
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    bin_, script, out = sys.argv[1:4]
    n = int(sys.argv[4]) if len(sys.argv) == 5 else 12000
    if not os.path.isfile(script):
        sys.exit(f"no {script}: see docs/benchmarks.md for the cookbook "
                 "script's version and where to get it")
    with tempfile.TemporaryDirectory() as d:
        make_ca(d)
        with open(f"{d}/requests.jsonl", "w") as f:
            for i in range(n):
                f.write(json.dumps({"model": "text-embedding-3-small",
                                    "input": text(i)}) + "\n")
        with open(f"{d}/texts.jsonl", "w") as f:
            for i in range(n):
                f.write(json.dumps({"id": i, "text": text(i)}) + "\n")
        rows = []
        only = os.environ.get("RUNS", "").split()
        for setting in ("alone", "shared"):
            for name in ("cookbook-100", "cookbook-75", "embedrt"):
                if only and f"{setting}:{name}" not in only:
                    continue
                r = one_run(name, setting, bin_, script, d, n)
                print(json.dumps(r), flush=True)
                rows.append(r)
    with open(out, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
