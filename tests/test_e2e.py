"""End-to-end runs of the real workflow on the dummy engine (a real HTTP server on 127.0.0.1)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import (
    Workflow,
    base_config,
    check_rows_exactly_once,
    write_prompts,
)
from harness import server_logs, wait_no_engines

pytestmark = pytest.mark.e2e


@pytest.fixture
def done_run(workflow: Workflow) -> Workflow:
    """A finished run: 2,000 rows, 4 chunks, 2 servers."""
    workflow.configure(base_config(write_prompts(workflow.workdir / "in.parquet", 2000)))
    workflow.run()
    return workflow


def test_full_run_writes_every_row_once_with_its_own_answer(done_run: Workflow) -> None:
    wf = done_run
    assert [p.name for p in wf.chunks()] == [f"chunk-{i:05d}.parquet" for i in range(4)]
    table = check_rows_exactly_once(wf, 2000)
    for row, prompt, gens, err in zip(
        table.column("row").to_pylist(),
        table.column("prompt").to_pylist(),
        table.column("generations").to_pylist(),
        table.column("error").to_pylist(),
        strict=True,
    ):
        assert err is None
        assert len(gens) == 1
        assert gens[0]["text"].startswith("Echo: " + " ".join(prompt.split()[:8]))
        assert gens[0]["finish_reason"] in {"stop", "length"}
        assert gens[0]["completion_tokens"] <= 64
        assert row == int(prompt.split()[1])
    stats = wf.stats()
    assert stats["rows"] == 2000 and stats["rows_failed"] == 0 and stats["chunks"] == 4
    completion = sum(g[0]["completion_tokens"] for g in table.column("generations").to_pylist())
    assert stats["completion_tokens"]["total"] == completion
    lengths = [g[0]["completion_tokens"] for g in table.column("generations").to_pylist()]
    for name, q in (("p50", 50), ("p90", 90), ("p99", 99)):  # exact, nearest rank
        assert stats["completion_tokens"][name] == np.percentile(lengths, q, method="inverted_cdf")
    assert "counts" not in stats["completion_tokens"]  # only in the chunk records
    assert stats["requests"]["requests"] == 2000
    assert stats["rows_truncated"] == sum(
        g[0]["finish_reason"] == "length" for g in table.column("generations").to_pylist()
    )
    card = (wf.results / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["configs"][0]["data_files"][0]["path"] == "data/*.parquet"
    assert front["size_categories"] == ["1K<n<10K"]
    # One server per group of two chunks, one engine (the machine's one slot) loaded once.
    logs = server_logs(wf.workdir)
    assert logs.count("group 00000: slot 0's server") == 1
    assert logs.count("group 00001: slot 0's server") == 1
    assert logs.count("starting engine") == 1 and logs.count("chunk 0") == 4
    assert wf.stats()["model_loads"] == 1
    assert wait_no_engines() == []


def test_delete_one_chunk_reruns_that_chunk_alone(done_run: Workflow) -> None:
    wf = done_run
    before = {p.name: p.stat().st_mtime_ns for p in wf.chunks()}
    (wf.results / "data" / "chunk-00002.parquet").unlink()
    dry = wf.run("-n")
    assert "provenance/metadata" not in dry.stdout + dry.stderr  # the service files' note
    assert wf.job_counts() == {
        "serve_model": 1,
        "generate_chunk": 1,
        "aggregate_stats": 1,
        "write_dataset_card": 1,
        "all": 1,
    }
    proc = wf.run()
    assert "were not present when the DAG was created" not in proc.stderr
    after = {p.name: p.stat().st_mtime_ns for p in wf.chunks()}
    assert [k for k in after if after[k] != before.get(k)] == ["chunk-00002.parquet"]
    assert server_logs(wf.workdir).count("starting engine") == 2  # the first run's, this one's
    check_rows_exactly_once(wf, 2000)
    assert wf.job_counts() == {}


def test_engine_setting_change_neither_hangs_nor_reruns(done_run: Workflow) -> None:
    wf = done_run
    config = yaml.safe_load(wf.configfile.read_text())
    config["engine"].update(max_concurrent_requests=7, request_timeout_s=30, max_retries=2)
    wf.configure(config)
    assert wf.job_counts() == {}
    wf.run(timeout=60)
    # A generation setting does rerun every chunk, with one server start per group.
    config["sampling"]["temperature"] = 0.3
    wf.configure(config)
    counts = wf.job_counts()
    assert counts["generate_chunk"] == 4 and counts["serve_model"] == 2
    wf.run(timeout=120)
    assert wf.job_counts() == {}


def test_message_lists_with_system_prompt_and_rollouts(workflow: Workflow) -> None:
    wf = workflow
    wf.configure(
        base_config(
            write_prompts(wf.workdir / "in.jsonl", 120, kind="messages"),
            prompt={"system": "You are terse."},
            sampling={"rollouts": 3},
            chunks={"size": 50},
        )
    )
    wf.run()
    table = check_rows_exactly_once(wf, 120)
    for row, gens in zip(
        table.column("row").to_pylist(), table.column("generations").to_pylist(), strict=True
    ):
        assert len(gens) == 3
        assert all(g["text"].startswith(f"Echo: what is {row} plus one?") for g in gens)
        assert len({g["text"] for g in gens}) > 1 or all(g["completion_tokens"] < 12 for g in gens)
    assert table.column("prompt").type == pa.list_(
        pa.struct([("role", pa.string()), ("content", pa.string())])
    )
    assert wf.stats()["rollouts"] == 360


def test_template_wraps_each_prompt(workflow: Workflow) -> None:
    wf = workflow
    wf.configure(
        base_config(
            write_prompts(wf.workdir / "in.csv.parquet", 60),
            prompt={"template": "Summarize: [[DOCUMENT]]"},
        )
    )
    wf.run()
    table = check_rows_exactly_once(wf, 60)
    for row, gens in zip(
        table.column("row").to_pylist(), table.column("generations").to_pylist(), strict=True
    ):
        assert gens[0]["text"].startswith(f"Echo: Summarize: question {row} ")


def test_empty_and_null_prompts_become_error_rows(workflow: Workflow) -> None:
    wf = workflow
    path = wf.workdir / "in.parquet"
    pq.write_table(
        pa.table(
            {
                "id": ["a", "b", "c", "d"],
                "prompt": ["hello there", "", None, "   "],
                "extra": [0, 1, 2, 3],
            }
        ),
        path,
    )
    wf.configure(base_config(path))
    wf.run()
    table = wf.table()
    errors = table.column("error").to_pylist()
    assert errors[0] is None
    assert all(e.startswith("empty_prompt:") for e in errors[1:])
    stats = wf.stats()
    assert stats["rows"] == 4 and stats["rows_failed"] == 3
    assert stats["rows_failed_by_kind"] == {"empty_prompt": 3}


def test_plan_mismatch_stops_before_touching_chunks(done_run: Workflow) -> None:
    wf = done_run
    before = {p.name: p.stat().st_mtime_ns for p in wf.chunks()}
    config = yaml.safe_load(wf.configfile.read_text())
    config["chunks"]["size"] = 300
    wf.configure(config)
    proc = wf.run(check=False)
    assert proc.returncode != 0
    assert "was written with chunks.size=500, the config says 300" in proc.stderr
    assert {p.name: p.stat().st_mtime_ns for p in wf.chunks()} == before
    # Another input with the same chunk size is refused too.
    config["chunks"]["size"] = 500
    config["input"]["dataset"] = str(
        write_prompts(wf.workdir / "other.parquet", 2000).rename(wf.workdir / "other2.parquet")
    )
    pq.write_table(pa.table({"prompt": ["x"] * 10}), wf.workdir / "other2.parquet")
    wf.configure(config)
    proc = wf.run(check=False)
    assert "is not the input the 4 chunk files in results/data/ were generated from" in proc.stderr
    assert {p.name: p.stat().st_mtime_ns for p in wf.chunks()} == before


def test_growing_max_examples_reruns_only_the_changed_chunk(workflow: Workflow) -> None:
    wf = workflow
    config = base_config(write_prompts(wf.workdir / "in.parquet", 2000))
    config["input"]["max_examples"] = 750
    wf.configure(config)
    wf.run()
    first = {p.name: p.stat().st_mtime_ns for p in wf.chunks()}
    assert len(first) == 2
    config["input"]["max_examples"] = 1000
    wf.configure(config)
    wf.run()
    after = {p.name: p.stat().st_mtime_ns for p in wf.chunks()}
    assert after["chunk-00000.parquet"] == first["chunk-00000.parquet"]
    assert after["chunk-00001.parquet"] != first["chunk-00001.parquet"]
    check_rows_exactly_once(wf, 1000)


BAD_INPUTS = {
    "missing dataset": ({"input": {"dataset": "nowhere/*.parquet"}}, "input.dataset: no file"),
    "missing column": ({"input": {"prompt_column": "question"}}, "column 'question' not found"),
    "column type": ({"input": {"prompt_column": "extra"}}, "column 'extra' has type int64"),
    "template marker": ({"prompt": {"template": "Summarize"}}, "must contain [[DOCUMENT]]"),
    "chunk size": ({"chunks": {"size": 0}}, "chunks.size: 0 is less than the minimum of 1"),
    "unknown key": ({"sampling": {"temprature": 0.5}}, "unknown key sampling.temprature"),
    "endpoint url": ({"engine": {"kind": "endpoint"}}, "engine.url is required"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_fails_with_one_clear_line_and_no_output(workflow: Workflow, case: str) -> None:
    wf = workflow
    config = base_config(write_prompts(wf.workdir / "in.parquet", 50))
    override, expected = BAD_INPUTS[case]
    for key, value in override.items():
        config.setdefault(key, {}).update(value)
    wf.configure(config)
    proc = wf.run(check=False)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.startswith("dataforge: ")]
    assert lines and expected in lines[0], proc.stderr[-3000:]
    assert not (wf.results / "data").exists()


def test_template_with_message_lists_is_refused_before_generation(workflow: Workflow) -> None:
    wf = workflow
    wf.configure(
        base_config(
            write_prompts(wf.workdir / "in.jsonl", 20, kind="messages"),
            prompt={"template": "Say: [[DOCUMENT]]"},
        )
    )
    proc = wf.run(check=False)
    assert proc.returncode != 0
    assert "prompt.template cannot be used with message-list prompts" in proc.stderr
    assert not (wf.results / "data").exists()


def test_default_input_runs_from_another_directory(tmp_path: Path) -> None:
    wf = Workflow(tmp_path)
    wf.configure({"engine": {"kind": "dummy"}, "model": {"name": "dummy"}})
    wf.run()
    stats = wf.stats()
    assert stats["rows"] == 60 and stats["rows_failed"] == 0
    plan = json.loads((wf.results / "plan.json").read_text())
    assert plan["source"]["originals"][0]["path"].endswith("data/prompts.jsonl")
