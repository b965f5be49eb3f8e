"""The plan: which rows the input has and how they are split into chunks.

`plan.json` pins the input (file digests, or the Hub commit), the prompt column's kind and the
chunk size. Chunk i covers rows [i * size, min((i + 1) * size, rows)). Every chunk file records
the plan's fingerprint and its range, so a new plan that disagrees with chunks already written
(another input, another chunk size) stops before anything is overwritten or mixed.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from dataforge.errors import ConfigError, InputError, PlanMismatchError

PLAN_VERSION = 1
MAX_CHUNKS = 100_000  # chunk ids have five digits
CHUNK_META_KEY = b"dataforge"


def chunk_name(index: int) -> str:
    """The 5-digit id of chunk `index`."""
    return f"{index:05d}"


def chunk_range(plan: dict[str, Any], index: int) -> tuple[int, int]:
    """Global row range [start, end) of chunk `index`."""
    size = plan["chunk_size"]
    return index * size, min((index + 1) * size, plan["rows"])


def chunk_ids(plan: dict[str, Any]) -> list[str]:
    """Ids of every chunk in the plan."""
    return [chunk_name(i) for i in range(plan["chunks"])]


def server_of(chunk: str | int, per_server: int) -> str:
    """The id of the server (group) that chunk `chunk` belongs to: consecutive chunks share one."""
    return chunk_name(int(chunk) // per_server)


def server_ids(plan: dict[str, Any], per_server: int) -> list[str]:
    """Ids of every server group."""
    return [chunk_name(i) for i in range(math.ceil(plan["chunks"] / per_server))]


@functools.lru_cache(maxsize=8)
def _load_cached(path: str, mtime_ns: int, size: int) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_plan(path: str | Path) -> dict[str, Any]:
    """Read `plan.json` (cached while the file is unchanged; the DAG asks for it per job)."""
    st = os.stat(path)
    return _load_cached(str(path), st.st_mtime_ns, st.st_size)


def make_plan(
    *,
    dataset: str,
    config: str | None,
    split: str,
    revision: str | None,
    prompt_column: str,
    max_examples: int | None,
    chunk_size: int,
    search_dirs: list[Path],
    prepared_dir: Path,
    rollout: bool = False,
) -> dict[str, Any]:
    """Resolve the input, check the prompt column and compute the chunks.

    With `rollout` (a `rollout.function` builds the requests from whole rows) the prompt
    column is not needed: the plan's `prompt_kind` is "rollout".

    Raises:
        InputError, ConfigError: one line naming the dataset, column or key.
    """
    from dataforge import source as src

    files = src.resolve_local_files(dataset, search_dirs)
    row_group_rows = min(max(chunk_size, 1000), 100_000)
    if files is not None:
        source = src.describe_local(files, prepared_dir, row_group_rows)
    else:
        source = src.describe_hub(dataset, config, split, revision)
    schema = src.source_schema(source)
    if rollout:
        kind = "rollout"
        src.check_output_columns(schema, src.ROLLOUT_OUTPUT_COLUMNS)
    else:
        kind = src.prompt_kind(schema, prompt_column)
        src.check_output_columns(schema)
    rows_total = sum(f["rows"] for f in source["files"])
    rows = min(rows_total, max_examples) if max_examples else rows_total
    if rows == 0:
        raise InputError(f"input.dataset: {dataset!r} has no rows")
    chunks = math.ceil(rows / chunk_size)
    if chunks > MAX_CHUNKS:
        raise ConfigError(
            f"config: chunks.size {chunk_size} gives {chunks} chunks for {rows} rows; at most "
            f"{MAX_CHUNKS} are supported, raise chunks.size"
        )
    return {
        "version": PLAN_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "input": {
            "dataset": dataset,
            "config": config,
            "split": split,
            "revision": revision,
            "prompt_column": prompt_column,
            "max_examples": max_examples,
        },
        "source": source,
        "fingerprint": source["fingerprint"],
        "columns": schema.names,
        "prompt_kind": kind,
        "rows_total": rows_total,
        "rows": rows,
        "chunk_size": chunk_size,
        "chunks": chunks,
    }


def write_plan(
    path: str | Path,
    input_config: dict[str, Any],
    chunk_size: int,
    search_dirs: list[str | Path],
    rollout: str | None,
) -> None:
    """The plan_chunks rule's work: plan `input_config` (the config's `input`), check it against
    the chunk files already in results/data/ and write the plan to `path` (results/plan.json).
    Prepared (converted) inputs go to results/.prepared/. `rollout` is `rollout.function`: a
    rollout reads whole rows, so no prompt column is needed.

    Raises:
        InputError, ConfigError, PlanMismatchError: one line naming the dataset, key or file.
    """
    from dataforge.atomic import write_json_atomic

    results = Path(path).parent
    plan = make_plan(
        **input_config,
        chunk_size=chunk_size,
        search_dirs=[Path(d) for d in search_dirs],
        prepared_dir=results / ".prepared",
        rollout=bool(rollout),
    )
    check_existing_chunks(plan, results / "data")
    write_json_atomic(path, plan)


def chunk_metadata(plan: dict[str, Any], index: int) -> dict[str, Any]:
    """What a chunk file records about the plan it belongs to."""
    start, end = chunk_range(plan, index)
    return {
        "fingerprint": plan["fingerprint"],
        "chunk_size": plan["chunk_size"],
        "chunk": index,
        "start": start,
        "end": end,
    }


def read_chunk_metadata(path: str | Path) -> dict[str, Any] | None:
    """The plan record stored in a chunk file's Parquet footer (None if absent or unreadable)."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
        return json.loads(meta[CHUNK_META_KEY])
    except Exception:
        return None


def check_existing_chunks(plan: dict[str, Any], data_dir: str | Path) -> None:
    """Refuse a plan that disagrees with chunk files already present.

    Chunks of the same input and chunk size are fine (a changed range, e.g. after changing
    `max_examples`, makes Snakemake rerun just that chunk). Anything else would mix rows.

    Raises:
        PlanMismatchError: naming the first conflicting file.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        return
    for path in sorted(data_dir.glob("chunk-*.parquet")):
        stem = path.stem.removeprefix("chunk-")
        if not stem.isdigit():
            continue
        if int(stem) >= plan["chunks"]:
            raise PlanMismatchError(
                f"{path} lies outside the new plan ({plan['chunks']} chunks of "
                f"{plan['chunk_size']} rows); move it away or restore input.max_examples"
            )
        meta = read_chunk_metadata(path)
        if meta is None:
            raise PlanMismatchError(f"{path} was not written by dataforge; move it away")
        if meta["fingerprint"] != plan["fingerprint"]:
            raise PlanMismatchError(
                f"{path} was generated from another input than {plan['input']['dataset']!r}; "
                "use another --directory, or move results/ away to start over"
            )
        if meta["chunk_size"] != plan["chunk_size"]:
            raise PlanMismatchError(
                f"{path} was written with chunks.size={meta['chunk_size']}, the config says "
                f"{plan['chunk_size']}; restore chunks.size or move results/ away"
            )
