"""The plan: which rows the input has and how they are split into chunks.

`plan.json` pins the input (file digests, or the Hub commit), the prompt column's kind and the
chunk size. Chunk i covers rows [i * size, min((i + 1) * size, rows)). Every chunk file records
the plan's fingerprint and its range (`dataforge.chunkfile`), so a plan that disagrees with
chunks already written (another input, another chunk size) stops before anything is
overwritten or mixed; `dataforge.resume` checks that before any job, this module once more
when the plan is made (a Hub revision can only be resolved then).
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from dataforge import layout
from dataforge.errors import ConfigError, InputError, PlanMismatchError

PLAN_FORMAT = 2  # plan.json's `version`; a plan of another one is made again
MAX_CHUNKS = 100_000  # chunk ids have five digits
chunk_name = layout.chunk_name


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
    workdir: Path,
    basedir: Path,
    rollout: bool = False,
) -> dict[str, Any]:
    """Resolve the input, check the prompt column and compute the chunks.

    With `rollout` (a `rollout.function` builds the requests from whole rows) the prompt
    column is not needed: the plan's `prompt_kind` is "rollout".

    Raises:
        InputError, ConfigError: one line naming the dataset, column or key.
    """
    from dataforge import source as src

    files = src.resolve_local_files(dataset, [workdir, basedir])
    row_group_rows = min(max(chunk_size, 1000), 100_000)
    if files is not None:
        prepared = workdir / layout.PREPARED
        source = src.describe_local(files, prepared, row_group_rows, workdir, basedir)
    else:
        source = src.describe_hub(dataset, config, split, revision)
    first = src.locate(source["files"][0], workdir, basedir)
    schema = src.source_schema(source["format"], first)
    kind = src.check_columns(schema, prompt_column, None, rollout)
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
        "version": PLAN_FORMAT,
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
    basedir: str | Path,
    rollout: str | None,
) -> None:
    """The plan_chunks rule's work: plan `input_config` (the config's `input`), check it against
    the chunk files already in results/data/ and write the plan to `path` (results/plan.json).
    The working directory is the run's; `basedir` the workflow's folder (a relative input is
    looked up in both). `rollout` is `rollout.function`: a rollout reads whole rows, so no
    prompt column is needed.

    Raises:
        InputError, ConfigError, PlanMismatchError: one line naming the dataset, key or file.
    """
    from dataforge.atomic import write_json_atomic

    plan = make_plan(
        **input_config,
        chunk_size=chunk_size,
        workdir=Path.cwd(),
        basedir=Path(basedir),
        rollout=bool(rollout),
    )
    check_existing_chunks(plan, Path.cwd())
    write_json_atomic(path, plan)


def check_existing_chunks(plan: dict[str, Any], workdir: str | Path = ".") -> None:
    """Refuse a plan that disagrees with chunk files already present.

    Chunks of the same input and chunk size are fine (a chunk whose range changed, e.g. after
    raising `max_examples`, is regenerated). Anything else would mix rows.

    Raises:
        PlanMismatchError: naming the first conflicting file.
    """
    from dataforge import chunkfile

    for index, path in layout.chunk_files(workdir).items():
        try:
            key = chunkfile.read_record(path).key
        except FileNotFoundError:
            continue
        except chunkfile.ForeignChunk as e:
            if "older dataforge" in str(e):
                continue  # regenerated
            raise PlanMismatchError(f"{e}; move it away") from None
        if index >= plan["chunks"]:
            raise PlanMismatchError(
                f"{path} lies outside the new plan ({plan['chunks']} chunks of "
                f"{plan['chunk_size']} rows); move it away or restore input.max_examples"
            )
        if key.fingerprint != plan["fingerprint"]:
            raise PlanMismatchError(
                f"{path} was generated from another input than {plan['input']['dataset']!r}; "
                "use another --directory, or move results/ away to start over"
            )
        if key.chunk_size != plan["chunk_size"]:
            raise PlanMismatchError(
                f"{path} was written with chunks.size={key.chunk_size}, the config says "
                f"{plan['chunk_size']}; restore chunks.size or move results/ away"
            )
