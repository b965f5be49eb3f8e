"""A deterministic OpenAI-compatible server on loopback, for tests and benchmarks.

`python -m dataforge.dummy --port 8000 [--latency-s 0.2] [--faults '{"http_500": 0.05}']`

The completion echoes the start of the last message and the temperature asked for, so tests can
check that every output row got the answer to its own prompt, with its own settings. Token
counts are word counts; the completion length is derived from a hash of the request (1 to
`max_tokens`) unless fixed. Injected faults hit a request the first time it is seen and never
on its retry, so a correct client always recovers; a request containing `--reject-marker`
always gets HTTP 400, and with `--max-model-len` one whose prompt and `max_tokens` do not fit
gets vLLM's HTTP 400. `/v1/completions` answers a `prompt` as a chat with that one user
message; `/tokenize` (of a `prompt` or of `messages`) and `/detokenize` count tokens as the
completions' usage does: one per word, plus 4 per message.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import signal
import time
from typing import Any

from aiohttp import web

FAULT_KINDS = ("http_500", "timeout", "reset", "malformed")


class DummyEngine:
    """Request handling state: options and the set of requests already seen (for faults)."""

    def __init__(
        self,
        latency_s: float = 0.0,
        completion_tokens: int | None = None,
        reject_marker: str | None = None,
        faults: dict[str, float] | None = None,
        max_model_len: int | None = None,
        api_key: str | None = None,
        tokens_per_s: float | None = None,
    ) -> None:
        self.latency_s = latency_s
        self.tokens_per_s = tokens_per_s
        self._free_at = 0.0  # with tokens_per_s: when the simulated GPU is free again
        self.max_model_len = max_model_len
        self.api_key = api_key
        self.completion_tokens = completion_tokens
        self.reject_marker = reject_marker
        self.faults = {k: float((faults or {}).get(k, 0.0)) for k in FAULT_KINDS}
        self.seen: set[str] = set()
        self.vocab: dict[str, int] = {}  # word -> token id, for /tokenize and /detokenize
        self.counts: dict[str, int] = dict.fromkeys(
            ("requests", *FAULT_KINDS, "rejected", "too_long", "unauthorized"), 0
        )

    def _fault_for(self, key: str, digest: bytes) -> str | None:
        """The fault to inject for this request's first attempt, if any."""
        if not any(self.faults.values()) or key in self.seen:
            return None
        self.seen.add(key)
        u = int.from_bytes(digest[8:16], "big") / 2**64
        edge = 0.0
        for kind in FAULT_KINDS:
            edge += self.faults[kind]
            if u < edge:
                return kind
        return None

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """/v1/chat/completions, and /v1/completions (a `prompt` is one user message)."""
        raw = await request.read()
        self.counts["requests"] += 1
        if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            self.counts["unauthorized"] += 1
            return web.json_response({"error": {"message": "invalid API key"}}, status=401)
        chat = request.path.endswith("/chat/completions")
        try:
            body = json.loads(raw)
            if chat:
                messages = body["messages"]
            else:
                messages = [{"role": "user", "content": _prompt_text(body["prompt"])}]
            max_tokens = int(body.get("max_tokens") or 16)
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": {"message": "malformed request"}}, status=400)
        digest = hashlib.sha256(raw).digest()
        text = " ".join(str(m.get("content", "")) for m in messages)
        if self.reject_marker and self.reject_marker in text:
            self.counts["rejected"] += 1
            return web.json_response(
                {"error": {"message": "prompt rejected by the dummy engine", "code": 400}},
                status=400,
            )
        prompt_tokens = message_tokens(messages)
        if self.max_model_len and prompt_tokens + max_tokens > self.max_model_len:
            self.counts["too_long"] += 1
            message = (
                f"This model's maximum context length is {self.max_model_len} tokens. However, "
                f"you requested {prompt_tokens + max_tokens} tokens ({prompt_tokens} in the "
                f"messages, {max_tokens} in the completion)."
            )
            return web.json_response({"error": {"message": message, "code": 400}}, status=400)
        fault = self._fault_for(digest.hex(), digest)
        if fault:
            self.counts[fault] += 1
        if fault == "timeout":
            await asyncio.sleep(3600)
        if fault == "reset":
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if fault == "http_500":
            return web.json_response({"error": {"message": "injected failure"}}, status=500)
        if fault == "malformed":
            return web.Response(body=b'{"choices": [', content_type="application/json")
        answer = self.completion(messages, max_tokens, digest, body.get("temperature"))
        if self.tokens_per_s:  # the simulated GPU answers at most tokens_per_s, all requests
            loop = asyncio.get_running_loop()
            start = max(loop.time(), self._free_at)
            self._free_at = start + answer["usage"]["completion_tokens"] / self.tokens_per_s
            await asyncio.sleep(self._free_at - loop.time())
        if not chat:
            choice = answer["choices"][0]
            answer["object"] = "text_completion"
            answer["choices"] = [
                {
                    "index": 0,
                    "text": choice["message"]["content"],
                    "finish_reason": choice["finish_reason"],
                }
            ]
        return web.json_response(answer)

    async def tokenize(self, request: web.Request) -> web.Response:
        """vLLM's /tokenize of a `prompt` (one token per whitespace-separated word) or of chat
        `messages` (as the completions' usage counts them)."""
        body = await request.json()
        if "messages" in body:
            count = message_tokens(body["messages"])
            tokens = list(range(count))
        elif "prompt" in body:
            words = str(body["prompt"]).split()
            tokens = [self.vocab.setdefault(w, len(self.vocab)) for w in words]
        else:
            return web.json_response({"error": {"message": "prompt is required"}}, status=400)
        return web.json_response(
            {"tokens": tokens, "count": len(tokens), "max_model_len": self.max_model_len or 4096}
        )

    async def detokenize(self, request: web.Request) -> web.Response:
        """vLLM's /detokenize: the words of the ids, joined by spaces."""
        words = {i: w for w, i in self.vocab.items()}
        try:
            text = " ".join(words[int(t)] for t in (await request.json())["tokens"])
        except (KeyError, ValueError, TypeError):
            return web.json_response({"error": {"message": "unknown token id"}}, status=400)
        return web.json_response({"prompt": text})

    def completion(
        self, messages: list[Any], max_tokens: int, digest: bytes, temperature: Any = None
    ) -> dict[str, Any]:
        """The deterministic response body for a request. The text is `Echo:`, the start of the
        last message, `|`, the temperature asked for (`t=0.7`, when one was), then filler."""
        h = int.from_bytes(digest[:8], "big")
        n = self.completion_tokens or 1 + h % max_tokens
        n = min(n, max_tokens)
        last = str(messages[-1].get("content", "")) if messages else ""
        # The echo of the prompt is always there (not counted as tokens); then n filler words.
        words = ["Echo:", *last.split()[:8], "|"]
        if temperature is not None:
            words.append(f"t={temperature}")
        words += [f"w{(h >> (i % 48)) % 97}" for i in range(n)]
        prompt_tokens = message_tokens(messages)
        return {
            "id": f"chatcmpl-{digest[:6].hex()}",
            "object": "chat.completion",
            "model": "dummy",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": " ".join(words)},
                    "finish_reason": "length" if n >= max_tokens else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": n,
                "total_tokens": prompt_tokens + n,
            },
        }


def message_tokens(messages: list[Any]) -> int:
    """The dummy's token count of chat messages: words of each content, plus 4 per message."""
    return sum(len(str(m.get("content", "")).split()) + 4 for m in messages)


def _prompt_text(prompt: Any) -> str:
    """A completions `prompt`: a string, or a list holding one."""
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise TypeError("one prompt per request")
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise TypeError("prompt must be a string")
    return prompt


def make_app(engine: DummyEngine) -> web.Application:
    """The aiohttp application serving `engine`."""
    app = web.Application(client_max_size=64 << 20)

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "dummy", "object": "model"}]})

    async def counts(_: web.Request) -> web.Response:
        return web.json_response(engine.counts)

    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/counts", counts)
    app.router.add_post("/v1/chat/completions", engine.chat)
    app.router.add_post("/v1/completions", engine.chat)
    app.router.add_post("/tokenize", engine.tokenize)
    app.router.add_post("/detokenize", engine.detokenize)
    return app


def record(event: str, **fields: Any) -> None:
    """Append an event of this engine's life to the file `DATAFORGE_DUMMY_RECORD` names, if set:
    a stand-in for a GPU engine, for tests of how engines meet GPUs (which devices it saw, when
    it started, was ready and stopped)."""
    path = os.environ.get("DATAFORGE_DUMMY_RECORD")
    if not path:
        return
    line = {"event": event, "pid": os.getpid(), "time": time.time(),
            "devices": os.environ.get("CUDA_VISIBLE_DEVICES"), **fields}  # fmt: skip
    with open(path, "a", encoding="utf-8") as f:  # one short write: lines never interleave
        f.write(json.dumps(line) + "\n")


async def serve(host: str, port: int, engine: DummyEngine, load_s: float = 0.0) -> None:
    """Serve until SIGTERM or SIGINT; with `load_s`, start listening only after that long (a
    model load)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    record("start", port=port)
    if load_s:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), load_s)
    # Do not wait for requests stuck in an injected timeout when stopping.
    runner = web.AppRunner(make_app(engine), access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    record("ready", port=port)
    print(f"dummy engine listening on http://{host}:{port}", flush=True)
    await stop.wait()
    await runner.cleanup()
    record("stop", port=port, requests=engine.counts["requests"])


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency-s", type=float, default=0.0)
    parser.add_argument("--load-s", type=float, default=0.0, help="seconds before it listens")
    parser.add_argument("--tokens-per-s", type=float, default=None, help="throughput ceiling")
    parser.add_argument("--completion-tokens", type=int, default=None)
    parser.add_argument("--reject-marker", default=None)
    parser.add_argument("--faults", default="{}", help="JSON: fraction per fault kind")
    parser.add_argument("--max-model-len", type=int, default=None, help="context, in tokens")
    parser.add_argument(
        "--api-key-env", default=None, help="require the bearer token in this variable"
    )
    args = parser.parse_args(argv)
    engine = DummyEngine(
        latency_s=args.latency_s,
        completion_tokens=args.completion_tokens,
        reject_marker=args.reject_marker,
        faults=json.loads(args.faults),
        max_model_len=args.max_model_len,
        api_key=os.environ[args.api_key_env] if args.api_key_env else None,
        tokens_per_s=args.tokens_per_s,
    )
    asyncio.run(serve(args.host, args.port, engine, args.load_s))


if __name__ == "__main__":
    main()
