"""Turn one input row into a chat request, as datatrove's generate_data.py does.

The system prompt (if any) comes first; a plain string becomes the user message, through the
template when one is set (`[[DOCUMENT]]`: the prompt column, `[[name]]`: the input column
`name`, a null value as an empty string); a message list is sent as it is. Unlike datatrove, bad
prompts do not crash the chunk: they raise `PromptError`, and the row is written with its error.
"""

from __future__ import annotations

import re
from typing import Any

from dataforge.config import DOCUMENT_MARKER

PLACEHOLDER = re.compile(r"\[\[([^\[\]]+)\]\]")

ROLES = frozenset({"system", "user", "assistant", "tool", "developer"})


class PromptError(ValueError):
    """The row's prompt cannot be sent; the message becomes the row's `error`."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


def template_columns(template: str | None) -> list[str]:
    """The input columns a template inserts besides the prompt (`[[name]]`), in order."""
    names = PLACEHOLDER.findall(template or "")
    return list(dict.fromkeys(n for n in names if f"[[{n}]]" != DOCUMENT_MARKER))


def render(template: str, document: str, columns: dict[str, Any] | None = None) -> str:
    """`template` with `[[DOCUMENT]]` replaced by `document` and every `[[name]]` by the row's
    column `name` (null: empty), in one pass: inserted text is never read as a placeholder."""
    columns = columns or {}

    def value(match: re.Match) -> str:
        if match.group(0) == DOCUMENT_MARKER:
            return document
        if match.group(1) not in columns:
            return match.group(0)
        v = columns[match.group(1)]
        return "" if v is None else str(v)

    return PLACEHOLDER.sub(value, template)


def build_messages(
    value: Any,
    kind: str,
    system: str | None,
    template: str | None,
    columns: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The `messages` of the chat request for one prompt value.

    Args:
        value: the prompt column's value for this row.
        kind: 'text' or 'messages' (from the plan).
        system: optional system prompt.
        template: optional template with `[[DOCUMENT]]` and `[[name]]` (text prompts only).
        columns: the row's values of the template's other columns.

    Raises:
        PromptError: for a null or empty prompt, or malformed messages.
    """
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    if kind == "messages":
        if not value:
            raise PromptError("empty_prompt", "the message list is null or empty")
        for i, m in enumerate(value):
            if not isinstance(m, dict) or m.get("role") not in ROLES:
                role = m.get("role") if isinstance(m, dict) else None
                raise PromptError("invalid_messages", f"message {i} has invalid role {role!r}")
            if m.get("content") is None:
                raise PromptError("invalid_messages", f"message {i} has no content")
        messages.extend({"role": m["role"], "content": m["content"]} for m in value)
        return messages
    if value is None or not str(value).strip():
        raise PromptError("empty_prompt", "the prompt is null or empty")
    text = str(value)
    content = render(template, text, columns) if template else text
    messages.append({"role": "user", "content": content})
    return messages


def request_seed(base: int | None, row: int, rollout: int, rollouts: int) -> int | None:
    """A per-request seed: distinct per rollout, stable per row whatever the chunking."""
    if base is None:
        return None
    return (base + row * rollouts + rollout) % (2**31 - 1)


def build_payload(
    messages: list[dict[str, Any]], model: str, sampling: dict[str, Any], seed: int | None
) -> dict[str, Any]:
    """The OpenAI chat-completions body; unset sampling values are left to the server."""
    payload: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": sampling["max_tokens"],
    }
    for key in ("temperature", "top_p", "top_k"):
        if sampling.get(key) is not None:
            payload[key] = sampling[key]
    if seed is not None:
        payload["seed"] = seed
    if sampling.get("response_format") is not None:
        payload["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "response", "schema": sampling["response_format"]},
        }
    return payload
