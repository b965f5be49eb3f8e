"""Example 1: one request per row, what dataforge does without a rollout, written as one.

    .venv/bin/snakemake --cores all --configfile config/examples/single_request.yaml

The row's `rollout` column holds the JSON of the answer: text, reasoning, finish reason and
token counts, the fields a plain run writes in `generations`. Start from this file to make a
rollout of your own: the row is a dict of every input column, and `generate` takes any
OpenAI chat-completions body (`model` and the config's sampling values are filled in).
"""

from __future__ import annotations

from typing import Any

from dataforge.rollout import Generate


async def rollout(
    row: dict[str, Any], generate: Generate, column: str = "prompt", system: str | None = None
) -> dict[str, Any]:
    """Send the row's `column` as the user message, after an optional system prompt."""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": row[column]})
    return (await generate({"messages": messages})).as_dict()
