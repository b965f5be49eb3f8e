"""Resuming: what the files already in results/ mean for this run, decided before any job.

The chunk files are the truth (their footers, `dataforge.chunkfile`), not Snakemake's records
in `.snakemake/`, which an interrupted run, a deleted folder or a copy to another machine
loses. At DAG time, in the main process (so `snakemake -n` does it too):

- `check_existing` refuses a config that the chunk files on disk cannot belong to (another
  input, another chunk size, fewer rows), with one line naming the key, before anything is
  written or deleted; and says whether `plan.json` must be made again (the config's input
  changed, the run directory moved, a prepared file is gone) while the chunks stay valid.
- `chunk_staleness` says why a chunk file no longer matches the config (settings or rows).

A stale plan or chunk gets a marker file in results/.stale/, newer than the file it concerns:
it is an input of the job that remakes it, so Snakemake's mtime trigger reruns that job, and
`snakemake -n` lists it. The marker records what differs.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataforge import chunkfile, layout
from dataforge.errors import PlanMismatchError
from dataforge.plan import PLAN_FORMAT, load_plan
from dataforge.settings import Config, plain


@dataclass
class PlanState:
    """What `check_existing` found."""

    stale: list[str] = field(default_factory=list)  # why plan.json must be made again
    chunks: int = 0  # chunk files present


def _plan_input(config: Config) -> dict[str, Any]:
    """What the plan records of the config (`plan.json`'s `input`)."""
    return plain(config.input)


def _load_plan(path: Path) -> dict[str, Any] | None:
    try:
        return load_plan(path)
    except (OSError, ValueError):
        return None


def check_existing(config: Config, basedir: str | Path, workdir: str | Path = ".") -> PlanState:
    """Check the config against `plan.json` and the chunk files in `workdir`.

    Raises:
        PlanMismatchError, InputError: the config cannot continue these chunks (one line,
            naming the key or file); nothing was changed.
    """
    from dataforge import source as src

    workdir, basedir = Path(workdir), Path(basedir)
    plan = _load_plan(workdir / layout.PLAN)
    files = layout.chunk_files(workdir)
    keys: dict[int, chunkfile.ChunkKey] = {}
    for index, path in files.items():
        try:
            keys[index] = chunkfile.read_record(path).key
        except chunkfile.ForeignChunk as e:
            if "older dataforge" not in str(e):
                raise PlanMismatchError(f"{e}; move it away") from None
        except FileNotFoundError:
            continue
    state = PlanState(chunks=len(files))
    size = config.chunks.size
    chunk_rel = lambda i: layout.chunk_file(i)  # noqa: E731 - the message names the file
    for index, key in sorted(keys.items()):
        if key.chunk_size != size:
            raise PlanMismatchError(
                f"{chunk_rel(index)} was written with chunks.size={key.chunk_size}, the "
                f"config says {size}; restore chunks.size: {key.chunk_size}, or move results/ "
                "away to start over"
            )
    wanted = _plan_input(config)
    local = src.resolve_local_files(wanted["dataset"], [workdir, basedir])
    fingerprint = None
    if local is not None:
        known = (plan or {}).get("source", {}).get("originals", [])
        fingerprint = src.local_fingerprint(local, known, workdir, basedir)
    fingerprints = {key.fingerprint for key in keys.values()}
    if fingerprint is not None and fingerprints and fingerprints != {fingerprint}:
        raise PlanMismatchError(
            f"input.dataset: {wanted['dataset']!r} is not the input the {len(keys)} chunk files "
            "in results/data/ were generated from (its content changed, or it names other "
            "files); restore it, use another --directory, or move results/ away to start over"
        )
    if plan is None:
        return state
    same_source = (
        fingerprint == plan.get("fingerprint")
        if fingerprint is not None
        else all(wanted[k] == plan["input"].get(k) for k in ("dataset", "config", "split"))
    )
    if fingerprint is None and fingerprints and not same_source:
        raise PlanMismatchError(
            f"input.dataset: {wanted['dataset']!r} (config {wanted['config']!r}, split "
            f"{wanted['split']!r}) is not the input the {len(keys)} chunk files in "
            "results/data/ were generated from; use another --directory, or move results/ "
            "away to start over"
        )
    if same_source and keys:
        cap = wanted["max_examples"]
        rows = min(plan["rows_total"], cap) if cap else plan["rows_total"]
        chunks = math.ceil(rows / size)
        beyond = [i for i in keys if i >= chunks]
        if beyond:
            raise PlanMismatchError(
                f"input.max_examples: {cap} rows make {chunks} chunks, but "
                f"{chunk_rel(max(beyond))} and {len(beyond) - 1} more lie beyond; restore "
                "input.max_examples, or move those chunk files away"
            )
    state.stale = plan_staleness(plan, config, fingerprint, workdir, basedir)
    return state


def plan_staleness(
    plan: dict[str, Any],
    config: Config,
    fingerprint: str | None,
    workdir: Path,
    basedir: Path,
) -> list[str]:
    """Why `plan.json` no longer describes the config's input (empty: it does)."""
    from dataforge import source as src

    reasons = []
    if plan.get("version") != PLAN_FORMAT:
        return [f"plan.json has format {plan.get('version')}, this dataforge writes {PLAN_FORMAT}"]
    wanted = _plan_input(config)
    for k, v in wanted.items():
        if plan["input"].get(k) != v:
            reasons.append(f"input.{k} {plan['input'].get(k)!r} -> {v!r}")
    if plan["chunk_size"] != config.chunks.size:
        reasons.append(f"chunks.size {plan['chunk_size']} -> {config.chunks.size}")
    rollout = bool(config.rollout.function)
    if (plan["prompt_kind"] == "rollout") != rollout:
        reasons.append("rollout.function set" if rollout else "rollout.function unset")
    if fingerprint is not None and fingerprint != plan["fingerprint"]:
        reasons.append("the input files changed")
    for entry in plan["source"]["files"]:
        if not src.locate(entry, workdir, basedir).is_file():
            reasons.append(f"{entry['path']} is gone")
            break
    return reasons


def chunk_staleness(
    plan: dict[str, Any], index: int, settings: dict[str, Any], workdir: str | Path = "."
) -> list[str]:
    """Why chunk `index`'s file does not hold what the plan and `settings` ask for (empty when
    it does, or when there is no file: Snakemake then makes it anyway)."""
    path = layout.chunk_file(index, workdir)
    try:
        have = chunkfile.read_record(path).key
    except FileNotFoundError:
        return []
    except chunkfile.ForeignChunk as e:
        return [str(e).split(" was ", 1)[-1]]
    want = chunkfile.expected_key(plan, index, settings)
    return [] if have.digest == want.digest else chunkfile.differences(have, want)


def mark_stale(name: str, target: str | Path, reasons: list[str], workdir: str | Path = ".") -> str:
    """Write the marker of a stale `target` (newer than it) and return its path."""
    from dataforge.atomic import write_json_atomic

    marker = Path(workdir) / layout.stale_marker(name)
    # The time makes every marker's content new: Snakemake skips an input whose checksum it
    # recorded before, even when the file is newer.
    write_json_atomic(marker, {"target": str(target), "why": reasons, "time": time.time()})
    try:
        newer = max(time.time_ns(), os.stat(Path(workdir) / target).st_mtime_ns + 1_000_000_000)
    except FileNotFoundError:
        newer = time.time_ns()
    os.utime(marker, ns=(newer, newer))
    return str(layout.stale_marker(name))


def clear_stale(name: str, workdir: str | Path = ".") -> None:
    """Remove the marker of `name` (it is no longer stale)."""
    (Path(workdir) / layout.stale_marker(name)).unlink(missing_ok=True)
