"""Example 2: documents longer than the context, rewritten part by part and stitched.

    .venv/bin/snakemake --cores all --configfile config/examples/chunked_documents.yaml

The document is split by tokens with the model's own tokenizer (the engine's `/tokenize`, so
no tokenizer is loaded here) into parts of `part_tokens`. Each part is sent with the previous
part as context; with `continue_final_message` (vLLM) the previous part's rewrite is sent as
the start of the assistant's answer, so the model continues its own text instead of starting
over, and the parts join seamlessly. Engines without that extension (set it to false) get the
previous rewrite in the user message instead. The row's `rollout` column holds the stitched
text, the number of parts, and per part its tokens, its request's prompt tokens and finish
reason.
"""

from __future__ import annotations

from typing import Any

from dataforge.rollout import Generate

INSTRUCTION = "Rewrite this text in a more formal style:"
SLACK_TOKENS = 64  # instruction and chat template around the parts


async def rollout(
    row: dict[str, Any],
    generate: Generate,
    column: str = "text",
    instruction: str = INSTRUCTION,
    part_tokens: int = 512,
    continue_final_message: bool = True,
) -> dict[str, Any]:
    # the previous part, its rewrite and this part's rewrite ride along with each part
    needed = 2 * part_tokens + 2 * generate.max_tokens + SLACK_TOKENS
    if needed > generate.max_context:
        raise ValueError(
            f"part_tokens={part_tokens} with sampling.max_tokens={generate.max_tokens} needs "
            f"{needed} tokens of context, model.max_context is {generate.max_context}"
        )
    text = row[column]
    if not text or not text.strip():
        raise ValueError(f"column {column!r} is empty")
    tokens = await generate.tokenize(text)
    slices = [tokens[i : i + part_tokens] for i in range(0, len(tokens), part_tokens)]
    parts = [await generate.detokenize(s) for s in slices]
    pieces: list[str] = []
    info: list[dict[str, Any]] = []
    previous = ""
    for part, ids in zip(parts, slices, strict=True):
        context = f"{previous}{part}" if previous else part
        messages = [{"role": "user", "content": f"{instruction}\n\n{context}"}]
        payload: dict[str, Any] = {"messages": messages}
        if pieces and continue_final_message:
            messages.append({"role": "assistant", "content": pieces[-1]})
            payload.update(continue_final_message=True, add_generation_prompt=False)
        elif pieces:
            messages[0]["content"] += f"\n\nYour rewrite of the text before it:\n\n{pieces[-1]}"
        result = await generate(payload)
        pieces.append(result.text)
        info.append(
            {
                "tokens": len(ids),
                "prompt_tokens": result.prompt_tokens,
                "finish_reason": result.finish_reason,
            }
        )
        previous = part
    joiner = "" if continue_final_message else "\n\n"
    return {"text": joiner.join(pieces), "parts": len(parts), "part_info": info}
