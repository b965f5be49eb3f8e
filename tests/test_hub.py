"""Publishing to the Hub, against a loopback fake Hub (tests/fakehub.py) that the real
huggingface_hub and datasets clients talk to over HTTP."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Workflow, base_config, check_rows_exactly_once, write_prompts
from fakehub import FakeHub
from harness import hub_env


def configure(wf: Workflow, rows: int, size: int, **output: object) -> None:
    wf.configure(
        base_config(
            write_prompts(wf.workdir / "in.parquet", rows),
            chunks={"size": size, "per_server": 25},
            output={"repo": "ds", **output},
        )
    )


def test_publish_batches_commits_and_a_rerun_commits_nothing(
    workflow: Workflow, hub: FakeHub, tmp_path: Path
) -> None:
    configure(workflow, rows=100, size=2)  # 50 chunks
    env = hub_env(hub, tmp_path)
    workflow.run(env=env, timeout=300)
    check_rows_exactly_once(workflow, 100)
    assert hub.repos["alice/ds"].private is True  # output.private defaults to true
    commits = hub.commits("alice/ds")
    assert 1 <= len(commits) <= 3, commits
    remote = hub.files("alice/ds")
    local = {
        str(p.relative_to(workflow.results)): p.read_bytes()
        for p in [
            *workflow.chunks(),
            workflow.results / "stats.json",
            workflow.results / "README.md",
            *(workflow.results / "plots").glob("*.png"),
        ]
    }
    assert len(local) == 54 and remote == local  # every file, byte for byte
    # Nothing changed: Snakemake has nothing to do, and a forced publish sends no commit.
    assert workflow.job_counts(env=env) == {}
    workflow.run("--forcerun", "publish", env=env)
    assert len(hub.commits("alice/ds")) == len(commits)
    # One chunk regenerated: one more commit with that chunk, stats and card only.
    (workflow.results / "data" / "chunk-00007.parquet").unlink()
    workflow.run(env=env)
    assert len(hub.commits("alice/ds")) == len(commits) + 1
    # (the same numbers draw the same figures, and the dummy engine regenerates the same
    # chunk bytes: files with unchanged content are not committed again)
    assert set(hub.commits("alice/ds")[-1]["paths"]) <= {
        "data/chunk-00007.parquet", "stats.json", "README.md"
    }  # fmt: skip


def test_a_429_on_the_commit_is_retried(workflow: Workflow, hub: FakeHub, tmp_path: Path) -> None:
    configure(workflow, rows=20, size=10, private=False)
    hub.fail("POST", "/commit/", 429, times=1, retry_after=1)
    hub.fail("POST", "/commit/", 503, times=1)
    workflow.run(env=hub_env(hub, tmp_path))
    assert ("POST", "/api/datasets/alice/ds/commit/main", 429) in hub.requests
    assert ("POST", "/api/datasets/alice/ds/commit/main", 503) in hub.requests
    assert len(hub.commits("alice/ds")) == 1
    assert hub.repos["alice/ds"].private is False
    log = (workflow.workdir / "logs" / "publish.log").read_text()
    assert "HTTP 429 from the Hub, retrying in 1.0 s" in log
    assert "HTTP 503 from the Hub, retrying in 2.0 s" in log


@pytest.mark.parametrize(
    ("token", "repo", "message"),
    [
        (None, "ds", "output.repo is 'ds' but no Hugging Face token was found: set HF_TOKEN"),
        ("tok-bad", "ds", "the Hugging Face token was refused (HTTP 401): check HF_TOKEN"),
        ("tok-read", "ds", "the Hugging Face token of 'alice' is read-only, it cannot publish"),
        ("tok-write", "bob/ds", "output.repo 'bob/ds' belongs to 'bob', which the token of"),
    ],
    ids=["no-token", "invalid", "read-only", "other-owner"],
)
def test_hub_problems_stop_the_run_before_any_job(
    workflow: Workflow, hub: FakeHub, tmp_path: Path, token: str | None, repo: str, message: str
) -> None:
    configure(workflow, rows=20, size=10, repo=repo)
    proc = workflow.run(check=False, env=hub_env(hub, tmp_path, token))
    assert proc.returncode != 0
    assert f"dataforge: {message}" in proc.stderr, proc.stderr[-3000:]
    assert not (workflow.results / "plan.json").exists()  # not even the plan ran
    assert hub.commits("alice/ds") == [] and "bob/ds" not in hub.repos
    if token:
        assert token not in proc.stdout + proc.stderr  # the token is never printed


def test_the_published_card_loads_and_its_configs_resolve(
    workflow: Workflow, hub: FakeHub, tmp_path: Path
) -> None:
    configure(workflow, rows=30, size=10)
    env = hub_env(hub, tmp_path)
    workflow.run(env=env)
    code = (
        "import datasets, json\n"
        "from huggingface_hub import DatasetCard\n"
        "card = DatasetCard.load('alice/ds', repo_type='dataset')\n"
        "ds = datasets.load_dataset('alice/ds', split='train')\n"
        "print(json.dumps({'configs': card.data.configs, 'rows': sorted(ds['row'])}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["configs"][0]["data_files"][0]["path"] == "data/*.parquet"
    assert out["rows"] == list(range(30))
    # the token is in no file the run wrote (results, logs, Snakemake's metadata)
    written = [p for p in workflow.workdir.rglob("*") if p.is_file()]
    assert any(".snakemake/metadata" in str(p) for p in written)
    for path in written:
        assert b"tok-write" not in path.read_bytes(), path


def test_hub_input_by_config_split_and_pinned_revision(
    workflow: Workflow, hub: FakeHub, tmp_path: Path
) -> None:
    import json

    import pyarrow.parquet as pq

    def parquet(n: int) -> bytes:
        return write_prompts(tmp_path / f"src-{n}.parquet", n).read_bytes()

    card = (
        "---\nlicense: mit\nlanguage: [en]\nconfigs:\n- config_name: small\n  data_files:\n"
        "  - split: train\n    path: small/train.parquet\n"
        "  - split: test\n    path: small/test.parquet\n"
        "- config_name: big\n  data_files:\n  - split: train\n    path: big/train.parquet\n---\n"
    )
    files = {"README.md": card.encode(), "small/train.parquet": parquet(30),
             "small/test.parquet": parquet(7), "big/train.parquet": parquet(50)}  # fmt: skip
    first = hub.add_repo("bob/prompts", files)
    hub.add_repo("bob/prompts", {"small/train.parquet": parquet(40)})  # the dataset moves on
    pinned = {"dataset": "bob/prompts", "config": "small", "split": "train", "revision": first}
    workflow.configure(base_config(tmp_path / "unused.parquet", input=pinned, chunks={"size": 8}))
    env = hub_env(hub, tmp_path, token=None)  # a public dataset needs no token
    workflow.run(env=env, timeout=300)
    plan = json.loads((workflow.results / "plan.json").read_text())
    assert plan["source"]["revision"] == first and plan["rows"] == 30
    expected = pq.read_table(tmp_path / "src-30.parquet")
    check_rows_exactly_once(workflow, 30)
    table = workflow.table().sort_by("row")
    assert table.column("prompt").to_pylist() == expected.column("prompt").to_pylist()
    # the result's card takes the input's license and language from its card
    front = (workflow.results / "README.md").read_text().split("---")[1]
    assert "license: mit" in front and "- en" in front, front
    # Unpinned, the plan records the commit it resolved; the Hub moving on later changes nothing.
    other = Workflow(tmp_path / "unpinned")
    other.workdir.mkdir()
    other.configure(
        base_config(
            tmp_path / "unused.parquet",
            input={"dataset": "bob/prompts", "config": "small", "split": "test"},
        )
    )
    other.run(env=env, timeout=300)
    latest = hub.repos["bob/prompts"].commits[-1][0]
    assert json.loads((other.results / "plan.json").read_text())["source"]["revision"] == latest
    hub.add_repo("bob/prompts", {"small/test.parquet": parquet(9)})
    assert other.job_counts(env=env) == {}
    check_rows_exactly_once(other, 7)


def test_partial_results_are_published_during_the_run(
    workflow: Workflow, hub: FakeHub, tmp_path: Path
) -> None:
    # 12 chunks finishing one after another over ~12 s (1 s per request, one chunk at a time);
    # the publisher looks every 5 s and commits once 3 more chunks are done.
    workflow.configure(
        base_config(
            write_prompts(workflow.workdir / "in.parquet", 60),
            chunks={"size": 5, "per_server": 12},
            engine={"max_concurrent_requests": 5, "dummy": {"latency_s": 1}},
            output={"repo": "ds", "publish_every_chunks": 3},
        )
    )
    workflow.run(env=hub_env(hub, tmp_path), timeout=300)
    commits = hub.commits("alice/ds")
    partial, final = commits[:-1], commits[-1]
    assert partial, commits
    for c in partial:
        assert c["summary"].endswith("chunks so far")
        assert all(p.startswith("data/chunk-") for p in c["paths"]), c
    assert len(partial[0]["paths"]) < 12  # published before the run ended
    assert "README.md" in final["paths"] and "stats.json" in final["paths"]
    assert len(hub.files("alice/ds")) == 16  # 12 chunks, stats, 2 figures, card


def test_the_hub_card_shows_progress_during_the_run_then_the_final_card(
    workflow: Workflow, hub: FakeHub, tmp_path: Path
) -> None:
    # 8 chunks finishing one after another over ~8 s; a progress card at most every 2 s.
    workflow.configure(
        base_config(
            write_prompts(workflow.workdir / "in.parquet", 40),
            chunks={"size": 5, "per_server": 8},
            engine={"max_concurrent_requests": 5, "dummy": {"latency_s": 1}},
            output={"repo": "ds"},
            monitor={"interval_s": 2},
        )
    )
    started = time.monotonic()
    proc = workflow.run(env=hub_env(hub, tmp_path), timeout=300)
    elapsed = time.monotonic() - started
    commits = hub.commits("alice/ds")
    progress = [c for c in commits if "progress" in c["summary"]]
    assert progress and all(c["paths"] == ["README.md"] for c in progress), commits
    assert len(progress) <= elapsed / 2 + 1, (len(progress), elapsed)
    assert "progress" not in commits[-1]["summary"]  # the final card came last
    final = hub.files("alice/ds")["README.md"].decode()
    assert final == (workflow.results / "README.md").read_text()
    # the terminal got one progress line per finished chunk, the last one done
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("dataforge: [")]
    assert lines and "chunks 8/8" in lines[-1] and "done" in lines[-1], proc.stderr[-3000:]
    assert any("ETA" in ln for ln in lines[:-1]), lines
