"""Aggregate the per-chunk sidecars into `stats.json`."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from dataforge import __version__
from dataforge.output import TOKEN_BIN_EDGES, TokenSummary


def load_sidecars(sidecars: list[str | Path]) -> list[dict[str, Any]]:
    return [json.loads(Path(p).read_text(encoding="utf-8")) for p in sidecars]


def merged_tokens(chunks: list[dict[str, Any]], key: str) -> TokenSummary:
    """The chunks' `prompt_tokens` or `completion_tokens` summaries merged (exact counts)."""
    summary = TokenSummary()
    for c in chunks:
        summary.merge(c[key])
    return summary


def aggregate(
    sidecars: list[str | Path], plan: dict[str, Any], settings: dict[str, Any]
) -> dict[str, Any]:
    """One JSON object: counts, token statistics, timing and provenance of the run."""
    chunks = sorted(load_sidecars(sidecars), key=lambda c: c["chunk"])  # any order in, one out
    errors: Counter[str] = Counter()
    finish: Counter[str] = Counter()
    requests: Counter[str] = Counter()
    for c in chunks:
        errors.update(c["errors"])
        finish.update(c["finish_reasons"])
        requests.update(c["requests"])
    prompt_tokens = merged_tokens(chunks, "prompt_tokens")
    completion_tokens = merged_tokens(chunks, "completion_tokens")
    start = min((c["started"] for c in chunks), default=None)
    end = max((c["finished"] for c in chunks), default=None)
    wall = (end - start) if chunks else 0.0
    generation_time = sum(c["seconds"] for c in chunks)
    rows = sum(c["rows"] for c in chunks)

    servers = server_runs(chunks)
    gpu_seconds = sum(r["gpus"] * (r["last_finished"] - r["started"]) for r in servers)
    generation_gpu_seconds = sum(
        r["gpus"] * (r["last_finished"] - (r["engine_ready"] or r["started"])) for r in servers
    )
    versions = sorted({r["engine_version"] for r in servers if r["engine_version"]})
    engines = [c["engine"] for c in chunks if "engine" in c]
    distinct = [e for i, e in enumerate(engines) if e not in engines[:i]]

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
        "output_tokens_per_s_per_gpu": (
            completion_tokens.total / generation_gpu_seconds if generation_gpu_seconds else None
        ),
        "gpu_hours": gpu_seconds / 3600,
        "servers": [
            {
                "server": r["server"],
                "host": r["host"],
                "gpus": r["gpus"],
                "started": ts(r["started"]),
                "startup_s": (
                    round(r["engine_ready"] - r["started"], 3) if r["engine_ready"] else None
                ),
                "chunks": r["chunks"],
                "engine_version": r["engine_version"],
            }
            for r in servers
        ],
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
            "engine_version": versions[0] if len(versions) == 1 else (versions or None),
            # how the servers ran (a list when reruns used other settings)
            "engine": distinct[0] if len(distinct) == 1 else (distinct or None),
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


def write_stats(
    sidecars: list[str | Path], plan: str | Path, settings: dict[str, Any], path: str | Path
) -> None:
    """The aggregate_stats rule's work: `aggregate` of the sidecars, written to `path`."""
    from dataforge.atomic import write_json_atomic
    from dataforge.plan import load_plan

    write_json_atomic(path, aggregate(sidecars, load_plan(plan), settings))


def server_runs(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per server start (a group's server, or its retry or a later run's), from the
    chunks it generated: when it started, when its engine was ready, its GPUs and its last
    chunk's end. Sidecars written before these fields existed count as their own chunk's span."""
    runs: dict[tuple[str, float], dict[str, Any]] = {}
    for c in chunks:
        started = c.get("server_started", c["started"])
        run = runs.setdefault(
            (c["server"], started),
            {
                "server": c["server"],
                "host": c.get("host"),
                "gpus": c.get("gpus", 0),
                "started": started,
                "engine_ready": c.get("engine_ready"),
                "engine_version": c.get("engine_version"),
                "chunks": 0,
                "last_finished": c["finished"],
            },
        )
        run["chunks"] += 1
        run["last_finished"] = max(run["last_finished"], c["finished"])
    return sorted(runs.values(), key=lambda r: (r["started"], r["server"]))
