"""A minimal OpenAI-compatible chat server on 127.0.0.1 for the client benchmarks.

    python bench/loopback.py PORT [LATENCY_S]

Every chat request is answered with 16 tokens after LATENCY_S (0: at once). It keeps count of
what it served, for the benchmark to read between runs: `GET /bench/stats` gives the requests
served, the first arrival and last answer (monotonic seconds) and the time-weighted mean number
of requests in flight over that window; `POST /bench/reset` starts the count again.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from aiohttp import web

RESPONSE = json.dumps(
    {
        "id": "x",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "ok " * 16},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 16, "total_tokens": 28},
    }
).encode()


class Counter:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.served = 0
        self.in_flight = 0
        self.peak = 0
        self.first = self.last = None
        self.area = 0.0  # integral of in_flight over time
        self.changed = time.monotonic()

    def change(self, by: int) -> None:
        now = time.monotonic()
        self.area += self.in_flight * (now - self.changed)
        self.changed = now
        self.in_flight += by
        self.peak = max(self.peak, self.in_flight)
        if by > 0 and self.first is None:
            self.first = now
        if by < 0:
            self.served += 1
            self.last = now

    def stats(self) -> dict:
        window = (self.last - self.first) if self.served else 0.0
        return {
            "served": self.served,
            "window_s": window,
            "mean_in_flight": self.area / window if window else 0.0,
            "peak_in_flight": self.peak,
        }


def main(port: int, latency: float) -> None:
    counter = Counter()

    async def chat(request: web.Request) -> web.Response:
        counter.change(+1)
        try:
            await request.read()
            if latency:
                await asyncio.sleep(latency)
            return web.Response(body=RESPONSE, content_type="application/json")
        finally:
            counter.change(-1)

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "bench"}]})

    async def stats(_: web.Request) -> web.Response:
        return web.json_response(counter.stats())

    async def reset(_: web.Request) -> web.Response:
        counter.reset()
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/bench/stats", stats)
    app.router.add_post("/bench/reset", reset)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, backlog=1024)


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 0.0)
