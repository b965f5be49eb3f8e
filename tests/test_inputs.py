"""Real-shaped inputs: JSON arrays, compressed text files, folders mixing them, templates that
insert several columns, and input errors found before any job (`-n` too)."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import Workflow, base_config

from dataforge import formats
from dataforge.errors import ConfigError, InputError
from dataforge.prompts import build_messages, render, template_columns
from dataforge.source import check_local_input

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
ALPACA = json.loads((DATA / "alpaca.json").read_text())
TEMPLATE = "[[DOCUMENT]]\n\nInput: [[input]]"


def rows_once(wf: Workflow, n: int) -> pa.Table:
    """The run's rows, checked to be every input row exactly once, in order."""
    table = wf.table()
    assert table.column("row").to_pylist() == list(range(n))
    return table


def echo_of(content: str) -> str:
    """The start of the dummy engine's answer to a user message (its first 8 words)."""
    return " ".join(["Echo:", *content.split()[:8], "|"])


@pytest.mark.parametrize(
    "name", ["alpaca.json", "alpaca.jsonl.gz", "alpaca.jsonl.zst", "alpaca.csv", "folder"]
)
def test_real_shaped_inputs_run_with_a_two_column_template(workflow: Workflow, name: str) -> None:
    wf = workflow
    if name == "folder":  # a JSON array beside compressed JSON Lines, found recursively
        (wf.workdir / "in" / "more").mkdir(parents=True)
        shutil.copy(DATA / "alpaca.json", wf.workdir / "in" / "a.json")
        shutil.copy(DATA / "alpaca.jsonl.gz", wf.workdir / "in" / "more" / "b.jsonl.gz")
        dataset, expected = wf.workdir / "in", ALPACA + ALPACA
    else:
        dataset, expected = DATA / name, ALPACA
    config = base_config(dataset, prompt={"template": TEMPLATE})
    config["input"]["prompt_column"] = "instruction"
    config["chunks"] = {"size": 15, "per_server": 2}
    wf.configure(config)
    assert "plan_chunks" in wf.job_counts()  # -n checks the input, reading its first rows
    wf.run()
    table = rows_once(wf, len(expected))
    assert table.column("instruction").to_pylist() == [r["instruction"] for r in expected]
    assert table.column("input").to_pylist() == [r["input"] for r in expected]
    for row, gens in zip(expected, table.column("generations").to_pylist(), strict=True):
        sent = f"{row['instruction']}\n\nInput: {row['input']}"
        assert gens[0]["text"].startswith(echo_of(sent)), (sent, gens[0]["text"])
    assert wf.stats()["rows_failed"] == 0


@pytest.mark.parametrize("codec", ["gzip", "bz2", "xz", "zstd", None])
def test_every_compression_streams_the_same_rows(tmp_path: Path, codec: str | None) -> None:
    lines = "".join(json.dumps(r) + "\n" for r in ALPACA).encode()
    suffix = {"gzip": ".gz", "bz2": ".bz2", "xz": ".xz", "zstd": ".zst", None: ""}[codec]
    path = tmp_path / f"rows.jsonl{suffix}"
    if codec == "zstd":
        with pa.output_stream(str(path), compression="zstd") as f:
            f.write(lines)
    else:
        compress = {"gzip": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}
        path.write_bytes(compress[codec](lines) if codec else lines)
    assert formats.split_name(path.name) == ("json", codec)
    rows = [r for b in formats.batches(path, block_bytes=512) for r in b.to_pylist()]
    assert rows == ALPACA


def test_json_arrays_stream_in_blocks_typed_like_json_lines(tmp_path: Path) -> None:
    rows = [{"q": f"question {i}", "n": i, "tags": ["a"] * (i % 3)} for i in range(2000)]
    path = tmp_path / "rows.json"
    path.write_text("\ufeff  \n" + json.dumps(rows, indent=1))  # a BOM and blank lines first
    assert formats.is_json_array(path)
    blocks = list(formats.batches(path, block_bytes=4096))
    assert len(blocks) > 10  # streamed, not loaded whole
    assert [r for b in blocks for r in b.to_pylist()] == rows
    assert formats.first_schema(path) == blocks[0].schema
    lines = tmp_path / "rows.jsonl"
    lines.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert not formats.is_json_array(lines)
    assert formats.first_schema(lines) == formats.first_schema(path)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_text_is_cut_into_whole_records_whatever_their_length(tmp_path: Path, fmt: str) -> None:
    """Blocks end at a record's end: a CSV value with newlines and doubled quotes, or a record
    longer than the block, is read whole (pyarrow's own readers refuse the latter)."""
    import pyarrow.csv as pacsv

    rows = [
        {"id": i, "q": 'say "hi"\nthen, go' if i % 7 == 0 else ("x" * 5000 if i == 50 else f"q{i}")}
        for i in range(300)
    ]
    path = tmp_path / f"rows.{fmt}.gz"
    if fmt == "csv":
        with pa.output_stream(str(path), compression="gzip") as f:
            pacsv.write_csv(pa.Table.from_pylist(rows), f)
    else:
        path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    blocks = list(formats.batches(path, block_bytes=256))
    assert len(blocks) > 5 and max(b.nbytes for b in blocks) > 5000  # the long one, whole
    assert [r for b in blocks for r in b.to_pylist()] == rows
    assert {b.schema for b in blocks} == {pa.schema([("id", pa.int64()), ("q", pa.string())])}
    target = tmp_path / "out.parquet"
    formats.convert_to_parquet([path], target, row_group_rows=64)
    meta = pq.ParquetFile(target).metadata
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert sizes == [64, 64, 64, 64, 44]  # whole row groups, whatever the blocks were
    assert pq.read_table(target).to_pylist() == rows


@pytest.mark.parametrize("name", ["rows.csv", "rows.jsonl"])
def test_bad_text_after_the_first_block_is_named_by_line(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    if name.endswith(".csv"):
        path.write_bytes(b"q\n" + b"".join(b"question %d\n" % i for i in range(300)) + b"\xff\n")
    else:
        good = b"".join(b'{"q": "question %d"}\n' % i for i in range(300))
        path.write_bytes(good + b'{"q": "\xff"}\n')
    with pytest.raises(InputError) as e:
        list(formats.batches(path, block_bytes=256))
    line = 302 if name.endswith(".csv") else 301
    assert f"{path} line {line} is not valid UTF-8" in str(e.value)


@pytest.mark.parametrize("name", ["rows.jsonl", "rows.json"])
def test_columns_after_the_first_block_are_refused_naming_the_file(
    tmp_path: Path, name: str
) -> None:
    path = tmp_path / name
    rows = [{"q": f"question {i}"} for i in range(200)] + [{"q": "late", "extra": 1}]
    if name.endswith(".json"):
        path.write_text(json.dumps(rows, indent=1))
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(InputError) as e:
        list(formats.batches(path, block_bytes=512))
    assert str(e.value) == (
        f"input.dataset: {path}: column(s) 'extra' first appear after the first 1 MB of rows, "
        "whose columns are the dataset's; give the first rows every column (null where empty)"
    )


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("bad.json", b'[{"q": "ok"},\n {"q": "\xff"}]', "bad.json line 2 is not valid UTF-8"),
        ("numbers.json", b"[1, 2]", "item 1 of the JSON array in"),
        ("cut.json", b'[{"q": "ok"}, {"q', "cannot read"),
        ("cut.jsonl.gz", gzip.compress(b'{"q": "ok"}\n')[:-9], "cannot read"),
        ("notes.txt", b"hello", "is not a file dataforge reads; use .parquet, .jsonl, .json"),
        ("rows.parquet.gz", b"x", "is not a file dataforge reads"),
    ],
)
def test_unreadable_files_are_named(
    tmp_path: Path, name: str, content: bytes, expected: str
) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(InputError, match=r"^input\.dataset: ") as e:
        check_local_input(name, "q", None, False, [tmp_path])
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_folders_and_absolute_paths_get_true_messages(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.md").write_text("x")
    with pytest.raises(InputError, match=r"the folder .*docs holds no file dataforge reads"):
        check_local_input(str(tmp_path / "docs"), "q", None, False, [Path("/elsewhere")])
    with pytest.raises(InputError) as e:
        check_local_input(str(tmp_path / "gone.jsonl.gz"), "q", None, False, [Path("/x")])
    assert str(e.value) == f"input.dataset: no file matches '{tmp_path / 'gone.jsonl.gz'}'"


def test_templates_insert_columns_once_and_nulls_as_empty() -> None:
    assert template_columns("[[DOCUMENT]] [[input]] [[b]] [[input]]") == ["input", "b"]
    assert template_columns(None) == []
    # Inserted text that looks like a placeholder stays as it is.
    assert render("[[DOCUMENT]]/[[a]]", "[[a]]", {"a": "[[DOCUMENT]]"}) == "[[a]]/[[DOCUMENT]]"
    assert render("[[DOCUMENT]]: [[a]].", "x", {"a": None}) == "x: ."
    assert build_messages("q", "text", None, "[[a]] then [[DOCUMENT]]", {"a": 3}) == [
        {"role": "user", "content": "3 then q"}
    ]


def test_a_template_naming_a_missing_column_is_refused(tmp_path: Path) -> None:
    shutil.copy(DATA / "alpaca.jsonl.zst", tmp_path)
    with pytest.raises(ConfigError) as e:
        check_local_input("alpaca.jsonl.zst", "instruction", "[[inptu]]", False, [tmp_path])
    assert str(e.value).startswith("prompt.template: [[inptu]] names no input column; the input")
    check_local_input("alpaca.jsonl.zst", "instruction", "[[input]]", False, [tmp_path])


# Bad inputs stop `snakemake` and `snakemake -n` alike, before any job: one `dataforge:` line,
# no traceback, nothing written.
BAD_RUNS = {
    "template column": (
        {"prompt": {"template": "[[DOCUMENT]] [[context]]"}},
        "prompt.template: [[context]] names no input column",
    ),
    "prompt column": ({"input": {"prompt_column": "question"}}, "column 'question' not found"),
    "unreadable file": ({"input": {"dataset": "notes.txt"}}, "notes.txt is not a file dataforge"),
    "bad JSON array": ({"input": {"dataset": "bad.json"}}, "bad.json line 1 is not valid UTF-8"),
    "empty folder": ({"input": {"dataset": "empty"}}, "empty holds no file dataforge reads"),
}


@pytest.mark.parametrize("case", sorted(BAD_RUNS))
def test_input_errors_stop_before_any_job_in_one_line(workflow: Workflow, case: str) -> None:
    wf = workflow
    (wf.workdir / "notes.txt").write_text("hello")
    (wf.workdir / "bad.json").write_bytes(b'[{"instruction": "\xff"}]')
    (wf.workdir / "empty").mkdir()
    config = base_config(DATA / "alpaca.json")
    config["input"]["prompt_column"] = "instruction"
    override, expected = BAD_RUNS[case]
    for key, value in override.items():
        config.setdefault(key, {}).update(value)
    wf.configure(config)
    for args in (("-n",), ()):
        proc = wf.run(*args, check=False)
        assert proc.returncode != 0
        lines = [line for line in proc.stderr.splitlines() if line.startswith("dataforge: ")]
        assert len(lines) == 1 and expected in lines[0], proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr and "message: None" not in proc.stderr
        assert not wf.results.exists()


def test_dry_run_before_the_plan_says_how_to_see_the_chunks(workflow: Workflow) -> None:
    wf = workflow
    config = base_config(DATA / "alpaca.json")
    config["input"]["prompt_column"] = "instruction"
    config["chunks"] = {"size": 10}
    wf.configure(config)
    proc = wf.run("-n")
    lines = [line for line in proc.stderr.splitlines() if line.startswith("dataforge: ")]
    assert lines == [
        "dataforge: no plan yet, so -n lists no chunk job: `snakemake results/plan.json"
        " <your options>` reads the input and writes the plan alone (no engine starts);"
        " -n then lists every chunk"
    ], proc.stderr[-3000:]
    assert not wf.results.exists()
    wf.run("results/plan.json", "--cores", "1")  # the command the line gives
    assert not (wf.results / "data").exists()
    assert not list(wf.results.glob(".serve/server-*"))  # no server started
    proc = wf.run("-n")
    assert "no plan yet" not in proc.stderr
    assert wf.job_counts()["generate_chunk"] == -(-len(ALPACA) // 10)


def test_a_failed_plan_job_prints_its_line_and_no_snakemake_report(workflow: Workflow) -> None:
    wf = workflow
    config = base_config(DATA / "alpaca.json")
    config["input"] = {"dataset": "someone/absent-prompts", "prompt_column": "instruction"}
    wf.configure(config)
    proc = wf.run(check=False, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.startswith("dataforge: ")]
    assert lines[0].startswith("dataforge: input.dataset: cannot load 'someone/absent-prompts'")
    assert "without network, download the dataset's files elsewhere" in lines[0]
    assert lines[1:] == ["dataforge: details in logs/plan_chunks.log"]
    for noise in ("Traceback", "RuleException", "message: None", "Error in rule", "WorkflowError"):
        assert noise not in proc.stderr, proc.stderr[-3000:]
    assert "Error in rule plan_chunks" in "".join(  # Snakemake's own log keeps the report
        p.read_text() for p in (wf.workdir / ".snakemake" / "log").glob("*.log")
    )
    assert not (wf.results / "plan.json").exists()


def test_the_alpaca_example_runs_as_documented(tmp_path: Path) -> None:
    config = yaml.safe_load((REPO / "config" / "examples" / "alpaca.yaml").read_text())
    config.update(engine={"kind": "dummy"}, model={"name": "dummy"})  # the tests' engine
    wf = Workflow(tmp_path)  # another directory: the sample is found beside the Snakefile
    wf.configure(config)
    wf.run()
    table = rows_once(wf, len(ALPACA))
    for row, gens in zip(ALPACA, table.column("generations").to_pylist(), strict=True):
        assert gens[0]["text"].startswith(echo_of(f"{row['instruction']}\n\n{row['input']}"))
