"""Shared by the Python peers of the benchmark matrix (peer_httpx.py,
peer_aiohttp.py): the command line, the closed-loop driver, the request
texts and the one-line JSON report, with the same fields and meaning as
`embedrt bench` (docs/cli.md): C callers, each sending its next request as
soon as the previous one was answered, until N requests were answered; a
warm-up first; CPU seconds from the process's own rusage over the measured
phase; peak RSS; thread counts sampled every 100 ms.

Run with Debian's interpreter (/usr/bin/python3), which has python3-httpx
and python3-aiohttp.
"""

import argparse
import array
import asyncio
import base64
import json
import math
import os
import resource
import sys
import time

FILLER_WORDS = [
    "actor", "message", "vector", "latency", "keep", "alive",
    "pool", "batch", "breaker", "upstream", "deadline", "retry",
    "lexical", "hash", "token", "socket", "thread", "queue",
    "model", "embed", "search", "query", "document", "index",
]
MASK = (1 << 64) - 1


def _splitmix64(state):
    state = (state + 0x9E3779B97F4A7C15) & MASK
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return state, z ^ (z >> 31)


def bench_text(seed, request, index, size):
    """The same text `embedrt bench` sends (app/bench/bench_report.cpp)."""
    text = "bench text %d-%d" % (request, index)
    if len(text) >= size:
        return text
    state = (seed ^ ((request * 0x100000001B3) & MASK) ^ index) & MASK
    parts = [text]
    length = len(text)
    while length < size:
        state, r = _splitmix64(state)
        word = FILLER_WORDS[r % len(FILLER_WORDS)]
        parts.append(" " + word)
        length += 1 + len(word)
    text = "".join(parts)[:size]
    if text.endswith(" "):
        text = text[:-1] + "z"
    return text


def parse_args(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--upstream", required=True,
                   help="base URL, e.g. http://127.0.0.1:8080/v1")
    p.add_argument("--requests", type=int, default=10000)
    p.add_argument("--concurrency", type=int, default=64,
                   help="callers (requests in flight)")
    p.add_argument("--connections", type=int, default=8,
                   help="connection limit C (and semaphore size for httpx)")
    p.add_argument("--inputs", type=int, default=1)
    p.add_argument("--dims", type=int, default=8)
    p.add_argument("--text-bytes", type=int, default=40)
    p.add_argument("--model", default="bench-model")
    p.add_argument("--warmup", type=int, default=None,
                   help="unmeasured requests first (default 2 x connections)")
    p.add_argument("--deadline-ms", type=int, default=30000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--encoding", choices=["base64", "float"], default="base64",
                   help="encoding_format asked of the upstream (embedrt's "
                        "default is base64)")
    a = p.parse_args()
    if min(a.requests, a.concurrency, a.connections, a.inputs) < 1:
        p.error("requests, concurrency, connections and inputs must be >= 1")
    if a.warmup is None:
        a.warmup = 2 * a.connections
    return a


def request_body(args, number):
    texts = [bench_text(args.seed, number, i, args.text_bytes)
             for i in range(args.inputs)]
    body = {"model": args.model, "input": texts, "dimensions": args.dims}
    if args.encoding == "base64":
        body["encoding_format"] = "base64"
    return json.dumps(body, separators=(",", ":")).encode()


class WrongShape(Exception):
    pass


def check_response(args, payload):
    """Decodes the vectors of an embeddings response (as a user would) and
    checks one vector of `dims` values per input."""
    data = payload["data"]
    if len(data) != args.inputs:
        raise WrongShape()
    for item in data:
        emb = item["embedding"]
        if isinstance(emb, str):
            vec = array.array("f", base64.b64decode(emb))
        else:
            vec = [float(x) for x in emb]
        if len(vec) != args.dims:
            raise WrongShape()


def thread_count():
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 0


def peak_rss_mb():
    """Peak RSS of this process (VmHWM). Not ru_maxrss: Linux carries the
    parent's high-water mark across fork and exec into ru_maxrss, so a child
    of a large process would report the parent's size."""
    return hwm_mb("self")


def hwm_mb(pid):
    try:
        with open("/proc/%s/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def cpu_seconds():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def nearest_rank(sorted_ns, p):
    n = len(sorted_ns)
    rank = max(1, min(n, math.ceil(p * n / 100.0 - 1e-9)))
    return sorted_ns[rank - 1]


def summarize(ns, prefix):
    out = {}
    keys = ["p50_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms"]
    if prefix:
        keys = ["p50_ms", "p99_ms"]
    if not ns:
        return {prefix + k: None for k in keys}
    ns = sorted(ns)
    ms = lambda x: x / 1e6
    vals = {"p50_ms": ms(nearest_rank(ns, 50)), "p95_ms": ms(nearest_rank(ns, 95)),
            "p99_ms": ms(nearest_rank(ns, 99)),
            "p999_ms": ms(nearest_rank(ns, 99.9)), "max_ms": ms(ns[-1]),
            "mean_ms": ms(sum(ns) / len(ns))}
    return {prefix + k: vals[k] for k in keys}


class Counters:
    """Connection counters a peer fills from its client's trace hooks."""

    def __init__(self):
        self.connects = 0
        self.attempts = 0


async def run_load(args, first, count, send, counters):
    """Closed loop: `concurrency` callers share the request numbers
    first..first+count-1. `send(number)` performs one request and raises on
    failure (the exception's class name is the error kind)."""
    state = {"next": 0, "ok": 0, "errors": {}, "ok_ns": [], "err_ns": [],
             "peak": thread_count()}

    async def caller():
        while state["next"] < count:
            number = first + state["next"]
            state["next"] += 1
            t0 = time.perf_counter_ns()
            try:
                await send(number)
            except WrongShape:
                kind = "wrong_shape"
            except Exception as e:  # noqa: BLE001 - every failure is counted
                kind = type(e).__name__
            else:
                state["ok"] += 1
                state["ok_ns"].append(time.perf_counter_ns() - t0)
                continue
            state["errors"][kind] = state["errors"].get(kind, 0) + 1
            state["err_ns"].append(time.perf_counter_ns() - t0)

    async def sampler():
        while True:
            await asyncio.sleep(0.1)
            state["peak"] = max(state["peak"], thread_count())

    c0, a0 = counters.connects, counters.attempts
    sampling = asyncio.ensure_future(sampler())
    t0 = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(min(args.concurrency, count))))
    state["seconds"] = time.perf_counter() - t0
    sampling.cancel()
    state["peak"] = max(state["peak"], thread_count())
    state["connects"] = counters.connects - c0
    state["attempts"] = counters.attempts - a0
    return state


async def measure(args, client_name, send, counters, extra=None):
    """Warm-up, measured phase, JSON report on stdout."""
    cpu_process0 = 0.0
    if args.warmup > 0:
        warm = await run_load(args, 0, args.warmup, send, counters)
        if warm["ok"] == 0:
            print("%s: warning: no warm-up request succeeded: %s"
                  % (client_name, warm["errors"]), file=sys.stderr)
    threads_start = thread_count()
    cpu0 = cpu_seconds()
    st = await run_load(args, args.warmup, args.requests, send, counters)
    cpu1 = cpu_seconds()
    threads_end = thread_count()
    answered = st["ok"] + sum(st["errors"].values())
    secs = st["seconds"]
    report = {
        "client": client_name,
        "requests": args.requests, "concurrency": args.concurrency,
        "inputs": args.inputs, "dims": args.dims,
        "connections": args.connections, "batching": False,
        "model": args.model, "warmup": args.warmup,
        "text_bytes": args.text_bytes, "deadline_ms": args.deadline_ms,
        "workers": 1, "seed": args.seed,
        "ok": st["ok"], "errors": st["errors"], "seconds": secs,
        "req_per_s": answered / secs if secs > 0 else None,
        "texts_per_s": st["ok"] * args.inputs / secs if secs > 0 else None,
    }
    report.update(summarize(st["ok_ns"], ""))
    report.update(summarize(st["err_ns"], "error_"))
    attempts = st["attempts"]
    report.update({
        "threads_start": threads_start,
        "threads_peak": max(threads_start, st["peak"], threads_end),
        "threads_end": threads_end,
        "connections_opened": st["connects"],
        "upstream_requests": attempts,
        "reuse": (attempts - st["connects"]) / attempts if attempts else None,
        "restarts": None, "rejected": None,
        "cpu_s": cpu1 - cpu0, "cpu_s_process": cpu1 + cpu_process0,
        "cpu_ms_per_1k": (cpu1 - cpu0) * 1e6 / answered if answered else None,
        "max_rss_mb": peak_rss_mb(),
    })
    if extra:
        report.update(extra())
    print(json.dumps(report, separators=(",", ":")), flush=True)
