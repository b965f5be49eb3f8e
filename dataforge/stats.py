"""Aggregate the chunk files' records into `stats.json`.

Everything comes from the chunk files themselves (their footers, `dataforge.chunkfile`): what
they were generated with, how, and their statistics. So stats.json describes the chunks as
they are, whatever the config says now.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

from dataforge import __version__, chunkfile, layout
from dataforge.chunkstats import TOKEN_BIN_EDGES, TokenSummary
from dataforge.errors import DataforgeError


def chunk_entry(record: chunkfile.ChunkRecord) -> dict[str, Any]:
    """One chunk's statistics, how it was made and its range, as one flat dict."""
    key = record.key
    return {
        **record.stats,
        **record.run,
        "chunk": layout.chunk_name(key.chunk),
        "start": key.start,
        "end": key.end,
    }


def load_chunks(chunk_files: list[str | Path]) -> list[dict[str, Any]]:
    """`chunk_entry` of each chunk file."""
    return [chunk_entry(chunkfile.read_record(p)) for p in chunk_files]


def common_settings(chunk_files: list[str | Path]) -> dict[str, Any]:
    """The content settings every chunk file was generated with.

    Raises:
        DataforgeError: the chunks disagree (a run with the default rerun triggers regenerates
            every chunk that differs from the config, so this means they were bypassed).
    """
    seen: dict[str, tuple[dict[str, Any], list[str]]] = {}
    for p in chunk_files:
        settings = chunkfile.read_record(p).key.settings
        digest = json.dumps(settings, sort_keys=True)
        seen.setdefault(digest, (settings, []))[1].append(Path(p).name)
    if len(seen) > 1:
        groups = "; ".join(f"{len(names)} like {names[0]}" for _, names in seen.values())
        raise DataforgeError(
            f"results/data/: the chunk files were generated with different settings ({groups}); "
            "run snakemake with its default rerun triggers to regenerate those that differ "
            "from the config"
        )
    return next(iter(seen.values()))[0] if seen else {}


def most_common(values: list[Any]) -> Any:
    """The value that occurs most often (the first of those, on a tie)."""
    keys = [json.dumps(v, sort_keys=True) for v in values]
    return values[max(range(len(values)), key=lambda i: (keys.count(keys[i]), -i))]


def provenance_settings(chunk_files: list[str | Path], chunks: list[dict[str, Any]]) -> dict:
    """What the chunks were generated with, for stats.json's provenance and the card."""
    s = common_settings(chunk_files)
    if not s:
        return {}

    def one_or_all(key: str) -> Any:
        values = [c.get(key) for c in chunks]
        distinct = [v for i, v in enumerate(values) if v not in values[:i]]
        return distinct[0] if len(distinct) == 1 else distinct

    out = {
        "model": s["model"],
        "model_revision": s["model_revision"],
        "model_source": one_or_all("model_source"),
        "max_context": s["max_context"],
        "engine_kind": s["engine"]["kind"],
        "prompt_column": s["prompt_column"],
        "system": s["system"],
        "template": s["template"],
        "too_long": s["too_long"],
        "sampling_configured": s["sampling"],
        # what the engine used (unset values from the model's generation_config.json), as
        # most chunks were generated with it
        "sampling": most_common([c["sampling_used"] for c in chunks]),
        "per_server": one_or_all("per_server"),
        "content_digest": hashlib.sha256(json.dumps(s, sort_keys=True).encode()).hexdigest(),
    }
    if s["rollout"]:
        out["rollout"] = s["rollout"]
    return out


def merged_tokens(chunks: list[dict[str, Any]], key: str) -> TokenSummary:
    """The chunks' `prompt_tokens` or `completion_tokens` summaries merged (exact counts)."""
    summary = TokenSummary()
    for c in chunks:
        summary.merge(c[key])
    return summary


def aggregate(chunk_files: list[str | Path], plan: dict[str, Any]) -> dict[str, Any]:
    """One JSON object: counts, token statistics, timing and provenance of the run."""
    chunk_files = sorted(chunk_files, key=lambda p: Path(p).name)  # any order in, one out
    chunks = load_chunks(chunk_files)
    settings = provenance_settings(chunk_files, chunks)
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

    runs = engine_runs(chunks)
    versions = sorted({r["engine_version"] for r in runs if r["engine_version"]})
    engines = [c["engine"] for c in chunks]
    distinct = [e for i, e in enumerate(engines) if e not in engines[:i]]

    def ts(t: float | None) -> str | None:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) if t is not None else None

    return {
        "rows": rows,
        "rows_ok": rows - sum(errors.values()),
        "rows_failed": sum(errors.values()),
        "rows_failed_by_kind": dict(sorted(errors.items())),
        "rows_truncated": sum(c["rows_truncated"] for c in chunks),
        "rows_prompt_truncated": sum(c["rows_prompt_truncated"] for c in chunks),
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
        "model_loads": sum(r["managed"] for r in runs),
        "engines": [
            {
                "host": r["host"],
                "devices": r["devices"],
                "gpus": r["gpus"],
                "started": ts(r["started"]),
                "startup_s": round(r["loading_s"], 3) if r["loading_s"] is not None else None,
                "generating_s": round(r["generating_s"], 3),
                "servers": r["servers"],
                "chunks": r["chunks"],
                "engine_version": r["engine_version"],
            }
            for r in runs
        ],
        "gpu": gpu_accounting(runs, completion_tokens.total),
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


def write_stats(chunk_files: list[str | Path], plan: str | Path, path: str | Path) -> None:
    """The aggregate_stats rule's work: `aggregate` of the chunk files, written to `path`."""
    from dataforge.atomic import write_json_atomic
    from dataforge.plan import load_plan

    write_json_atomic(path, aggregate(chunk_files, load_plan(plan)))


def engine_runs(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per engine started (an engine slot's, a Slurm job's, a retry's or a later
    run's), from the chunks its server generated: its GPUs, when it started and was ready, and
    how long its GPUs generated (the union of its chunks' generation intervals, which
    overlap)."""
    runs: dict[str, dict[str, Any]] = {}
    spans: dict[str, list[tuple[float, float]]] = {}
    for c in chunks:
        run = runs.setdefault(
            c["engine_id"],
            {
                "host": c["host"],
                "devices": c["devices"],
                "gpus": c["gpus"],
                "managed": c["engine_managed"],
                "started": c["engine_started"],
                "ready": c["engine_ready"],
                "engine_version": c["engine_version"],
                "servers": [],
                "chunks": 0,
                "last_finished": c["finished"],
            },
        )
        run["chunks"] += 1
        run["last_finished"] = max(run["last_finished"], c["finished"])
        if c["server"] not in run["servers"]:
            run["servers"].append(c["server"])
        spans.setdefault(c["engine_id"], []).append((c["started"], c["finished"]))
    for engine_id, run in runs.items():
        run["servers"].sort()
        run["generating_s"] = _union(spans[engine_id])
        run["loading_s"] = (run["ready"] - run["started"]) if run["managed"] else None
        run["allocated_s"] = run["last_finished"] - run["started"]
    return sorted(runs.values(), key=lambda r: (r["started"], r["host"]))


def _union(spans: list[tuple[float, float]]) -> float:
    """The length of the union of intervals."""
    total, end = 0.0, -math.inf
    for a, b in sorted(spans):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def gpu_accounting(runs: list[dict[str, Any]], output_tokens: int) -> dict[str, Any] | None:
    """Where the GPU time went: allocated (engine start to its last chunk), loading (start to
    ready), generating (some chunk in flight) and idle (the rest: waiting between groups, or
    for the chunk jobs), in GPU-seconds; efficiency is generating / allocated. None for a run
    on no GPU (the CPU build, the dummy engine without GPUs, an endpoint)."""
    gpu_runs = [r for r in runs if r["gpus"]]
    if not gpu_runs:
        return None
    allocated = sum(r["gpus"] * r["allocated_s"] for r in gpu_runs)
    loading = sum(r["gpus"] * (r["loading_s"] or 0.0) for r in gpu_runs)
    generating = sum(r["gpus"] * r["generating_s"] for r in gpu_runs)
    hours = allocated / 3600
    return {
        "model_loads": sum(r["managed"] for r in gpu_runs),
        "devices": sorted({f"{r['host']}:{d}" for r in gpu_runs for d in r["devices"]}),
        "gpu_seconds": {
            "allocated": allocated,
            "loading": loading,
            "generating": generating,
            "idle": max(0.0, allocated - loading - generating),
        },
        "efficiency": generating / allocated if allocated > 0 else None,
        "gpu_hours": hours,
        "gpu_hours_per_billion_output_tokens": (
            hours / (output_tokens / 1e9) if output_tokens else None
        ),
        "output_tokens_per_gpu_second": output_tokens / generating if generating > 0 else None,
    }
