#!/usr/bin/python3
"""The usual Python design as a benchmark peer: one httpx.AsyncClient
with httpx.Limits(max_connections=C, max_keepalive_connections=C), an
asyncio.Semaphore(C) around every call and a simple consecutive-failure
circuit breaker. Drives the same closed loop and prints the same JSON line as
`embedrt bench` (see peer_common.py). Needs Debian's python3-httpx; run with
/usr/bin/python3.

  /usr/bin/python3 scripts/bench/peer_httpx.py --upstream http://127.0.0.1:PORT/v1 \
      --requests 5000 --concurrency 64 --connections 8
"""

import asyncio
import json
import time

import httpx

import peer_common


class BreakerOpen(Exception):
    pass


class UpstreamStatus(Exception):
    pass


class CircuitBreaker:
    """Opens after `threshold` consecutive failures; after `reset_s` lets one
    probe through (half-open); its success closes it, its failure re-opens."""

    def __init__(self, threshold=5, reset_s=5.0):
        self.threshold = threshold
        self.reset_s = reset_s
        self.failures = 0
        self.opened_at = None
        self.probing = False

    def allow(self):
        if self.opened_at is None:
            return True
        if self.probing or time.monotonic() - self.opened_at < self.reset_s:
            return False
        self.probing = True
        return True

    def success(self):
        self.failures = 0
        self.opened_at = None
        self.probing = False

    def failure(self):
        self.failures += 1
        self.probing = False
        if self.opened_at is not None or self.failures >= self.threshold:
            self.opened_at = time.monotonic()


class CountingBackend:
    """Wraps httpcore's network backend to count new TCP connections."""

    def __init__(self, inner, counters):
        self._inner = inner
        self._counters = counters

    async def connect_tcp(self, *args, **kwargs):
        self._counters.connects += 1
        return await self._inner.connect_tcp(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._inner, name)


async def main():
    args = peer_common.parse_args(__doc__.splitlines()[0])
    c = args.connections
    limits = httpx.Limits(max_connections=c, max_keepalive_connections=c)
    timeout = httpx.Timeout(args.deadline_ms / 1000.0)
    url = args.upstream.rstrip("/") + "/embeddings"
    counters = peer_common.Counters()
    sem = asyncio.Semaphore(c)
    breaker = CircuitBreaker()
    headers = {"Content-Type": "application/json"}
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        pool = client._transport._pool  # no public hook for connect counts
        pool._network_backend = CountingBackend(pool._network_backend, counters)

        async def send(number):
            if not breaker.allow():
                raise BreakerOpen()
            body = peer_common.request_body(args, number)
            async with sem:
                counters.attempts += 1
                try:
                    r = await client.post(url, content=body, headers=headers)
                except Exception:
                    breaker.failure()
                    raise
            if r.status_code >= 500 or r.status_code == 429:
                breaker.failure()
                raise UpstreamStatus(r.status_code)
            breaker.success()
            if r.status_code != 200:
                raise UpstreamStatus(r.status_code)
            peer_common.check_response(args, json.loads(r.content))

        await peer_common.measure(args, "httpx", send, counters)


if __name__ == "__main__":
    asyncio.run(main())
