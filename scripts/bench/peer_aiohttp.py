#!/usr/bin/python3
"""aiohttp as a benchmark peer: one ClientSession with a
TCPConnector(limit=C) (the connector's own limit is the only bound). Drives
the same closed loop and prints the same JSON line as `embedrt bench` (see
peer_common.py). Needs Debian's python3-aiohttp; run with /usr/bin/python3.

  /usr/bin/python3 scripts/bench/peer_aiohttp.py --upstream http://127.0.0.1:PORT/v1 \
      --requests 5000 --concurrency 64 --connections 8
"""

import asyncio
import json

import aiohttp

import peer_common


class UpstreamStatus(Exception):
    pass


class CountingConnector(aiohttp.TCPConnector):
    """Counts the connections it opens (aiohttp's trace signals would add
    work to every request; this hook costs nothing per reused connection)."""

    def __init__(self, counters, **kwargs):
        super().__init__(**kwargs)
        self._counters = counters

    async def _create_connection(self, *args, **kwargs):
        self._counters.connects += 1
        return await super()._create_connection(*args, **kwargs)


async def main():
    args = peer_common.parse_args(__doc__.splitlines()[0])
    counters = peer_common.Counters()
    connector = CountingConnector(counters, limit=args.connections)
    timeout = aiohttp.ClientTimeout(total=args.deadline_ms / 1000.0)
    url = args.upstream.rstrip("/") + "/embeddings"
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=timeout) as session:

        async def send(number):
            body = peer_common.request_body(args, number)
            counters.attempts += 1
            async with session.post(url, data=body, headers=headers) as r:
                payload = await r.read()
                if r.status != 200:
                    raise UpstreamStatus(r.status)
            peer_common.check_response(args, json.loads(payload))

        await peer_common.measure(args, "aiohttp", send, counters)


if __name__ == "__main__":
    asyncio.run(main())
