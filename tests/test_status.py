"""`dataforge status`: progress and ETA from what is on disk."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from conftest import Workflow, base_config, fake_chunk, write_prompts

from dataforge.status import collect, render

DATAFORGE = str(Path(sys.executable).parent / "dataforge")


def fake_run(folder: Path, chunks: int, finished: list[tuple[float, float]]) -> None:
    """A results/ folder with a plan of `chunks` chunks of 10 rows and the given chunks done
    (started, finished), each with 100 output tokens and 1 failed row."""
    results = folder / "results"
    (results / "data").mkdir(parents=True)
    (results / "plan.json").write_text(json.dumps({"chunks": chunks, "rows": 10 * chunks}))
    for i, (start, end) in enumerate(finished):
        stats = {"rows": 10, "rows_failed": 1, "started": start, "finished": end,
                 "completion_tokens": {"total": 100}}  # fmt: skip
        fake_chunk(folder, i, stats)
    # a file that is not a chunk of this dataforge does not count
    (results / "data" / f"chunk-{len(finished):05d}.parquet").write_bytes(b"x")


def test_numbers_and_eta_from_finished_chunks(tmp_path: Path) -> None:
    fake_run(tmp_path, 10, [(1000.0, 1000.0 + 30 * (i + 1)) for i in range(4)])
    p = collect(tmp_path, window_s=300, now=1120.0)
    assert (p["chunks_done"], p["rows_done"], p["rows_failed"]) == (4, 40, 4)
    assert p["chunks_per_min"] == 2.0  # 4 chunks in 120 s
    assert p["output_tokens_per_s"] == 400 / 120
    assert p["eta_s"] == 180.0  # 6 chunks left at 2 per minute
    text = render(tmp_path, p)
    assert "chunks  4 / 10 (40.0%)   rows 40 / 100   failed 4" in text
    assert "ETA 3 min 00 s" in text
    # only the window counts: 3 chunks finished in the last 60 s, so 6 left take 2 minutes
    assert collect(tmp_path, window_s=60, now=1120.0)["eta_s"] == 120.0
    assert render(tmp_path / "none", collect(tmp_path / "none")).endswith(
        "not planned yet (no results/plan.json)"
    )


def status(workdir: Path) -> dict:
    out = subprocess.run(
        [DATAFORGE, "status", str(workdir), "--json"], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out)


def test_status_during_and_after_a_run_with_an_eta_within_20_percent(workflow: Workflow) -> None:
    # 10 chunks of 5 rows, one group; 5 requests at a time of 2 s each: a chunk every ~2 s.
    workflow.configure(
        base_config(
            write_prompts(workflow.workdir / "in.parquet", 50),
            chunks={"size": 5, "per_server": 10},
            engine={"max_concurrent_requests": 5, "dummy": {"latency_s": 2}},
        )
    )
    proc = workflow.start()
    try:
        data = workflow.results / "data"
        deadline = time.monotonic() + 120
        while len(list(data.glob("chunk-*.parquet"))) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        mid = status(workflow.workdir)
        asked = time.monotonic()
        while len(list(data.glob("chunk-*.parquet"))) < 10 and time.monotonic() < deadline:
            time.sleep(0.1)
        actual = time.monotonic() - asked
        assert proc.wait(timeout=120) == 0
    finally:
        proc.kill()
    assert 4 <= mid["chunks_done"] < 10 and mid["rows_done"] == 5 * mid["chunks_done"]
    assert abs(mid["eta_s"] - actual) <= 0.2 * actual, (mid["eta_s"], actual)
    after = subprocess.run(
        [DATAFORGE, "status", str(workflow.workdir)], capture_output=True, text=True, check=True
    ).stdout
    assert "chunks  10 / 10 (100.0%)   rows 50 / 50   failed 0" in after and "done:" in after
