"""The tests' one harness for processes, engines and the fake Hub: the processes of a run (or of
an engine) still alive, chunk-file invariants, a dummy engine the test owns (so it can read the
faults it injected, kill and restart it), the environment that points a run at the fake Hub,
and a seeded RNG."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
from conftest import Workflow
from fakehub import FakeHub

from dataforge import chunkfile

# Fault-injection points are drawn from this seed: set DATAFORGE_FAULT_SEED to replay a failure
# (every assertion message names the seed it ran with).
SEED = int(os.environ.get("DATAFORGE_FAULT_SEED", "20261204"))


def rng(salt: str) -> random.Random:
    """A random generator for one test, from SEED and the test's own salt."""
    return random.Random(f"{SEED}-{salt}")


def processes(*needles: str, workdir: Path | None = None) -> list[str]:
    """`pid: command line` of the live processes (not this one, no zombies) whose command line
    holds one of `needles` (any, when none is given) and, with `workdir`, whose working
    directory is inside it (so that processes of other runs on the machine do not count)."""
    found = []
    me = os.getpid()
    root = str(workdir.resolve()) if workdir is not None else None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cwd = os.readlink(entry / "cwd") if root is not None else ""
        except OSError:
            continue
        if state == "Z" or (needles and not any(n in cmdline for n in needles)):
            continue
        if root is not None and not (cwd == root or cwd.startswith(root + "/")):
            continue
        found.append(f"{entry.name}: {cmdline[:200]}")
    return found


def engine_processes() -> list[str]:
    """dataforge's test engines and their guards, anywhere on the machine."""
    return processes("dataforge.dummy", "dataforge.guard")


def vllm_processes() -> list[str]:
    """vLLM servers and engine cores, anywhere on the machine."""
    return processes("vllm.entrypoints", "EngineCore")


def leftover_processes(workdir: Path) -> list[str]:
    """dataforge and Snakemake processes of the run in `workdir`: the server, its engine and
    guard, chunk jobs, Snakemake itself."""
    return processes("dataforge", "snakemake", workdir=workdir)


def wait_gone(listing: Callable[[], list[str]], timeout: float = 30.0) -> list[str]:
    """Wait until `listing()` is empty; return what is still there after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not listing():
            return []
        time.sleep(0.2)
    return listing()


def wait_no_leftovers(workdir: Path, timeout: float = 30.0) -> list[str]:
    """Wait until no process of the run in `workdir` is left; return those still there."""
    return wait_gone(lambda: leftover_processes(workdir), timeout)


def wait_no_engines(timeout: float = 20.0) -> list[str]:
    """Wait until no test engine or guard is left; return those still there."""
    return wait_gone(engine_processes, timeout)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def server_logs(workdir: Path) -> str:
    """The logs of a run's servers, in one text: the serve jobs' (`00000.log`, one per group)
    and, in a local run, the engine slots' servers' (`slot-0.log`), where the engine starts and
    the chunks are made."""
    folder = workdir / "logs" / "serve_model"
    return "".join(p.read_text() for p in sorted(folder.glob("*.log")) if ".engine." not in p.name)


def hub_env(hub: FakeHub, tmp_path: Path, token: str | None = "tok-write") -> dict[str, str]:
    """This process's environment, pointed at the fake Hub with `token` (no real Hub setting
    leaks in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    return {**env, **hub.env(token), "HF_HOME": str(tmp_path / "hf-home")}


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
