"""Aggregate the per-chunk sidecars into `stats.json`."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from dataforge import __version__
from dataforge.output import TOKEN_BIN_EDGES, TokenSummary


def aggregate(
    sidecars: list[str | Path], plan: dict[str, Any], settings: dict[str, Any]
) -> dict[str, Any]:
    """One JSON object: counts, token statistics, timing and provenance of the run."""
    chunks = [json.loads(Path(p).read_text(encoding="utf-8")) for p in sidecars]
    errors: Counter[str] = Counter()
    finish: Counter[str] = Counter()
    requests: Counter[str] = Counter()
    prompt_tokens, completion_tokens = TokenSummary(), TokenSummary()
    for c in chunks:
        errors.update(c["errors"])
        finish.update(c["finish_reasons"])
        requests.update(c["requests"])
        prompt_tokens.merge(c["prompt_tokens"])
        completion_tokens.merge(c["completion_tokens"])
    start = min((c["started"] for c in chunks), default=None)
    end = max((c["finished"] for c in chunks), default=None)
    wall = (end - start) if chunks else 0.0
    generation_time = sum(c["seconds"] for c in chunks)
    rows = sum(c["rows"] for c in chunks)

    def ts(t: float | None) -> str | None:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) if t is not None else None

    return {
        "rows": rows,
        "rows_ok": rows - sum(errors.values()),
        "rows_failed": sum(errors.values()),
        "rows_failed_by_kind": dict(sorted(errors.items())),
        "rows_truncated": sum(c["rows_truncated"] for c in chunks),
        "rows_prompt_truncated": sum(c.get("rows_prompt_truncated", 0) for c in chunks),
        "chunks": len(chunks),
        "rollouts": sum(c["rollouts"] for c in chunks),
        "finish_reasons": dict(sorted(finish.items())),
        "requests": dict(sorted(requests.items())),
        "prompt_tokens": prompt_tokens.as_dict(),
        "completion_tokens": completion_tokens.as_dict(),
        "token_histogram_bin_edges": TOKEN_BIN_EDGES,
        "wall_time_s": wall,
        "generation_time_s": generation_time,
        "output_tokens_per_s": completion_tokens.total / wall if wall > 0 else None,
        "started": ts(start),
        "finished": ts(end),
        "provenance": {
            "input": plan["input"],
            "source_fingerprint": plan["fingerprint"],
            "resolved_revision": plan["source"].get("revision"),
            "rows_in_input": plan["rows_total"],
            "prompt_kind": plan["prompt_kind"],
            "chunk_size": plan["chunk_size"],
            **settings,
            "dataforge_version": __version__,
        },
        "per_chunk": [
            {
                "chunk": c["chunk"],
                "rows": c["rows"],
                "rows_failed": c["rows_failed"],
                "completion_tokens": c["completion_tokens"]["total"],
                "seconds": round(c["seconds"], 3),
                "server": c["server"],
            }
            for c in chunks
        ],
    }
