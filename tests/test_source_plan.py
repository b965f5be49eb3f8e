"""Input resolution, row-range reading and the plan."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write_prompts

from dataforge import chunkfile
from dataforge import plan as planlib
from dataforge.errors import ConfigError, InputError, PlanMismatchError
from dataforge.generation import ChunkRows
from dataforge.output import build_chunk_table
from dataforge.reader import RowReader
from dataforge.source import describe_local, prompt_kind, resolve_local_files


def make_plan(tmp_path: Path, dataset: str, **kw: object) -> dict:
    args = {
        "dataset": dataset,
        "config": None,
        "split": "train",
        "revision": None,
        "prompt_column": "prompt",
        "max_examples": None,
        "chunk_size": 100,
        "workdir": tmp_path,
        "basedir": tmp_path / "workflow",
    }
    args.update(kw)
    return planlib.make_plan(**args)


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_reads_any_row_range_exactly(tmp_path: Path, suffix: str) -> None:
    # Three files with row groups that do not line up with the ranges asked for.
    for i, n in enumerate([250, 1, 333]):
        path = write_prompts(tmp_path / f"part-{i}{suffix}", n, row_group=64)
        if suffix == ".parquet":
            t = pq.read_table(path)
            pq.write_table(
                t.set_column(2, "extra", pa.array(range(i * 1000, i * 1000 + n))),
                path,
                row_group_size=64,
            )
    plan = make_plan(tmp_path, f"part-*{suffix}")
    assert plan["rows"] == 584
    reader = RowReader(plan["source"], tmp_path)
    full = reader.read(0, 584)
    assert full.num_rows == 584
    for start, end in [(0, 1), (63, 65), (249, 252), (250, 251), (100, 584), (583, 584)]:
        part = reader.read(start, end)
        assert part.to_pylist() == full.slice(start, end - start).to_pylist()


def test_csv_is_prepared_once(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("prompt,n\nhello,1\nworld,2\n")
    plan = make_plan(tmp_path, "in.csv")
    assert plan["rows"] == 2 and plan["prompt_kind"] == "text"
    prepared = list((tmp_path / "results" / ".prepared").glob("*.parquet"))
    assert len(prepared) == 1
    mtime = prepared[0].stat().st_mtime_ns
    assert make_plan(tmp_path, "in.csv")["fingerprint"] == plan["fingerprint"]
    assert prepared[0].stat().st_mtime_ns == mtime


def test_relative_path_falls_back_to_second_search_dir(tmp_path: Path) -> None:
    other = tmp_path / "repo"
    write_prompts(other / "data" / "p.parquet", 5)
    files = resolve_local_files("data/p.parquet", [tmp_path / "work", other])
    assert files == [(other / "data" / "p.parquet").resolve()]


def test_hub_ids_are_not_taken_for_local_paths(tmp_path: Path) -> None:
    assert resolve_local_files("simplescaling/s1K-1.1", [tmp_path]) is None
    with pytest.raises(InputError, match=r"input\.dataset: no file matches 'missing\.parquet'"):
        resolve_local_files("missing.parquet", [tmp_path])


def test_prompt_kinds_and_errors(tmp_path: Path) -> None:
    schema = pa.schema(
        [
            ("text", pa.string()),
            ("msgs", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
            ("n", pa.int64()),
        ]
    )
    assert prompt_kind(schema, "text") == "text"
    assert prompt_kind(schema, "msgs") == "messages"
    with pytest.raises(InputError, match="column 'n' has type int64"):
        prompt_kind(schema, "n")
    with pytest.raises(InputError, match="column 'nope' not found; the input has text, msgs, n"):
        prompt_kind(schema, "nope")


def test_reserved_output_columns_are_refused(tmp_path: Path) -> None:
    pq.write_table(pa.table({"prompt": ["a"], "error": ["x"]}), tmp_path / "in.parquet")
    with pytest.raises(InputError, match="column 'error' is reserved"):
        make_plan(tmp_path, "in.parquet")


def test_files_with_different_schemas_are_refused(tmp_path: Path) -> None:
    pq.write_table(pa.table({"prompt": ["a"]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"prompt": ["a"], "x": [1]}), tmp_path / "b.parquet")
    with pytest.raises(InputError, match="must share one schema"):
        describe_local(sorted(tmp_path.glob("*.parquet")), tmp_path, 100)


def test_chunk_ranges_servers_and_limits(tmp_path: Path) -> None:
    write_prompts(tmp_path / "in.parquet", 1050)
    plan = make_plan(tmp_path, "in.parquet", max_examples=1001)
    assert plan["rows"] == 1001 and plan["rows_total"] == 1050 and plan["chunks"] == 11
    assert planlib.chunk_range(plan, 0) == (0, 100)
    assert planlib.chunk_range(plan, 10) == (1000, 1001)
    assert planlib.chunk_ids(plan)[-1] == "00010"
    assert planlib.server_of("00009", 4) == "00002"
    pq.write_table(pa.table({"prompt": ["x"] * 100_001}), tmp_path / "big.parquet")
    with pytest.raises(ConfigError, match="at most 100000 are supported"):
        make_plan(tmp_path, "big.parquet", chunk_size=1)


def write_chunk_file(plan: dict, index: int, workdir: Path) -> Path:
    """A chunk file of `plan` (no generations) with its record, as the server writes it."""
    start, end = planlib.chunk_range(plan, index)
    rows = RowReader(plan["source"], workdir).read(start, end)
    n = rows.num_rows
    table = build_chunk_table(rows, start, ChunkRows([[]] * n, [None] * n, [False] * n))
    key = chunkfile.expected_key(plan, index, {"model": "m"})
    path = workdir / "results" / "data" / f"chunk-{index:05d}.parquet"
    chunkfile.write_chunk(table, chunkfile.ChunkRecord(key, {}, {"rows": rows.num_rows}), path)
    return path


def test_existing_chunks_of_another_plan_are_refused(tmp_path: Path) -> None:
    write_prompts(tmp_path / "in.parquet", 300)
    plan = make_plan(tmp_path, "in.parquet")
    path = write_chunk_file(plan, 0, tmp_path)
    planlib.check_existing_chunks(plan, tmp_path)  # same plan: fine
    key = chunkfile.read_record(path).key
    assert (key.fingerprint, key.chunk_size, key.chunk, key.start, key.end) == (
        plan["fingerprint"], 100, 0, 0, 100
    )  # fmt: skip
    with pytest.raises(PlanMismatchError, match=r"chunks\.size=100, the config says 50"):
        planlib.check_existing_chunks({**plan, "chunk_size": 50, "chunks": 6}, tmp_path)
    with pytest.raises(PlanMismatchError, match="another input"):
        planlib.check_existing_chunks({**plan, "fingerprint": "other"}, tmp_path)
    write_chunk_file({**plan, "rows": 800, "chunks": 8}, 7, tmp_path)
    with pytest.raises(PlanMismatchError, match=r"chunk-00007\.parquet lies outside the new plan"):
        planlib.check_existing_chunks(plan, tmp_path)
    (tmp_path / "results" / "data" / "chunk-00007.parquet").write_bytes(b"not parquet")
    with pytest.raises(PlanMismatchError, match=r"is not a readable Parquet file.*move it away"):
        planlib.check_existing_chunks(plan, tmp_path)


def test_plan_is_json_and_records_the_input(tmp_path: Path) -> None:
    write_prompts(tmp_path / "in.jsonl", 10, kind="messages")
    plan = make_plan(tmp_path, "in.jsonl")
    assert plan["prompt_kind"] == "messages"
    assert plan["columns"] == ["id", "prompt", "extra"]
    json.dumps(plan)
    assert plan["source"]["originals"][0]["path"] == "in.jsonl"  # relative: the run can move
    assert plan["source"]["originals"][0]["base"] == "workdir"
    RowReader(plan["source"], tmp_path).check_unchanged()
    (tmp_path / "in.jsonl").write_text("changed\n")
    with pytest.raises(InputError, match="changed or vanished during the run"):
        RowReader(plan["source"], tmp_path).check_unchanged()
