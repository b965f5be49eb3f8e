"""The DAG's shape for several configs (dry-runs of the real workflow) and its lint."""

from __future__ import annotations

import math
import re
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, SNAKEMAKE, Workflow, write_prompts


def test_fresh_dry_run_shows_the_plan_pending(workflow: Workflow) -> None:
    workflow.configure(
        {"input": {"dataset": str(write_prompts(workflow.workdir / "in.parquet", 10))}}
    )
    assert workflow.job_counts() == {
        "plan_chunks": 1,
        "aggregate_stats": 1,
        "write_dataset_card": 1,
        "all": 1,
    }
    assert not (workflow.results / "plan.json").exists(), "a dry-run writes no plan"


@pytest.mark.parametrize(
    ("rows", "size", "per_server"),
    [(2000, 500, 2), (2000, 500, 4), (1001, 100, 3), (7, 500, 8), (100, 1, 25)],
)
def test_one_generate_job_per_chunk_and_one_server_per_group(
    workflow: Workflow, rows: int, size: int, per_server: int
) -> None:
    workflow.configure(
        {
            "input": {"dataset": str(write_prompts(workflow.workdir / "in.parquet", rows))},
            "engine": {"kind": "dummy"},
            "chunks": {"size": size, "per_server": per_server},
        }
    )
    workflow.run("results/plan.json")
    chunks = math.ceil(rows / size)
    assert workflow.job_counts() == {
        "serve_model": math.ceil(chunks / per_server),
        "generate_chunk": chunks,
        "aggregate_stats": 1,
        "write_dataset_card": 1,
        "all": 1,
    }


TOLERATED = "Specify a conda environment or container for each rule."


def test_snakemake_lint_reports_only_the_software_deployment_note(tmp_path: Path) -> None:
    # dataforge runs every rule in its own venv and declares no conda env or container that
    # nobody runs (see STYLE.md rule 13); every other lint must stay clean.
    proc = subprocess.run(
        [SNAKEMAKE, "--lint", "--configfile", "config/examples/lint.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out
    assert "Lints for snakefile" not in out, out
    titles = re.findall(r"^\s+\* (.+?):?$", out, flags=re.MULTILINE)
    assert titles, out
    assert set(titles) == {TOLERATED}, out
