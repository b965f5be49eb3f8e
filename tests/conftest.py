"""Shared fixtures: input data makers and a runner for the real workflow."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNAKEMAKE = str(BIN / "snakemake")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: a test that takes more than ~10 s")


def start_test_cluster() -> subprocess.CompletedProcess:
    """Run tests/slurm/start_cluster.sh (idempotent: ~0.2 s when the cluster is up)."""
    return subprocess.run(
        ["bash", str(REPO / "tests" / "slurm" / "start_cluster.sh")],
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="session", autouse=True)
def _slurm_controller_if_installed() -> None:
    """Where the Slurm client tools are installed (the Slurm tests install them), make sure
    the test cluster runs: with no controller answering, the executor plugin makes every
    `snakemake` command wait ~10 s at start-up (`scontrol show config` at import)."""
    if shutil.which("scontrol") and os.geteuid() == 0:
        start_test_cluster()


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """Start (idempotently) the single-node test cluster; skip where it cannot run."""
    if os.geteuid() != 0:
        pytest.skip("the test Slurm cluster needs root (it installs and starts daemons)")
    if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        pytest.skip("the test Slurm cluster needs Debian's packages (apt-get)")
    proc = start_test_cluster()
    if proc.returncode != 0:
        pytest.skip(f"could not start the test Slurm cluster: {proc.stderr.strip()[-500:]}")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI (CI=true) a skipped integration test is a failure, not a pass."""
    if os.environ.get("CI", "").lower() != "true":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped:
        reporter.write_line(f"CI=true: {len(skipped)} skipped test(s) count as failures")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def write_prompts(path: Path, n: int, *, kind: str = "text", row_group: int = 300) -> Path:
    """An input file of `n` rows: an `id`, a prompt column and an extra column."""
    if kind == "text":
        prompts = [f"question {i} about the topic number {i % 7}" for i in range(n)]
    else:
        prompts = [
            [
                {"role": "user", "content": f"hello {i}"},
                {"role": "assistant", "content": "hi"},
                {"role": "user", "content": f"what is {i} plus one?"},
            ]
            for i in range(n)
        ]
    table = pa.table(
        {"id": [f"r{i}" for i in range(n)], "prompt": prompts, "extra": list(range(n))}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        pq.write_table(table, path, row_group_size=row_group)
    else:
        with open(path, "w", encoding="utf-8") as f:
            for row in table.to_pylist():
                f.write(json.dumps(row) + "\n")
    return path


def plant_prompt(path: Path, row: int, text: str) -> None:
    """Replace the prompt of one row of a Parquet input written by `write_prompts`."""
    table = pq.read_table(path)
    prompts = table.column("prompt").to_pylist()
    prompts[row] = text
    pq.write_table(table.set_column(1, "prompt", pa.array(prompts)), path)


def fake_chunk(
    workdir: Path, index: int, stats: dict[str, Any], *, size: int = 10, fingerprint: str = "f"
) -> Path:
    """A chunk file of `size` rows (only a `row` column) whose record holds `stats`, as the
    server writes it: for tests of what reads chunk files (status, monitor)."""
    from dataforge import chunkfile, layout

    key = chunkfile.ChunkKey(index, index * size, (index + 1) * size, fingerprint, size, {})
    table = pa.table({"row": list(range(key.start, key.end))})
    path = layout.chunk_file(index, workdir)
    chunkfile.write_chunk(table, chunkfile.ChunkRecord(key, {}, stats), path)
    return path


def check_rows_exactly_once(wf: Workflow, n: int) -> pa.Table:
    table = wf.table()
    rows = table.column("row").to_pylist()
    assert sorted(rows) == list(range(n)), "every input row exactly once"
    assert table.column("id").to_pylist() == [f"r{i}" for i in rows]
    assert table.column("extra").to_pylist() == rows
    return table


def base_config(dataset: Path, **overrides: object) -> dict:
    config = {
        "input": {"dataset": str(dataset)},
        "engine": {"kind": "dummy"},
        "model": {"name": "dummy"},
        "chunks": {"size": 500, "per_server": 2},
        "sampling": {"max_tokens": 64, "seed": 1},
    }
    for key, value in overrides.items():
        config.setdefault(key, {}).update(value)
    return config


class Workflow:
    """Runs the real workflow (a `snakemake` subprocess) in a working directory."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.configfile = workdir / "config.yaml"

    def configure(self, config: dict[str, Any]) -> None:
        self.configfile.write_text(yaml.safe_dump(config), encoding="utf-8")

    def command(self, *args: str) -> list[str]:
        return [
            SNAKEMAKE,
            *args,  # first: after --configfile a bare target would be taken for a config file
            "-s",
            str(REPO / "Snakefile"),
            "--directory",
            str(self.workdir),
            "--configfile",
            str(self.configfile),
        ]

    def start(
        self, *args: str, log: Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        """Start snakemake in the background, in its own process group (so that a test can
        signal the whole run), its output appended to `log` or discarded."""
        out = open(log, "a") if log else subprocess.DEVNULL  # noqa: SIM115 - lives with the run
        return subprocess.Popen(
            self.command(*args),
            cwd=self.workdir,
            stdout=out,
            stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )

    def run(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 180,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            self.command(*args),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.workdir,
            env=env,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"snakemake {' '.join(args)} failed ({proc.returncode}):\n"
                f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
            )
        return proc

    def job_counts(self, *args: str, env: dict[str, str] | None = None) -> dict[str, int]:
        """Jobs per rule that a dry-run would run (empty when nothing is to be done)."""
        proc = self.run("-n", "--quiet", "host", "rules", *args, env=env)
        out = proc.stdout + proc.stderr
        counts: dict[str, int] = {}
        if "Job stats:" not in out:
            return counts
        table = out.split("Job stats:", 1)[1].splitlines()[3:]
        for line in table:
            parts = line.split()
            if len(parts) != 2 or not parts[1].isdigit():
                break
            if parts[0] != "total":
                counts[parts[0]] = int(parts[1])
        return counts

    @property
    def results(self) -> Path:
        return self.workdir / "results"

    def chunks(self) -> list[Path]:
        return sorted((self.results / "data").glob("chunk-*.parquet"))

    def table(self) -> pa.Table:
        return pa.concat_tables([pq.read_table(p) for p in self.chunks()])

    def stats(self) -> dict[str, Any]:
        return json.loads((self.results / "stats.json").read_text())


@pytest.fixture
def workflow(tmp_path: Path) -> Workflow:
    return Workflow(tmp_path)


# The fake Hub's users: token -> (user name, token role).
HUB_USERS = {"tok-write": ("alice", "write"), "tok-read": ("alice", "read")}


@pytest.fixture
def hub():
    """A loopback fake Hub (tests/fakehub.py) with HUB_USERS; `harness.hub_env` points a run
    at it."""
    from fakehub import FakeHub

    hub = FakeHub(HUB_USERS).start()
    yield hub
    hub.stop()
