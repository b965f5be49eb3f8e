"""Input resolution, row-range reading and the plan."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write_prompts

from dataforge import plan as planlib
from dataforge.errors import ConfigError, InputError, PlanMismatchError
from dataforge.output import build_chunk_table, write_chunk
from dataforge.source import RowReader, describe_local, prompt_kind, resolve_local_files


def make_plan(tmp_path: Path, dataset: str, **kw: object) -> dict:
    args = {
        "dataset": dataset,
        "config": None,
        "split": "train",
        "revision": None,
        "prompt_column": "prompt",
        "max_examples": None,
        "chunk_size": 100,
        "search_dirs": [tmp_path],
        "prepared_dir": tmp_path / ".prepared",
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
    reader = RowReader(plan["source"])
    full = reader.read(0, 584)
    assert full.num_rows == 584
    for start, end in [(0, 1), (63, 65), (249, 252), (250, 251), (100, 584), (583, 584)]:
        part = reader.read(start, end)
        assert part.to_pylist() == full.slice(start, end - start).to_pylist()


def test_csv_is_prepared_once(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("prompt,n\nhello,1\nworld,2\n")
    plan = make_plan(tmp_path, "in.csv")
    assert plan["rows"] == 2 and plan["prompt_kind"] == "text"
    prepared = list((tmp_path / ".prepared").glob("*.parquet"))
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
    assert planlib.server_ids(plan, 4) == ["00000", "00001", "00002"]
    assert planlib.server_of("00009", 4) == "00002"
    pq.write_table(pa.table({"prompt": ["x"] * 100_001}), tmp_path / "big.parquet")
    with pytest.raises(ConfigError, match="at most 100000 are supported"):
        make_plan(tmp_path, "big.parquet", chunk_size=1)


def test_existing_chunks_of_another_plan_are_refused(tmp_path: Path) -> None:
    write_prompts(tmp_path / "in.parquet", 300)
    plan = make_plan(tmp_path, "in.parquet")
    data = tmp_path / "results" / "data"
    rows = RowReader(plan["source"]).read(0, 100)
    table = build_chunk_table(rows, 0, [[]] * 100, [None] * 100, planlib.chunk_metadata(plan, 0))
    write_chunk(table, data / "chunk-00000.parquet")
    planlib.check_existing_chunks(plan, data)  # same plan: fine
    meta = planlib.read_chunk_metadata(data / "chunk-00000.parquet")
    assert meta == {
        "fingerprint": plan["fingerprint"],
        "chunk_size": 100,
        "chunk": 0,
        "start": 0,
        "end": 100,
    }
    with pytest.raises(PlanMismatchError, match=r"chunks\.size=100, the config says 50"):
        planlib.check_existing_chunks({**plan, "chunk_size": 50, "chunks": 6}, data)
    with pytest.raises(PlanMismatchError, match="another input"):
        planlib.check_existing_chunks({**plan, "fingerprint": "other"}, data)
    write_chunk(table, data / "chunk-00007.parquet")
    with pytest.raises(PlanMismatchError, match=r"chunk-00007\.parquet lies outside the new plan"):
        planlib.check_existing_chunks(plan, data)


def test_plan_is_json_and_records_the_input(tmp_path: Path) -> None:
    write_prompts(tmp_path / "in.jsonl", 10, kind="messages")
    plan = make_plan(tmp_path, "in.jsonl")
    assert plan["prompt_kind"] == "messages"
    assert plan["columns"] == ["id", "prompt", "extra"]
    json.dumps(plan)
    (tmp_path / "in.jsonl").write_text("changed\n")
    with pytest.raises(InputError, match="changed or vanished since the plan"):
        RowReader(plan["source"]).check_unchanged()
