"""Concurrency: a second `snakemake` on the same directory is refused by Snakemake's lock and
changes nothing of the first run; readers of `results/` during a run (`dataforge status`,
the partial publisher, anyone reading chunk files) never see a partial file."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import Workflow, base_config, check_rows_exactly_once, write_prompts
from fakehub import FakeHub
from harness import hub_env, wait_no_leftovers

pytestmark = pytest.mark.e2e

CHUNKS, SIZE = 20, 100
DATAFORGE = str(Path(sys.executable).parent / "dataforge")


class Reader(threading.Thread):
    """Reads results/ over and over while the run goes: every chunk file whole, every JSON
    file parseable, `dataforge status --json` consistent. Problems are collected."""

    def __init__(self, wf: Workflow) -> None:
        super().__init__(daemon=True)
        self.wf = wf
        self.stop = threading.Event()
        self.problems: list[str] = []
        self.reads = {"chunks": 0, "json": 0, "status": 0}

    def run(self) -> None:
        last_status = 0.0
        while not self.stop.is_set():
            for path in self.wf.chunks():
                try:
                    table = pq.read_table(path)
                    index = int(path.stem.split("-")[1])
                    if table.column("row").to_pylist() != list(
                        range(index * SIZE, (index + 1) * SIZE)
                    ):
                        self.problems.append(f"{path.name}: wrong rows")
                    self.reads["chunks"] += 1
                except FileNotFoundError:
                    pass
                except Exception as e:  # a partial file
                    self.problems.append(f"{path.name}: {type(e).__name__}: {e}")
            for path in [
                self.wf.results / "stats.json",
                self.wf.results / "plan.json",
            ]:
                try:
                    json.loads(path.read_text())
                    self.reads["json"] += 1
                except FileNotFoundError:
                    pass
                except ValueError as e:
                    self.problems.append(f"{path.name}: {e}")
            if time.monotonic() - last_status > 0.5:
                last_status = time.monotonic()
                proc = subprocess.run(
                    [DATAFORGE, "status", str(self.wf.workdir), "--json"],
                    capture_output=True,
                    text=True,
                    timeout=30,
                )
                if proc.returncode != 0:
                    self.problems.append(f"dataforge status: {proc.stderr[-500:]}")
                else:
                    status = json.loads(proc.stdout)
                    if status.get("planned") and not (
                        0 <= status["chunks_done"] <= CHUNKS
                        and status["rows_done"] == SIZE * status["chunks_done"]
                    ):
                        self.problems.append(f"dataforge status: {status}")
                    self.reads["status"] += 1
            time.sleep(0.02)


def test_a_second_run_is_refused_and_readers_never_see_a_partial_file(
    workflow: Workflow, hub: FakeHub, tmp_path: Path
) -> None:
    wf = workflow
    config = base_config(
        write_prompts(wf.workdir / "in.parquet", CHUNKS * SIZE),
        chunks={"size": SIZE, "per_server": 4},
        engine={"max_concurrent_requests": 16, "dummy": {"latency_s": 0.05}},
        output={"repo": "ds", "publish_every_chunks": 3},
    )
    wf.configure(config)
    env = hub_env(hub, tmp_path)
    first = subprocess.Popen(
        wf.command("--cores", "2"),
        cwd=wf.workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    reader = Reader(wf)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while len(wf.chunks()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert wf.chunks() and first.poll() is None, "the first run is under way"
        # The second run, with other engine settings, in the same directory.
        second = Workflow(wf.workdir)
        second.configfile = wf.workdir / "second.yaml"
        other = yaml.safe_load(yaml.safe_dump(config))
        other["engine"]["max_concurrent_requests"] = 3
        second.configure(other)
        proc = second.run(check=False, env=env, timeout=120)
        assert proc.returncode != 0
        assert "Directory cannot be locked" in proc.stdout + proc.stderr
        served = json.loads((wf.results / ".serve" / "config.json").read_text())
        assert served["config"]["engine"]["max_concurrent_requests"] == 16, (
            "the refused run changed the settings of the running run's servers"
        )
        out, _ = first.communicate(timeout=240)
    finally:
        reader.stop.set()
        reader.join(timeout=30)
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, out[-3000:]
    assert reader.problems == [], reader.problems[:10]
    assert reader.reads["chunks"] > CHUNKS and reader.reads["status"] > 3, reader.reads
    check_rows_exactly_once(wf, CHUNKS * SIZE)
    assert wait_no_leftovers(wf.workdir) == []
    # Every chunk file the publisher committed, during the run or at its end, was whole.
    repo = hub.repos["alice/ds"]
    assert len(repo.commits) >= 2, hub.commits("alice/ds")
    for _, tree in repo.commits:
        for name, stored in tree.items():
            if name.startswith("data/chunk-"):
                index = int(name.split("-")[1].split(".")[0])
                table = pq.read_table(io.BytesIO(stored.data))
                assert table.column("row").to_pylist() == list(
                    range(index * SIZE, (index + 1) * SIZE)
                ), name
