"""Generating the rows of one chunk: one request per row and rollout (or a rollout function per
row), all in flight at once under the engine client's concurrency limit.

A row whose prompt cannot be sent, or whose request fails for good, gets its `error`; an
engine that is gone (`EngineDead`) fails the whole chunk instead, so the rerun redoes it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from dataforge.client import EngineClient, EngineDead, RequestFailed
from dataforge.config import DOCUMENT_MARKER
from dataforge.fitting import PromptFitter
from dataforge.prompts import (
    PromptError,
    build_messages,
    build_payload,
    request_seed,
    template_columns,
)
from dataforge.rollout import Generate, Rollouts


@dataclass
class ChunkRows:
    """What the rows of a chunk came back with."""

    generations: list[list[dict[str, Any]]]
    errors: list[str | None]
    truncated: list[bool]
    rollout_json: list[str | None] | None = None  # the rollout column (rollout.function)
    counts: Counter[str] = field(default_factory=Counter)  # requests, retries by kind


async def generate_rows(
    rows: pa.Table,
    start: int,
    prompt_column: str | None,
    prompt_kind: str,
    settings: dict[str, Any],
    client: EngineClient,
    *,
    fitter: PromptFitter | None,
    rollouts: Rollouts | None,
    root_url: str,
    progress: dict[str, int],
) -> ChunkRows:
    """Generate every row of `rows` (global indices from `start`); `progress["done"]` counts
    the rows finished. `fitter` cuts text prompts to the context (None: sent as they are)."""
    n = rows.num_rows
    out = ChunkRows([[] for _ in range(n)], [None] * n, [False] * n)
    counts = out.counts

    async def one_rollout(i: int, row: dict[str, Any]) -> None:
        generate = Generate(client, settings, start + i, counts, root_url, settings["max_context"])
        try:
            out.rollout_json[i], out.errors[i] = await rollouts.run(row, generate)
        finally:  # failed rows' requests count in the statistics too
            out.generations[i] = [g.as_dict() for g in generate.generations]
        progress["done"] += 1

    template = settings["template"]
    # The template's other columns ([[name]]); only the prompt ([[DOCUMENT]]) is ever cut.
    inserted = template_columns(template) if prompt_kind == "text" else []
    values = {name: rows.column(name).to_pylist() for name in inserted}
    cut = fitter if template is None or DOCUMENT_MARKER in template else None

    async def one_row(i: int, prompt: Any) -> None:
        columns = {name: values[name][i] for name in inserted}
        try:
            if cut is not None and prompt_kind == "text" and prompt:
                prompt, out.truncated[i] = await cut.fit(str(prompt), settings, columns)
            messages = build_messages(prompt, prompt_kind, settings["system"], template, columns)
        except (PromptError, RequestFailed) as e:
            out.errors[i] = str(e)
            progress["done"] += 1
            return
        sampling = settings["sampling"]
        n_rollouts = sampling["rollouts"]
        requests = [
            client.chat(
                build_payload(
                    messages,
                    settings["model"],
                    sampling,
                    request_seed(sampling["seed"], start + i, r, n_rollouts),
                ),
                counts,
            )
            for r in range(n_rollouts)
        ]
        if n_rollouts == 1:  # the common case, without a task per request
            try:
                results = [await requests[0]]
            except RequestFailed as e:
                results = [e]
        else:
            results = await asyncio.gather(*requests, return_exceptions=True)
        for res in results:
            if isinstance(res, EngineDead):
                raise res
            if isinstance(res, RequestFailed):
                out.errors[i] = out.errors[i] or str(res)
            elif isinstance(res, BaseException):
                raise res
            else:
                out.generations[i].append(res.as_dict())
        progress["done"] += 1

    if rollouts is not None:
        out.rollout_json = [None] * n
        await rollouts.context()  # a broken shared context fails the chunk, once
        tasks = [asyncio.ensure_future(one_rollout(i, r)) for i, r in enumerate(rows.to_pylist())]
    else:
        prompts = rows.column(prompt_column).to_pylist()
        tasks = [asyncio.ensure_future(one_row(i, p)) for i, p in enumerate(prompts)]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        raise
    return out
