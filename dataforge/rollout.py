"""Custom rollouts: a user's async function makes the requests for each row.

    async def rollout(row: dict, generate: Generate, **context) -> Any

`rollout.function` names it (`module:function`); `rollout.kwargs` and the items of the
`rollout.shared_context` (built once per server, i.e. per group of chunks) are its keyword
arguments. Each `await generate(payload)` sends one OpenAI request through the server's
`EngineClient` (same concurrency limit, retries and timeouts as plain prompts) and returns a
`Generation` (text, reasoning, finish_reason, prompt_tokens, completion_tokens); every request
counts in the chunk's token statistics. The JSON of the returned value is the row's `rollout`
column; an exception marks the row failed with its message, other rows go on.

`check_rollout_config` imports and checks both names at parse time, before any job starts;
`Rollouts` runs them in the serve job.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import inspect
import json
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dataforge.client import EngineClient, EngineDead, Generation, RequestFailed
from dataforge.errors import ConfigError
from dataforge.prompts import build_payload
from dataforge.settings import Config, RolloutSettings, plain

__all__ = ["EngineDead", "Generate", "Generation", "RequestFailed"]

FAILED = "rollout_error"  # the error kind of a row whose rollout raised


def load_object(ref: str, key: str, search_dirs: Iterable[str | Path]) -> Any:
    """Import `module:attr` (dotted attributes allowed), looking in `search_dirs` first.

    Raises:
        ConfigError: naming `key` when the module or the attribute cannot be found.
    """
    module_name, _, attr = ref.partition(":")
    for d in reversed([str(Path(d).resolve()) for d in search_dirs]):
        if d not in sys.path:
            sys.path.insert(0, d)
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as e:  # the module's own import errors too: name them
        raise ConfigError(
            f"config: {key}: cannot import module {module_name!r} ({type(e).__name__}: {e})"
        ) from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(
                f"config: {key}: module {module_name!r} has no attribute {attr!r}"
            ) from None
    return obj


def check_function(fn: Any, ref: str, kwargs: dict[str, Any], complete: bool = True) -> None:
    """`fn` must be `async def f(row, generate, **context)`, accepting `kwargs` by name (and
    needing no other, when `kwargs` is `complete`)."""
    if not inspect.iscoroutinefunction(fn):
        what = type(fn).__name__
        raise ConfigError(
            f"config: rollout.function: {ref} is not an async function (got a {what}); "
            "write `async def rollout(row, generate, **context)`"
        )
    try:
        sig = inspect.signature(fn)
        (sig.bind if complete else sig.bind_partial)(None, None, **kwargs)
    except TypeError as e:
        raise ConfigError(
            f"config: rollout.function: {ref} cannot be called as "
            f"rollout(row, generate{''.join(f', {k}=…' for k in kwargs)}): {e}"
        ) from None


def check_rollout_config(config: Config, search_dirs: Iterable[str | Path]) -> None:
    """Parse-time checks of the rollout keys (the config is validated and has its defaults)."""
    r = config.rollout
    if not r.function:
        for key in ("shared_context", "kwargs"):
            if getattr(r, key):
                raise ConfigError(f"config: rollout.{key} needs rollout.function")
        return
    if config.sampling.rollouts != 1:
        raise ConfigError(
            "config: sampling.rollouts must be 1 with rollout.function: call generate() as "
            "often as needed inside the rollout"
        )
    for key in ("system", "template"):
        if getattr(config.prompt, key) is not None:
            raise ConfigError(
                f"config: prompt.{key} is not used with rollout.function: the rollout builds "
                "its requests (pass text to it through rollout.kwargs)"
            )
    search_dirs = list(search_dirs)
    fn = load_object(r.function, "rollout.function", search_dirs)
    names = _context_names(r, search_dirs)
    complete = names is not None  # a factory's keys are checked when it has run, per server
    check_function(fn, r.function, {**r.kwargs, **(names or {})}, complete)


def _context_names(r: RolloutSettings, search_dirs: list[str | Path]) -> dict[str, None] | None:
    """The shared context's keys where they are known without building it (none, or a dict);
    None for a factory or a context manager."""
    if not r.shared_context:
        return {}
    obj = load_object(r.shared_context, "rollout.shared_context", search_dirs)
    if isinstance(obj, dict):
        return dict.fromkeys(obj)
    if not (callable(obj) or _is_context_manager(obj)):
        raise ConfigError(
            f"config: rollout.shared_context: {r.shared_context} is an object of type "
            f"{type(obj).__name__}; expected a dict, a callable or a context manager"
        )
    return None


def _is_context_manager(obj: Any) -> bool:
    return hasattr(obj, "__aenter__") or hasattr(obj, "__enter__")


def rollout_seed(base: int | None, row: int, payload: dict[str, Any], nth: int) -> int | None:
    """A request's seed from the base seed, the row, the payload and how many identical
    payloads this row sent before it: reproducible whatever the chunking and whatever order
    concurrent requests go out in."""
    if base is None:
        return None
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).digest()
    return (base + row * 1_000_003 + int.from_bytes(digest[:4], "big") + nth) % (2**31 - 1)


class Generate:
    """The `generate` a rollout gets for one row: `await generate(payload)`.

    The payload is an OpenAI chat-completions body (`messages`) or a completions body
    (`prompt`); vLLM's extra keys (`continue_final_message`, `add_generation_prompt`, …) pass
    through. `model` and the config's sampling values (`max_tokens`, `temperature`, …) are
    filled in where the payload leaves them out, and `seed` too when `sampling.seed` is set.

    Raises (from a call):
        RequestFailed: the request failed for good (after retries); catch it to go on.
        EngineDead: the engine is gone (the chunk fails and is retried elsewhere).
    """

    def __init__(
        self,
        client: EngineClient,
        generation: dict[str, Any],
        row: int,
        counts: Counter[str],
        root_url: str,
        max_context: int,
    ) -> None:
        self._client, self._counts, self._root = client, counts, root_url
        self._defaults = build_payload([], generation["model"], generation["sampling"], None)
        del self._defaults["messages"]
        self._seed = generation["sampling"]["seed"]
        self._sent: Counter[str] = Counter()
        self.row = row  # the row's index in the input
        self.model = generation["model"]
        self.max_context = max_context
        self.max_tokens = generation["sampling"]["max_tokens"]
        self.generations: list[Generation] = []  # every answer, for the token statistics

    async def __call__(self, payload: dict[str, Any]) -> Generation:
        if not isinstance(payload, dict) or ("messages" in payload) == ("prompt" in payload):
            raise TypeError("generate(payload): a dict with either 'messages' or 'prompt'")
        body = {**self._defaults, **payload}
        if "seed" not in payload and self._seed is not None:
            key = json.dumps(body, sort_keys=True)
            body["seed"] = rollout_seed(self._seed, self.row, body, self._sent[key])
            self._sent[key] += 1
        kind = "chat" if "messages" in body else "completions"
        result = await self._client.chat(body, self._counts, kind=kind)
        self.generations.append(result)
        return result

    async def tokenize(self, text: str) -> list[int]:
        """The model's token ids for `text` (no special tokens), from the engine."""
        answer = await self._tokenizer("/tokenize", {"prompt": text, "add_special_tokens": False})
        return list(answer["tokens"])

    async def detokenize(self, tokens: list[int]) -> str:
        """The text of `tokens`, from the engine."""
        return str((await self._tokenizer("/detokenize", {"tokens": list(tokens)}))["prompt"])

    async def _tokenizer(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        # vLLM serves these beside /v1, not under it (the root URL)
        return await self._client.post_json(self._root + path, {"model": self.model, **body})


class Rollouts:
    """The rollout function of one server, with its shared context (built at first use, once,
    and closed by `aclose`)."""

    def __init__(self, config: Config, search_dirs: list[str | Path]) -> None:
        r = config.rollout
        self.ref = r.function
        self.function = load_object(r.function, "rollout.function", search_dirs)
        self.kwargs = plain(r.kwargs)
        self.context_ref = r.shared_context
        self.context_obj = (
            load_object(self.context_ref, "rollout.shared_context", search_dirs)
            if self.context_ref
            else None
        )
        self.stack = contextlib.AsyncExitStack()
        self._context: asyncio.Future | None = None

    async def context(self) -> dict[str, Any]:
        """The keyword arguments of every call: `rollout.kwargs` and the shared context."""
        if self._context is None:
            self._context = asyncio.ensure_future(self._build())
        return await asyncio.shield(self._context)

    async def _build(self) -> dict[str, Any]:
        obj, ref = self.context_obj, self.context_ref
        try:
            if obj is None:
                shared: Any = {}
            elif isinstance(obj, dict):
                shared = obj
            else:
                # a factory (a function, a class, a @contextmanager function) is called first;
                # a context manager object is entered as it is
                if callable(obj) and (inspect.isclass(obj) or not _is_context_manager(obj)):
                    obj = await asyncio.to_thread(obj)
                if hasattr(obj, "__aenter__"):
                    shared = await self.stack.enter_async_context(obj)
                elif hasattr(obj, "__enter__"):
                    shared = await asyncio.to_thread(self.stack.enter_context, obj)
                else:
                    shared = obj
        except Exception as e:
            raise ConfigError(
                f"rollout.shared_context: {ref} raised {type(e).__name__}: {e}"
            ) from None
        if shared is None:
            shared = {}
        if not isinstance(shared, dict):
            raise ConfigError(
                f"rollout.shared_context: {ref} gave a {type(shared).__name__}, not a dict"
            )
        both = set(shared) & set(self.kwargs)
        if both:
            raise ConfigError(
                f"rollout.kwargs and rollout.shared_context both set {', '.join(sorted(both))}"
            )
        kwargs = {**self.kwargs, **shared}
        check_function(self.function, self.ref, kwargs)
        return kwargs

    async def run(self, row: dict[str, Any], generate: Generate) -> tuple[str | None, str | None]:
        """(JSON of the output, error) for one row; `EngineDead` and cancellation propagate."""
        kwargs = await self.context()
        try:
            value = await self.function(row, generate, **kwargs)
        except (EngineDead, asyncio.CancelledError):
            raise
        except RequestFailed as e:  # not caught by the rollout: the request's own error
            return None, str(e)
        except Exception as e:
            return None, f"{FAILED}: {type(e).__name__}: {e}"
        try:
            return json.dumps(value, ensure_ascii=False, allow_nan=False), None
        except (TypeError, ValueError) as e:
            return None, f"rollout_output: the rollout returned a value that is not JSON: {e}"

    async def aclose(self) -> None:
        """Close the shared context (a process pool's workers exit here)."""
        if self._context is not None and not self._context.done():
            self._context.cancel()
        await self.stack.aclose()
