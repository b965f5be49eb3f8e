"""A chunk's statistics: row and failure counts, finish reasons, request counts, token
summaries that merge exactly across chunks (value counts, so percentiles are exact), timing.

A new per-chunk statistic is computed here (`chunk_stats`), summed in `dataforge.stats` and
shown in the card's template.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dataforge.generation import ChunkRows

# Fixed histogram bin edges for token counts (powers of two): mergeable across chunks.
TOKEN_BIN_EDGES = [0, *(2**i for i in range(21))]


class TokenSummary:
    """Count, total, min, max, exact percentiles and a fixed-bin histogram of token counts;
    mergeable (the chunk records carry the exact value counts, at most one entry per distinct
    token count)."""

    QUANTILES = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99))

    def __init__(self) -> None:
        self.n = 0
        self.total = 0
        self.min: int | None = None
        self.max: int | None = None
        self.hist = [0] * (len(TOKEN_BIN_EDGES) - 1)
        self.counts: Counter[int] = Counter()  # value -> how many (exact percentiles)

    def add(self, value: int | None) -> None:
        if value is None:
            return
        self.n += 1
        self.total += value
        self.min = value if self.min is None else min(self.min, value)
        self.max = value if self.max is None else max(self.max, value)
        self.hist[_bin(value)] += 1
        self.counts[value] += 1

    def merge(self, other: dict[str, Any]) -> None:
        if not other.get("n"):
            return
        self.n += other["n"]
        self.total += other["total"]
        self.min = other["min"] if self.min is None else min(self.min, other["min"])
        self.max = other["max"] if self.max is None else max(self.max, other["max"])
        self.hist = [a + b for a, b in zip(self.hist, other["hist"], strict=True)]
        self.counts.update({int(k): v for k, v in other["counts"].items()})

    def quantile(self, q: float) -> int | None:
        """The nearest-rank quantile: the smallest value with at least q*n values at or below
        it (numpy's `percentile(..., method="inverted_cdf")`)."""
        if not self.n:
            return None
        rank, seen = max(1, math.ceil(q * self.n)), 0
        for value in sorted(self.counts):
            seen += self.counts[value]
            if seen >= rank:
                return value
        return self.max

    def as_dict(self, with_counts: bool = False) -> dict[str, Any]:
        out = {
            "n": self.n,
            "total": self.total,
            "mean": self.total / self.n if self.n else None,
            "min": self.min,
            "max": self.max,
            **{name: self.quantile(q) for name, q in self.QUANTILES},
            "hist": self.hist,
        }
        if with_counts:
            out["counts"] = {str(k): v for k, v in sorted(self.counts.items())}
        return out


def _bin(value: int) -> int:
    for i in range(len(TOKEN_BIN_EDGES) - 1):
        if value < TOKEN_BIN_EDGES[i + 1]:
            return i
    return len(TOKEN_BIN_EDGES) - 2


def chunk_stats(rows: ChunkRows, started: float, finished: float) -> dict[str, Any]:
    """A chunk's statistics (in its file's record), summed into `stats.json` by
    `dataforge.stats.aggregate`: counts, token summaries with exact value counts, timing."""
    generations, errors = rows.generations, rows.errors
    finish = Counter()
    prompt_tokens, completion_tokens = TokenSummary(), TokenSummary()
    truncated = 0
    for gens in generations:
        if any(g["finish_reason"] == "length" for g in gens):
            truncated += 1
        for g in gens:
            finish[g["finish_reason"] or "unknown"] += 1
            prompt_tokens.add(g["prompt_tokens"])
            completion_tokens.add(g["completion_tokens"])
    failed = Counter(e.split(":", 1)[0] for e in errors if e is not None)
    return {
        "rows": len(errors),
        "rows_failed": sum(failed.values()),
        "errors": dict(failed),
        "rows_truncated": truncated,
        "rollouts": sum(len(g) for g in generations),
        "finish_reasons": dict(finish),
        "requests": dict(rows.counts),
        "prompt_tokens": prompt_tokens.as_dict(with_counts=True),
        "completion_tokens": completion_tokens.as_dict(with_counts=True),
        "rows_prompt_truncated": sum(rows.truncated),
        "started": started,
        "finished": finished,
        "seconds": finished - started,
    }
