"""Output rows and per-chunk statistics.

Each output row keeps every input column unchanged and adds `row` (global index), `generations`
(one struct per successful completion; with `rollout.function`, `rollout`: the JSON of what
the function returned) and `error` (null on success). Chunk files are written
atomically and carry their plan record in the Parquet footer.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dataforge.atomic import remove_stale_temps, write_atomic
from dataforge.plan import CHUNK_META_KEY

GENERATION_TYPE = pa.struct(
    [
        ("text", pa.string()),
        ("reasoning", pa.string()),
        ("finish_reason", pa.string()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
    ]
)
# Fixed histogram bin edges for token counts (powers of two): mergeable across chunks.
TOKEN_BIN_EDGES = [0, *(2**i for i in range(21))]


def build_chunk_table(
    rows: pa.Table,
    start: int,
    generations: list[list[dict[str, Any]]],
    errors: list[str | None],
    plan_record: dict[str, Any],
    rollouts: list[str | None] | None = None,
) -> pa.Table:
    """Input rows plus `row`, `generations` and `error`, with the plan record in the metadata.

    With `rollouts` (rollout.function), the JSON of each row's rollout output is the `rollout`
    column instead of `generations` (its requests still count in the statistics).
    """
    n = rows.num_rows
    table = rows.append_column("row", pa.array(range(start, start + n), type=pa.int64()))
    if rollouts is None:
        table = table.append_column("generations", pa.array(generations, pa.list_(GENERATION_TYPE)))
    else:
        table = table.append_column("rollout", pa.array(rollouts, pa.string()))
    table = table.append_column("error", pa.array(errors, pa.string()))
    return table.replace_schema_metadata({CHUNK_META_KEY: json.dumps(plan_record).encode()})


def spec_digest(spec: dict[str, Any]) -> str:
    """A digest of everything that decides a chunk's content (its rows and settings)."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def finished_chunk(parquet: str | Path, sidecar: str | Path, spec: dict[str, Any]) -> bool:
    """Whether `parquet` already holds this exact chunk (same rows and settings) with its
    statistics sidecar: for example a chunk that a failed Slurm job finished before the
    profile's retry resubmitted its whole group."""
    from dataforge.plan import read_chunk_metadata

    if not (Path(parquet).is_file() and Path(sidecar).is_file()):
        return False
    meta = read_chunk_metadata(parquet) or {}
    return meta.get("spec") == spec_digest(spec)


def write_chunk(table: pa.Table, path: str | Path) -> None:
    """Write a chunk file atomically (temp file, fsync, rename)."""
    remove_stale_temps(path)
    write_atomic(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))


class TokenSummary:
    """Count, total, min, max, exact percentiles and a fixed-bin histogram of token counts;
    mergeable (the sidecars carry the exact value counts, at most one entry per distinct
    token count)."""

    QUANTILES = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99))

    def __init__(self) -> None:
        self.n = 0
        self.total = 0
        self.min: int | None = None
        self.max: int | None = None
        self.hist = [0] * (len(TOKEN_BIN_EDGES) - 1)
        self.counts: Counter[int] | None = Counter()  # None: merged from a sidecar without

    def add(self, value: int | None) -> None:
        if value is None:
            return
        self.n += 1
        self.total += value
        self.min = value if self.min is None else min(self.min, value)
        self.max = value if self.max is None else max(self.max, value)
        self.hist[_bin(value)] += 1
        if self.counts is not None:
            self.counts[value] += 1

    def merge(self, other: dict[str, Any]) -> None:
        if not other.get("n"):
            return
        self.n += other["n"]
        self.total += other["total"]
        self.min = other["min"] if self.min is None else min(self.min, other["min"])
        self.max = other["max"] if self.max is None else max(self.max, other["max"])
        self.hist = [a + b for a, b in zip(self.hist, other["hist"], strict=True)]
        if self.counts is not None and "counts" in other:
            self.counts.update({int(k): v for k, v in other["counts"].items()})
        else:
            self.counts = None

    def quantile(self, q: float) -> int | None:
        """The nearest-rank quantile: the smallest value with at least q*n values at or below
        it (numpy's `percentile(..., method="inverted_cdf")`)."""
        if not self.n or self.counts is None:
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
        if with_counts and self.counts is not None:
            out["counts"] = {str(k): v for k, v in sorted(self.counts.items())}
        return out


def _bin(value: int) -> int:
    for i in range(len(TOKEN_BIN_EDGES) - 1):
        if value < TOKEN_BIN_EDGES[i + 1]:
            return i
    return len(TOKEN_BIN_EDGES) - 2


def chunk_stats(
    generations: list[list[dict[str, Any]]],
    errors: list[str | None],
    request_counts: dict[str, int],
) -> dict[str, Any]:
    """Per-chunk statistics (the sidecar), summed into `stats.json` by the stats rule."""
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
        "requests": dict(request_counts),
        "prompt_tokens": prompt_tokens.as_dict(with_counts=True),
        "completion_tokens": completion_tokens.as_dict(with_counts=True),
    }
