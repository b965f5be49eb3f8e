"""Smoke tests: every benchmark script runs in its smallest size and writes sane results, so
the scripts cannot rot. The numbers are not checked (timed tests are no measurement); what is
checked is that each run did the work it reports. The full benchmarks are `make bench`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

ENGINE_PYTHON = REPO / ".venv-engine" / "bin" / "python"

pytestmark = pytest.mark.e2e


def bench(tmp_path: Path, script: str, *args: str, timeout: float = 900) -> dict:
    out = tmp_path / f"{script}.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / f"{script}.py"), *args, "--out", str(out)],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["date"] and result["machine"]
    return result


def test_client_overhead(tmp_path: Path) -> None:
    result = bench(tmp_path, "client_overhead", "--rows", "300", "--chunk-sizes", "100",
                   "--latency-ms", "0", "20")  # fmt: skip
    runs = result["results"]
    names = [r["name"] for r in runs]
    assert names == 2 * ["bare async client", "empty Snakemake run (one touch job)",
                         "datatrove 0.10.1, 100 rows/chunk (3 chunks)",
                         "dataforge, 100 rows/chunk (3 chunks)"]  # fmt: skip
    for r in runs:
        assert r["wall_s"] > 0 and r["cpu_s"] > 0 and r["peak_rss_mb"] > 10
    assert all("beyond_bare_and_empty_s" in r for r in runs if r["name"].startswith("dataforge"))
    assert [r["latency_ms"] for r in runs] == 4 * [0] + 4 * [20]
    with_latency = [r for r in runs[4:] if not r["name"].startswith("empty")]
    # 300 requests at 20 ms each cannot all be served in under 20 ms, nor be more than all busy
    assert all(0 < r["busy"] <= 1.0 and r["window_s"] >= 0.02 for r in with_latency)


def test_workflow_scale(tmp_path: Path) -> None:
    result = bench(tmp_path, "workflow_scale", "--chunks", "10", "30", "--jobs", "4")
    assert [d["jobs"] for d in result["dryrun"]] == [10 + 3 + 1, 30 + 8 + 1]
    assert all(d["dataforge_s"] > 0 and d["bare_s"] > 0 for d in result["dryrun"])
    assert result["jobs"]["jobs"] == 4 and result["jobs"]["many_s"] > 0


def test_memory(tmp_path: Path) -> None:
    result = bench(tmp_path, "memory", "--rows", "1000", "4000", "--chunk", "100",
                   "--run-rows", "200", "800", "--format-rows", "300", "1200")  # fmt: skip
    rows = result["results"]
    assert [r["rows"] for r in rows] == [1000, 4000]
    assert all(r["server_rss_mb"] > 10 and r["datatrove_rss_mb"] > 10 for r in rows)
    assert set(result["growth"]) >= {"server_rss_mb", "plan_rss_mb", "datatrove_rss_mb"}
    runs = result["runs"]
    assert [r["chunks"] for r in runs] == [2, 8]
    assert all(r["peak_sum_rss_mb"] > 50 and r["peak_processes"] >= 4 for r in runs)
    formats = result["formats"]
    assert [(r["format"], r["rows"]) for r in formats] == [
        (f, n) for n in (300, 1200) for f in ("jsonl", "json array", "jsonl.gz")
    ]
    assert all(r["plan_rss_mb"] > 10 and r["rss_vs_jsonl"] > 0 for r in formats)
    assert set(result["format_growth"]) == {"jsonl", "json array", "jsonl.gz"}


def test_gpu_schedule(tmp_path: Path) -> None:
    result = bench(tmp_path, "gpu_schedule", "--gpus", "1", "2", "--rows", "400",
                   "--load-s", "0.5", "--completion-tokens", "20")  # fmt: skip
    runs = result["results"]
    assert [(r["gpus"], r["rows"]) for r in runs] == [(1, 400), (2, 400)]
    assert [r["model_loads"] for r in runs] == [1, 1]  # 400 rows: one chunk, one group
    assert all(0 < r["efficiency"] <= 1 and 0 < r["ideal"] <= 1 for r in runs)
    assert all(r["loading_gpu_s"] >= 0.45 for r in runs)


def test_slurm_overhead(tmp_path: Path, slurm_cluster: None) -> None:
    result = bench(tmp_path, "slurm_overhead", "--chunks", "20", "--groups", "2")
    assert result["dryrun"]["jobs"] == 20 + 5 + 1
    cluster = result["cluster"]
    assert cluster["groups"] == 2 and cluster["to_first_running_s"] > 0
    assert cluster["sbatch_call_s"] > 0


@pytest.mark.skipif(
    not ENGINE_PYTHON.exists(),
    reason="vLLM's engine environment .venv-engine is missing: run `make engine`",
)
def test_vllm_engine(tmp_path: Path) -> None:
    result = bench(tmp_path, "vllm_engine", "--rows", "16", "--max-tokens", "4")
    runs = {r["name"]: r for r in result["results"]}
    assert list(runs) == [
        "bare async client, 1 server", "vLLM run_batch", "datatrove 0.10.1, 1 server",
        "dataforge, 1 group(s), per_server 8", "dataforge, 2 group(s), per_server 4",
    ]  # fmt: skip
    assert [r["model_loads"] for r in runs.values()] == [1, 1, 1, 1, 1]  # one slot: one load
    # every run generated for every prompt (the tiny random model rarely stops before 4)
    assert all(r["completion_tokens"] >= 16 for r in runs.values())


def test_soak(tmp_path: Path) -> None:
    result = bench(tmp_path, "soak", "--rows", "3000", "--chunk-size", "500", "--kills", "1",
                   "--seed", "3")  # fmt: skip
    assert result["ok"] and result["missing"] == 0 and result["duplicates"] == 0
    assert result["rows_out"] == 3000 and result["failures_by_kind"] == {"http_400": 1}
    assert sum(result["retries"].values()) > 0  # faults were injected and retried
    assert len(result["kills"]) == 1
