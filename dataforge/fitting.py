"""Fitting a text prompt to the model's context, with the engine's own tokenizer.

The budget is `model.max_context - sampling.max_tokens`. The system prompt, the chat template
and the template text around `[[DOCUMENT]]` are kept whole; only the document is cut, by
tokens (vLLM's `/tokenize` and `/detokenize`, which the dummy engine serves too). A prompt
whose UTF-8 length already fits (a token covers at least one byte) is not tokenized at all.
"""

from __future__ import annotations

import asyncio
from typing import Any

from dataforge.client import EngineClient, RequestFailed
from dataforge.config import DOCUMENT_MARKER
from dataforge.prompts import PLACEHOLDER, PromptError

# Tokens kept free when truncating: re-tokenizing cut text can merge differently at the cut.
TRUNCATION_MARGIN = 8


class PromptFitter:
    """Cuts prompts to fit; the overhead of each (system, template) is asked once."""

    def __init__(self, client: EngineClient, root_url: str, max_context: int) -> None:
        self.client = client
        self.root_url = root_url  # where /tokenize is served (beside /v1)
        self.max_context = max_context
        self._overheads: dict[tuple, asyncio.Future] = {}

    async def _tokenizer(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.client.post_json(self.root_url + path, body)

    async def overhead(self, settings: dict[str, Any]) -> int:
        """Tokens of the chat template, system prompt and template text around the document
        (the template's other columns left out: `fit` adds them per row).

        Asked once per (system, template): the rows that start together share one request.
        """
        key = (settings["model"], settings["system"], settings["template"])
        if key not in self._overheads:
            template = settings["template"] or DOCUMENT_MARKER
            system = settings["system"]
            messages = [{"role": "system", "content": system}] if system else []
            messages.append({"role": "user", "content": PLACEHOLDER.sub("", template)})
            self._overheads[key] = asyncio.ensure_future(
                self._tokenizer(
                    "/tokenize",
                    {
                        "model": settings["model"],
                        "messages": messages,
                        "add_generation_prompt": True,
                    },
                )
            )
        asked = self._overheads[key]
        try:
            return (await asyncio.shield(asked))["count"]
        except RequestFailed:
            if self._overheads.get(key) is asked:
                del self._overheads[key]  # ask again for the next row
            raise

    async def fit(
        self, text: str, settings: dict[str, Any], columns: dict[str, Any] | None = None
    ) -> tuple[str, bool]:
        """`text`, cut by tokens so that the request fits; and whether it was cut. `columns`:
        the row's values of the template's other columns (kept whole; only `text` is cut).

        Raises:
            PromptError: when even an empty document does not fit, or when the prompt does not
                fit and `prompt.too_long` is `error`.
            RequestFailed: the engine's tokenizer failed.
        """
        budget = self.max_context - settings["sampling"]["max_tokens"]
        overhead = await self.overhead(settings)
        inserted = "".join(
            str(columns[name] or "")
            for name in PLACEHOLDER.findall(settings["template"] or "")
            if columns and name in columns
        )
        if len(text.encode()) + len(inserted.encode()) + overhead <= budget:
            return text, False
        if inserted:
            answer = await self._tokenizer(
                "/tokenize",
                {"model": settings["model"], "prompt": inserted, "add_special_tokens": False},
            )
            overhead += len(answer["tokens"])
        answer = await self._tokenizer(
            "/tokenize", {"model": settings["model"], "prompt": text, "add_special_tokens": False}
        )
        tokens = answer["tokens"]
        if len(tokens) + overhead <= budget:
            return text, False
        if settings.get("too_long") == "error":
            raise PromptError(
                "prompt_too_long",
                f"{len(tokens) + overhead} prompt tokens with the template and chat template; "
                f"{budget} fit (model.max_context - sampling.max_tokens)",
            )
        room = budget - overhead - TRUNCATION_MARGIN
        if room <= 0:
            raise PromptError(
                "prompt_too_long",
                f"the template, system prompt and chat template alone take {overhead} of the "
                f"{budget} tokens left for the prompt",
            )
        answer = await self._tokenizer(
            "/detokenize", {"model": settings["model"], "tokens": tokens[:room]}
        )
        return answer["prompt"], True
