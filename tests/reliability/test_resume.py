"""Resume integrity: every chunk holds what stats.json and the card say, whatever interrupted
the run or happened to Snakemake's records; interrupts stop a run at once; a refused change
touches nothing; a run directory can move; settings that change no chunk start no engine.

Each scenario is a real `snakemake` run on the dummy engine, which writes the temperature it
was asked for into every answer (`t=0.7`), so the test reads the settings each row was really
generated with.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import Workflow, base_config, check_rows_exactly_once, write_prompts
from harness import complete_chunks, server_logs, wait_no_leftovers

pytestmark = [pytest.mark.e2e]

CHUNKS, SIZE = 12, 50
STOP_WITHIN_S = 10.0  # the bound without a vLLM engine


def interruptible_config(wf: Workflow, temperature: float) -> dict:
    """12 chunks of 50 rows, 3 per server, each chunk about a second long."""
    return base_config(
        write_prompts(wf.workdir / "in.parquet", CHUNKS * SIZE),
        chunks={"size": SIZE, "per_server": 3},
        engine={"max_concurrent_requests": 10, "dummy": {"latency_s": 0.2}},
        sampling={"temperature": temperature},
    )


def temperatures(wf: Workflow) -> set[str]:
    """The temperatures the engine was asked for, read from every row's answer."""
    texts = [g[0]["text"] for g in wf.table().column("generations").to_pylist()]
    return {next(w for w in t.split() if w.startswith("t=")) for t in texts}


def interrupt(wf: Workflow, mode: str, after_chunks: int = 3) -> float:
    """Start a run, signal it once `after_chunks` chunk files exist; return the seconds from the
    signal to Snakemake's exit."""
    log = wf.workdir / "interrupted.log"
    proc = wf.start(log=log)
    deadline = time.monotonic() + 120
    while len(wf.chunks()) < after_chunks and time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        time.sleep(0.02)
    sig = signal.SIGTERM if mode == "sigterm-main" else signal.SIGINT
    t0 = time.monotonic()
    (os.killpg if mode in ("ctrl-c-group", "metadata-deleted") else os.kill)(proc.pid, sig)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"{mode}: Snakemake still running 60 s after the signal")
    took = time.monotonic() - t0
    out = log.read_text()
    assert proc.returncode != 0 and len(wf.chunks()) < CHUNKS, out[-3000:]
    assert "Traceback" not in out and "RuleException" not in out, out[-3000:]
    assert f"dataforge: {sig.name}: stopping the running jobs" in out, out[-3000:]
    assert "chunks done; run the same command again" in out, out[-3000:]
    return took


@pytest.mark.parametrize(
    "mode", ["ctrl-c-group", "sigint-main", "sigterm-main", "metadata-deleted"]
)
def test_every_row_holds_the_settings_stats_and_card_give(workflow: Workflow, mode: str) -> None:
    wf = workflow
    config = interruptible_config(wf, 0.7)
    wf.configure(config)
    took = interrupt(wf, mode)
    assert took < STOP_WITHIN_S, f"{mode}: {took:.1f} s from the signal to the exit"
    assert wait_no_leftovers(wf.workdir) == [], f"{mode}: processes outlived the run"
    done = complete_chunks(wf, SIZE)  # whole files only
    if mode == "metadata-deleted":
        shutil.rmtree(wf.workdir / ".snakemake" / "metadata")
    wf.run(timeout=120)  # the plain rerun: the lock was released, no --unlock
    assert complete_chunks(wf, SIZE) == set(range(CHUNKS)) and done
    assert temperatures(wf) == {"t=0.7"}
    # Another temperature: every chunk is listed and regenerated, however it was written.
    config["sampling"]["temperature"] = 0.9
    wf.configure(config)
    assert wf.job_counts()["generate_chunk"] == CHUNKS
    proc = wf.run(timeout=120)
    check_rows_exactly_once(wf, CHUNKS * SIZE)
    assert temperatures(wf) == {"t=0.9"}, mode
    # The progress line counts only chunks made with the config's settings: it starts at 0.
    lines = [x for x in proc.stderr.splitlines() if x.startswith("dataforge: [")]
    assert lines[0].startswith(f"dataforge: [....................] 0% chunks 0/{CHUNKS},"), lines
    assert lines[-1].startswith(f"dataforge: [####################] 100% chunks {CHUNKS}/"), lines
    stats = wf.stats()
    assert stats["provenance"]["sampling"]["temperature"] == 0.9
    assert stats["chunks"] == CHUNKS and stats["rows"] == CHUNKS * SIZE
    assert "temperature=0.9" in (wf.results / "README.md").read_text()
    assert wf.job_counts() == {}


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under `folder`: its content digest and mtime."""
    return {
        str(p.relative_to(folder)): (
            hashlib.sha256(p.read_bytes()).hexdigest(),
            p.stat().st_mtime_ns,
        )
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def finished(workflow: Workflow) -> Workflow:
    """A finished run: 2,000 rows in 4 chunks of 500, 2 per server."""
    workflow.configure(base_config(write_prompts(workflow.workdir / "in.parquet", 2000)))
    workflow.run()
    return workflow


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"chunks": {"size": 250}}, "was written with chunks.size=500, the config says 250"),
        ({"input": {"max_examples": 1200}}, "input.max_examples: 1200 rows make 3 chunks"),
    ],
)
def test_a_refused_change_touches_nothing(finished: Workflow, change: dict, expected: str) -> None:
    wf = finished
    before = snapshot(wf.results)
    config = yaml.safe_load(wf.configfile.read_text())
    for key, value in change.items():
        config[key].update(value)
    wf.configure(config)
    for args in (("-n",), ()):
        proc = wf.run(*args, check=False)
        lines = [x for x in proc.stderr.splitlines() if x.startswith("dataforge: ")]
        assert proc.returncode != 0 and len(lines) == 1 and expected in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr and "100%" not in proc.stderr
        assert snapshot(wf.results) == before, "a refused change touched results/"
    assert not (wf.workdir / "logs" / "plan_chunks.log").read_text().count("chunks.size=")
    status = subprocess.run(
        [str(Path(os.sys.executable).parent / "dataforge"), "status", str(wf.workdir), "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(status.stdout)["chunks_done"] == 4


def test_settings_that_change_no_chunk_rerun_nothing_and_start_no_engine(
    finished: Workflow,
) -> None:
    wf = finished
    before = snapshot(wf.results / "data")
    config = yaml.safe_load(wf.configfile.read_text())
    config["chunks"]["per_server"] = 4
    config["engine"].update(max_concurrent_requests=7, request_timeout_s=30, max_retries=2)
    config["monitor"] = {"progress": False, "interval_s": 10}
    wf.configure(config)
    assert wf.job_counts() == {}
    shutil.rmtree(wf.workdir / ".snakemake" / "metadata")  # the footers decide, not these
    assert wf.job_counts() == {}
    wf.run()
    assert server_logs(wf.workdir).count("starting engine") == 1  # the first run's
    assert snapshot(wf.results / "data") == before
    # a chunk whose footer says other settings is regenerated (results copied elsewhere,
    # .snakemake/ gone): the content settings decide, here the prompt template
    config["prompt"] = {"template": "Q: [[DOCUMENT]]"}
    wf.configure(config)
    assert wf.job_counts()["generate_chunk"] == 4


def test_a_moved_run_directory_resumes(tmp_path: Path) -> None:
    run1 = tmp_path / "run1"
    wf = Workflow(run1)
    write_prompts(run1 / "prompts.jsonl", 1000)
    config = base_config(Path("prompts.jsonl"), chunks={"size": 250, "per_server": 4})
    config["input"]["dataset"] = "prompts.jsonl"  # relative: looked up in the run directory
    wf.configure(config)
    wf.run()
    (run1 / "results" / "data" / "chunk-00001.parquet").unlink()
    run2 = tmp_path / "run2"
    run1.rename(run2)
    wf = Workflow(run2)
    kept = {p.name: p.stat().st_mtime_ns for p in wf.chunks()}
    assert wf.job_counts() == {
        "serve_model": 1,
        "generate_chunk": 1,
        "aggregate_stats": 1,
        "write_dataset_card": 1,
        "all": 1,
    }
    wf.run()
    check_rows_exactly_once(wf, 1000)
    assert {p.name: p.stat().st_mtime_ns for p in wf.chunks() if p.name in kept} == kept
    # a copy elsewhere, without .snakemake/, has nothing to do
    copy = tmp_path / "copy"
    shutil.copytree(run2, copy, ignore=shutil.ignore_patterns(".snakemake"))
    assert Workflow(copy).job_counts() == {}
    # an input that really changed is found before any job, with what to do
    before = snapshot(copy / "results")
    write_prompts(copy / "prompts.jsonl", 1001)
    proc = Workflow(copy).run("-n", check=False)
    assert proc.returncode != 0
    assert "input.dataset: 'prompts.jsonl' is not the input the 4 chunk files" in proc.stderr
    assert "move results/ away to start over" in proc.stderr
    assert snapshot(copy / "results") == before


def test_a_moved_input_with_the_same_content_only_replans(finished: Workflow) -> None:
    wf = finished
    kept = {p.name: p.stat().st_mtime_ns for p in wf.chunks()}
    config = yaml.safe_load(wf.configfile.read_text())
    (wf.workdir / "in.parquet").rename(wf.workdir / "moved.parquet")
    config["input"]["dataset"] = str(wf.workdir / "moved.parquet")
    wf.configure(config)
    counts = wf.job_counts()
    assert counts.get("plan_chunks") == 1 and "generate_chunk" not in counts, counts
    wf.run()
    assert {p.name: p.stat().st_mtime_ns for p in wf.chunks()} == kept
    assert wf.job_counts() == {}
    plan = json.loads((wf.results / "plan.json").read_text())
    assert plan["input"]["dataset"].endswith("moved.parquet")
