"""Helpers of the reliability suite: leftover processes of one run, chunk-file invariants, a
dummy engine the test owns (so it can read the faults the engine injected), a seeded RNG."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
from conftest import Workflow

from dataforge import chunkfile

# Fault-injection points are drawn from this seed: set DATAFORGE_FAULT_SEED to replay a failure
# (every assertion message names the seed it ran with).
SEED = int(os.environ.get("DATAFORGE_FAULT_SEED", "20261204"))


def rng(salt: str) -> random.Random:
    """A random generator for one test, from SEED and the test's own salt."""
    return random.Random(f"{SEED}-{salt}")


def leftover_processes(workdir: Path) -> list[str]:
    """dataforge and Snakemake processes whose working directory is inside `workdir`: the
    server, its engine and guard, chunk jobs, Snakemake itself (from /proc, so processes of
    other runs on the machine do not count)."""
    found = []
    me = os.getpid()
    root = str(workdir.resolve())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z" or not (cwd == root or cwd.startswith(root + "/")):
            continue
        if "dataforge" in cmdline or "snakemake" in cmdline:
            found.append(f"{entry.name}: {cmdline[:200]}")
    return found


def wait_no_leftovers(workdir: Path, timeout: float = 30.0) -> list[str]:
    """Wait until no process of the run in `workdir` is left; return those still there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not leftover_processes(workdir):
            return []
        time.sleep(0.2)
    return leftover_processes(workdir)


def complete_chunks(wf: Workflow, chunk_size: int) -> set[int]:
    """Ids of the chunk files present, each checked to be whole: readable, its own rows in
    order, its record in the footer. A partial or foreign file fails the assertion."""
    done = set()
    for path in wf.chunks():
        index = int(path.stem.split("-")[1])
        table = pq.read_table(path)
        rows = table.column("row").to_pylist()
        assert rows == list(range(index * chunk_size, (index + 1) * chunk_size)), path
        key = chunkfile.read_record(path).key  # the record in the footer
        assert (key.start, key.end) == (rows[0], rows[-1] + 1), path
        done.add(index)
    return done


def temp_files(wf: Workflow) -> list[Path]:
    """Temporary files that killed writers left in the results (hidden `.name.tmp-*`)."""
    return sorted(wf.results.rglob("*.tmp-*"))


class OwnDummy:
    """A dummy engine the test starts itself (for `engine.kind: endpoint`), so that the test
    can read what it injected (`/counts`) and can kill and restart it."""

    def __init__(self, port: int, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = port
        self.args = args
        self.env = env
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> OwnDummy:
        command = [sys.executable, "-m", "dataforge.dummy", "--port", str(self.port), *self.args]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, env=self.env)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                self.counts()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("the dummy engine did not start")

    def counts(self) -> dict[str, int]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/counts", timeout=5) as r:
            return json.loads(r.read())

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
