"""How engines meet GPUs in a local run, on simulated GPU machines: a stand-in `nvidia-smi` that
lists N GPUs, and the dummy engine as the GPU engine (it records the `CUDA_VISIBLE_DEVICES` it
got, when it started, was ready and stopped; `engine.dummy.load_s` is its model load). At most
one engine per slot of tensor-parallel-size GPUs runs at once, on its own GPUs, whatever
`--cores` is; each slot loads its model once for the whole run; every row is answered once."""

from __future__ import annotations

import json
import os
import signal
import stat
import time
from pathlib import Path

import pytest
from conftest import Workflow, base_config, check_rows_exactly_once, write_prompts
from harness import wait_no_engines, wait_no_leftovers

pytestmark = pytest.mark.e2e

CHUNKS, SIZE = 16, 25  # 8 groups of 2 chunks


def gpu_machine(tmp_path: Path, gpus: int) -> tuple[dict[str, str], Path]:
    """The environment of a machine with `gpus` (stand-in) GPUs, and the dummy's record file."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    lines = "".join(f"GPU {i}: Fake H100 (UUID: GPU-fake-{i})\\n" for i in range(gpus))
    smi.write_text(f'#!/bin/sh\n[ "$1" = "-L" ] || exit 2\nprintf "{lines}"\n')
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    record = tmp_path / "engines.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", DATAFORGE_DUMMY_RECORD=str(record))
    return env, record


def engines(record: Path) -> list[dict]:
    """Each engine's life from the record: pid, devices, start, ready and stop times."""
    lives: dict[int, dict] = {}
    for line in record.read_text().splitlines():
        event = json.loads(line)
        life = lives.setdefault(event["pid"], {"pid": event["pid"]})
        life[event["event"]] = event["time"]
        life["devices"] = event["devices"]
    return sorted(lives.values(), key=lambda e: e["start"])


def most_at_once(lives: list[dict]) -> int:
    edges = sorted([(e["start"], 1) for e in lives] + [(e["stop"], -1) for e in lives])
    now = peak = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return peak


def configure(wf: Workflow, tp: int) -> None:
    wf.configure(
        base_config(
            write_prompts(wf.workdir / "in.parquet", CHUNKS * SIZE),
            chunks={"size": SIZE, "per_server": 2},
            engine={
                "tensor_parallel_size": tp,
                "max_concurrent_requests": 8,
                "dummy": {"latency_s": 0.02, "load_s": 0.5},
            },
        )
    )


@pytest.mark.parametrize(("gpus", "tp"), [(1, 1), (2, 1), (4, 1), (2, 2), (4, 2)])
def test_one_engine_per_gpu_slot_loaded_once(workflow: Workflow, gpus: int, tp: int) -> None:
    wf = workflow
    env, record = gpu_machine(wf.workdir, gpus)
    configure(wf, tp)
    proc = wf.run("--cores", "8", env=env, timeout=300)
    slots = gpus // tp
    assert f"dataforge: {slots} engine slot(s) on GPUs" in proc.stderr
    check_rows_exactly_once(wf, CHUNKS * SIZE)
    lives = engines(record)
    assert all("ready" in e and "stop" in e for e in lives), lives
    assert len(lives) == slots, f"one model load per slot: {lives}"
    assert most_at_once(lives) <= slots
    used = [e["devices"].split(",") for e in lives]
    assert all(len(d) == tp for d in used), used
    assert sorted(g for d in used for g in d) == [str(i) for i in range(slots * tp)]
    assert wait_no_engines() == []
    gpu = wf.stats()["gpu"]
    assert gpu["model_loads"] == slots and wf.stats()["model_loads"] == slots
    assert len(gpu["devices"]) == slots * tp
    seconds = gpu["gpu_seconds"]
    assert seconds["loading"] >= 0.5 * tp * slots * 0.9  # each engine's 0.5 s load, per GPU
    assert 0 < gpu["efficiency"] < 1 and seconds["generating"] < seconds["allocated"]
    assert gpu["gpu_hours_per_billion_output_tokens"] > 0
    assert "GPU efficiency" in (wf.results / "README.md").read_text()


def test_too_few_gpus_for_one_server_stop_the_run_before_any_job(workflow: Workflow) -> None:
    env, record = gpu_machine(workflow.workdir, 1)
    configure(workflow, 2)
    proc = workflow.run(check=False, env=env)
    lines = [x for x in proc.stderr.splitlines() if x.startswith("dataforge: ")]
    assert proc.returncode != 0 and lines, proc.stderr
    assert "a server needs 2 GPUs" in lines[0] and "this machine has 1 (0)" in lines[0]
    assert not record.exists() and not (workflow.results / "data").exists()


def test_cuda_visible_devices_decides_which_gpus(workflow: Workflow) -> None:
    env, record = gpu_machine(workflow.workdir, 4)
    env["CUDA_VISIBLE_DEVICES"] = "2,3"
    configure(workflow, 1)
    workflow.run(env=env, timeout=300)
    assert sorted(e["devices"] for e in engines(record)) == ["2", "3"]


def test_kill_9_then_rerun_on_a_gpu_machine(workflow: Workflow) -> None:
    wf = workflow
    env, record = gpu_machine(wf.workdir, 2)
    configure(wf, 1)
    proc = wf.start("--cores", "8", log=wf.workdir / "run.log", env=env)
    deadline = time.monotonic() + 120
    while len(wf.chunks()) < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(wf.chunks()) < CHUNKS
    # the engines' guards see their Snakemake process gone and stop them
    assert wait_no_leftovers(wf.workdir) == [] and wait_no_engines() == []
    first = engines(record)
    assert len(first) <= 2 and all("stop" in e for e in first)
    wf.run("--unlock", env=env)
    wf.run("--cores", "8", env=env, timeout=300)
    check_rows_exactly_once(wf, CHUNKS * SIZE)
    second = [e for e in engines(record) if e["start"] > max(x["stop"] for x in first)]
    assert len(second) <= 2 and most_at_once(second) <= 2
    assert {e["devices"] for e in second} <= {"0", "1"}
