"""Example 4: answer, critique the answer, revise it: three requests per row, in sequence.

    .venv/bin/snakemake --cores all --configfile config/examples/critique_revise.yaml

Every step is kept in the row's `rollout` column (text and finish reason of the answer, the
critique and the revision); the token statistics in stats.json count all three requests.
"""

from __future__ import annotations

from typing import Any

from dataforge.rollout import Generate

CRITIQUE = (
    "Critique your answer above: list what is wrong, missing or unclear in it. "
    "Do not rewrite it yet."
)
REVISE = "Now write the final answer to the original question, fixing every point of the critique."


async def rollout(
    row: dict[str, Any],
    generate: Generate,
    column: str = "prompt",
    critique: str = CRITIQUE,
    revise: str = REVISE,
) -> dict[str, Any]:
    """One conversation that grows by one exchange per step."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": row[column]}]
    steps = {}
    for name, ask in (("answer", None), ("critique", critique), ("revision", revise)):
        if ask is not None:
            messages.append({"role": "user", "content": ask})
        result = await generate({"messages": messages})
        messages.append({"role": "assistant", "content": result.text})
        steps[name] = {"text": result.text, "finish_reason": result.finish_reason}
    return steps
