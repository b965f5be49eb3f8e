"""Secrets: a planted Hub token and engine API key are used (publishing and every request
succeed) and appear nowhere: not in any file of the run (results, logs, stats.json, the card,
plan.json, Snakemake's metadata and log, the report), not in the terminal output, not in what
was published."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import Workflow, base_config, check_rows_exactly_once, write_prompts
from fakehub import FakeHub
from harness import OwnDummy

from dataforge.engines import free_port

pytestmark = pytest.mark.e2e

HUB_TOKEN = "hf_PLANTEDhubTOKEN0123456789abcdefXYZ"
ENGINE_KEY = "sk-PLANTED-engine-key-9876543210-QWERTY"


def test_planted_secrets_appear_in_no_output(workflow: Workflow, tmp_path: Path) -> None:
    hub = FakeHub({HUB_TOKEN: ("alice", "write")}).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(hub.env(HUB_TOKEN), HF_HOME=str(tmp_path / "hf-home"), PLANTED_KEY=ENGINE_KEY)
    engine = OwnDummy(free_port(), "--api-key-env", "PLANTED_KEY", env=env).start()
    try:
        wf = workflow
        wf.configure(
            base_config(
                write_prompts(wf.workdir / "in.parquet", 300),
                engine={"kind": "endpoint", "url": engine.url, "api_key_env": "PLANTED_KEY"},
                chunks={"size": 100},
                output={"repo": "ds", "publish_every_chunks": 1},
            )
        )
        runs = [wf.run(env=env, timeout=240), wf.run("--report", "report.html", env=env)]
        status = subprocess.run(
            [str(Path(wf.command()[0]).parent / "dataforge"), "status", str(wf.workdir)],
            capture_output=True,
            text=True,
            env=env,
        )
        assert engine.counts()["unauthorized"] == 0, "every request carried the key"
    finally:
        engine.kill()
        hub.stop()
    check_rows_exactly_once(wf, 300)
    assert wf.stats()["rows_failed"] == 0
    assert "alice/ds" in hub.repos and (wf.workdir / "report.html").is_file()

    written = [p for p in wf.workdir.rglob("*") if p.is_file()]
    names = {p.name for p in written}
    assert {"stats.json", "README.md", "plan.json", "report.html", "config.json"} <= names
    assert any(".snakemake/metadata" in str(p) for p in written)
    assert any(".snakemake/log" in str(p) for p in written)
    published = [s.data for _, tree in hub.repos["alice/ds"].commits for s in tree.values()]
    printed = [r.stdout + r.stderr for r in runs] + [status.stdout + status.stderr]
    for secret in (HUB_TOKEN, ENGINE_KEY):
        for path in written:
            assert secret.encode() not in path.read_bytes(), f"{secret[:6]}… in {path}"
        assert not any(secret.encode() in data for data in published)
        assert not any(secret in text for text in printed)
