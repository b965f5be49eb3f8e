"""Process kills at random points of a 20-chunk run, each followed by the README's rerun
commands: every input row ends up in the output exactly once, no chunk file is ever partial,
a finished chunk is never lost, and no process of the run outlives it.

Modes: kill -9 of Snakemake's whole process group (a crash, `scancel` of an interactive job),
SIGINT to the group (Ctrl-C), SIGTERM to the Snakemake process (`kill PID`), and kill -9 of
the Snakemake process alone (the OOM killer), which orphans the servers and chunk jobs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from conftest import Workflow, base_config, check_rows_exactly_once, write_prompts
from harness import SEED, complete_chunks, rng, wait_no_leftovers

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHUNKS, SIZE = 20, 100

MODES = {
    # mode: (signal, whole process group?, kill points)
    "kill9-group": (signal.SIGKILL, True, 10),
    "sigint-group": (signal.SIGINT, True, 4),
    "sigterm-main": (signal.SIGTERM, False, 4),
    "kill9-main": (signal.SIGKILL, False, 4),
}


def wait_for(proc: subprocess.Popen, wf: Workflow, chunks: int, extra_s: float) -> str:
    """Wait until `chunks` chunk files exist (or the run ends), then `extra_s` more seconds.
    Returns where the run was when the wait ended."""
    deadline = time.monotonic() + 120
    while proc.poll() is None and len(wf.chunks()) < chunks and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(extra_s)
    if proc.poll() is not None:
        return "finished"
    done = len(wf.chunks())
    if not (wf.results / "plan.json").exists():
        return "planning"
    return f"{done} chunks done" if done < CHUNKS else "aggregating"


@pytest.mark.parametrize("mode", sorted(MODES))
def test_interrupted_at_random_points_then_rerun(workflow: Workflow, mode: str) -> None:
    sig, group, points = MODES[mode]
    wf = workflow
    wf.configure(
        base_config(
            write_prompts(wf.workdir / "in.parquet", CHUNKS * SIZE),
            chunks={"size": SIZE, "per_server": 4},
            engine={"max_concurrent_requests": 16, "dummy": {"latency_s": 0.05}},
        )
    )
    draw = rng(mode)
    history: list[str] = []
    done: set[int] = set()
    log = wf.workdir / "runs.log"
    # Kill when this many chunks are done (and a little later), spread over the whole run:
    # a target already reached kills during Snakemake's start-up, the plan or the server's
    # start; CHUNKS kills while the stats and the card are written.
    targets = sorted(draw.choices(range(CHUNKS + 1), k=points))
    for point, target in enumerate(targets):
        # The README's rerun: --unlock (only needed after a crash), then the run itself.
        wf.run("--unlock")
        proc = wf.start(log=log)
        early = target <= len(done)
        where = wait_for(proc, wf, target, draw.uniform(0.0, 3.0 if early else 0.5))
        if proc.poll() is None:
            (os.killpg if group else os.kill)(proc.pid, sig)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"{mode}: Snakemake still running 90 s after the signal (seed {SEED})")
        history.append(f"{point}: {where} -> exit {proc.returncode}")
        context = f"{mode}, seed {SEED}, {history}"
        left = wait_no_leftovers(wf.workdir)
        assert left == [], f"processes outlived the run ({context}): {left}"
        now = complete_chunks(wf, SIZE)  # every chunk file present is whole
        assert done <= now, f"finished chunks were lost ({context}): {sorted(done - now)}"
        done = now
    print(f"{mode} (seed {SEED}):", *history, sep="\n  ")
    wf.run("--unlock")
    wf.run(timeout=240)
    context = f"{mode}, seed {SEED}, {history}"
    assert complete_chunks(wf, SIZE) == set(range(CHUNKS)), context
    check_rows_exactly_once(wf, CHUNKS * SIZE)
    stats = wf.stats()
    assert stats["rows"] == CHUNKS * SIZE and stats["rows_failed"] == 0, context
    assert stats["chunks"] == CHUNKS, context
    assert wf.job_counts() == {}, f"nothing is left to do ({context})"
    # a chunk that a kill interrupted while it was being written left a temporary file; its
    # rewrite removed it
    assert not list((wf.results / "data").glob("*.tmp-*")), context
