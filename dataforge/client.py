"""The HTTP client for an OpenAI-compatible engine: bounded concurrency, keep-alive, retries.

Retried: connection errors, timeouts, malformed responses, HTTP 408, 429 and 5xx, with
exponential backoff and jitter (`Retry-After` honoured), at most `max_retries` times, with no
sleep after the last attempt. Any other 4xx is permanent. When the engine process is known to be
dead, or a connection error comes with an engine that answers no HTTP at all (`probe`), requests
fail at once with `EngineDead` instead of retrying into the void and writing every row of the
chunk as failed: the chunk fails, and the rerun generates it.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from dataforge.errors import RETRY_STATUS

BACKOFF_CAP_S = 60.0


@dataclass(slots=True)
class Generation:
    """One completion."""

    text: str
    reasoning: str | None
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "reasoning": self.reasoning,
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }


class RequestFailed(Exception):
    """A request failed for good; `kind` is a short category for the stats."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


class EngineDead(Exception):
    """The engine process is gone: the chunk cannot succeed on this server."""


class _Retryable(Exception):
    def __init__(self, kind: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after


def parse_chat_response(body: bytes) -> Generation:
    """Parse a chat-completions (or, with a `text` choice, a completions) response body.

    Raises:
        ValueError: if it is not valid JSON with at least one choice.
    """
    data = json.loads(body)
    choice = data["choices"][0]
    usage = data.get("usage") or {}
    if "message" not in choice and isinstance(choice.get("text"), str):  # /v1/completions
        message = {"content": choice["text"]}
    else:
        message = choice.get("message") or {}
    return Generation(
        text=message.get("content") or "",
        reasoning=message.get("reasoning") or message.get("reasoning_content"),
        finish_reason=choice.get("finish_reason"),
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
    )


def backoff_delay(attempt: int, base: float, retry_after: float | None) -> float:
    """Seconds to wait before retry number `attempt` (0-based)."""
    delay = min(BACKOFF_CAP_S, base * 2**attempt) * (0.5 + random.random() / 2)
    if retry_after is not None:
        delay = max(delay, min(retry_after, BACKOFF_CAP_S * 5))
    return delay


class EngineClient:
    """Sends chat requests to one engine over a shared keep-alive connection pool."""

    def __init__(
        self,
        base_url: str,
        *,
        max_concurrent: int,
        timeout_s: float,
        max_retries: int,
        api_key: str | None = None,
        backoff_base_s: float = 1.0,
        alive: Callable[[], bool] | None = None,
        probe: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        base = base_url.rstrip("/")
        self.urls = {"chat": base + "/chat/completions", "completions": base + "/completions"}
        self.max_concurrent = max_concurrent
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.alive = alive or (lambda: True)
        self.probe = probe  # after a connection error: does the engine answer at all?
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.semaphore = asyncio.Semaphore(max_concurrent)
        self.counts: Counter[str] = Counter()
        self.in_flight = 0
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> EngineClient:
        connector = aiohttp.TCPConnector(
            limit=self.max_concurrent, ttl_dns_cache=300, keepalive_timeout=60
        )
        self._session = aiohttp.ClientSession(connector=connector, headers=self.headers)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def post_json(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST a small JSON request (no retries) and return the JSON answer.

        Raises:
            RequestFailed: on any HTTP error or connection problem.
        """
        try:
            async with self.semaphore, self._session.post(url, json=body) as resp:
                data = await resp.read()
                if resp.status != 200:
                    text = data[:300].decode("utf-8", "replace")
                    raise RequestFailed(f"http_{resp.status}", f"{url}: {text}")
                return json.loads(data)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise RequestFailed("connection", f"{url}: {type(e).__name__}: {e}") from None

    async def chat(
        self, payload: dict[str, Any], counts: Counter[str] | None = None, kind: str = "chat"
    ) -> Generation:
        """Send one request with retries; raise `RequestFailed` or `EngineDead` on failure.

        `kind` is "chat" (/chat/completions) or "completions" (/completions). Attempts and
        retries are counted in `self.counts` and, if given, in `counts` (the caller's own
        tally, e.g. per chunk).
        """
        body = json.dumps(payload, ensure_ascii=False).encode()
        tallies = (self.counts,) if counts is None else (self.counts, counts)
        async with self.semaphore:
            self.in_flight += 1
            try:
                return await self._chat_with_retries(self.urls[kind], body, tallies)
            finally:
                self.in_flight -= 1

    async def _chat_with_retries(
        self, url: str, body: bytes, tallies: tuple[Counter[str], ...]
    ) -> Generation:
        assert self._session is not None, "use EngineClient as an async context manager"
        for attempt in range(self.max_retries + 1):
            for t in tallies:
                t["requests"] += 1
            try:
                return await self._attempt(url, body)
            except _Retryable as e:
                if not self.alive():
                    raise EngineDead(f"engine is gone ({e.kind}: {e})") from None
                if e.kind == "connection" and self.probe is not None and not await self.probe():
                    raise EngineDead(f"engine is unreachable ({e.kind}: {e})") from None
                if attempt == self.max_retries:
                    attempts = self.max_retries + 1
                    raise RequestFailed(
                        e.kind, f"{e} (gave up after {attempts} attempts)"
                    ) from None
                for t in tallies:
                    t["retries"] += 1
                    t[f"retry_{e.kind}"] += 1
                await asyncio.sleep(backoff_delay(attempt, self.backoff_base_s, e.retry_after))
        raise AssertionError("unreachable")

    async def _attempt(self, url: str, body: bytes) -> Generation:
        try:
            async with self._session.post(url, data=body, timeout=self.timeout) as resp:
                raw = await resp.read()
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
        except TimeoutError:
            raise _Retryable("timeout", f"no response within {self.timeout_s:g} s") from None
        except aiohttp.ClientError as e:
            raise _Retryable("connection", f"{type(e).__name__}: {e}") from None
        if status == 200:
            try:
                return parse_chat_response(raw)
            except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                raise _Retryable("malformed_response", f"unparseable body {raw[:200]!r}") from None
        text = raw[:300].decode("utf-8", "replace")
        if status in RETRY_STATUS:
            after = _parse_retry_after(retry_after)
            raise _Retryable(f"http_{status}", f"HTTP {status}: {text}", after)
        raise RequestFailed(f"http_{status}", f"HTTP {status}: {text}")


def _parse_retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
