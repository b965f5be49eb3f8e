"""Engine faults: what the engine injects is exactly what stats.json counts, every transient
fault is retried until it succeeds, the one permanent failure is a row with its error, and an
engine that goes away fails its chunks fast (no hang, no rows written as failed) so that the
rerun generates them, whether it is a server the user runs (`endpoint`) or one dataforge
manages."""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
from conftest import Workflow, base_config, check_rows_exactly_once, plant_prompt, write_prompts
from harness import OwnDummy, wait_no_engines, wait_no_leftovers

from dataforge.engines import free_port

pytestmark = pytest.mark.e2e

FAULTS = {"http_500": 0.05, "timeout": 0.05, "reset": 0.02, "malformed": 0.01}


@pytest.fixture
def dummy():
    engines: list[OwnDummy] = []

    def start(*args: str, port: int | None = None) -> OwnDummy:
        engine = OwnDummy(port or free_port(), *args).start()
        engines.append(engine)
        return engine

    yield start
    for engine in engines:
        engine.kill()


def endpoint_config(wf: Workflow, url: str, rows: int, **engine: object) -> dict:
    path = write_prompts(wf.workdir / "in.parquet", rows)
    return base_config(
        path,
        engine={"kind": "endpoint", "url": url, "max_concurrent_requests": 64, **engine},
        chunks={"size": 250, "per_server": 2},
    )


def test_injected_faults_are_retried_and_counted_exactly(workflow: Workflow, dummy) -> None:
    wf = workflow
    engine = dummy("--faults", json.dumps(FAULTS), "--reject-marker", "REJECT-ME")
    config = endpoint_config(wf, engine.url, 1000, request_timeout_s=1, max_retries=4)
    plant_prompt(wf.workdir / "in.parquet", 617, "this one is always refused: REJECT-ME")
    wf.configure(config)
    wf.run(timeout=300)

    out = check_rows_exactly_once(wf, 1000)
    errors = out.column("error").to_pylist()
    assert [i for i, e in enumerate(errors) if e] == [617]
    assert errors[617].startswith("http_400: HTTP 400")
    injected = engine.counts()
    for kind in FAULTS:  # ~1,000 × rate of each
        assert injected[kind] > 0, injected
    requests = wf.stats()["requests"]
    assert requests["requests"] == injected["requests"], (requests, injected)
    assert requests.get("retry_http_500", 0) == injected["http_500"], (requests, injected)
    assert requests.get("retry_timeout", 0) == injected["timeout"], (requests, injected)
    assert requests.get("retry_connection", 0) == injected["reset"], (requests, injected)
    assert requests.get("retry_malformed_response", 0) == injected["malformed"]
    assert requests["retries"] == sum(injected[k] for k in FAULTS)
    assert injected["rejected"] == 1  # a 400 is not retried
    stats = wf.stats()
    assert stats["rows_failed"] == 1 and stats["rows_failed_by_kind"] == {"http_400": 1}


def test_an_endpoint_that_goes_away_fails_its_chunks_fast(workflow: Workflow, dummy) -> None:
    wf = workflow
    port = free_port()
    engine = dummy("--latency-s", "0.05", port=port)
    config = endpoint_config(wf, engine.url, 2000, max_concurrent_requests=8)
    wf.configure(config)
    proc = wf.start(log=wf.workdir / "run.log")
    deadline = time.monotonic() + 60
    while not wf.chunks() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert wf.chunks(), "a first chunk finished"
    engine.kill()
    killed = time.monotonic()
    proc.wait(timeout=120)
    took = time.monotonic() - killed
    assert proc.returncode != 0
    assert took < 30, f"the chunks failed {took:.0f} s after the engine went away"
    assert wait_no_leftovers(wf.workdir) == []
    logs = "".join(p.read_text() for p in (wf.workdir / "logs" / "serve_model").glob("*.log"))
    assert "engine is unreachable" in logs
    assert "starting engine" not in logs  # attached to the user's server, started none
    # No chunk was written with rows failed for the outage.
    written = wf.table()
    assert written.num_rows < 2000
    assert written.column("error").null_count == written.num_rows
    dummy("--latency-s", "0.05", port=port)  # the endpoint is back
    wf.run(timeout=180)
    check_rows_exactly_once(wf, 2000)
    assert wf.stats()["rows_failed"] == 0


def test_a_managed_engine_killed_mid_chunk_fails_fast_and_the_rerun_completes(
    workflow: Workflow,
) -> None:
    wf = workflow
    config = base_config(
        write_prompts(wf.workdir / "in.parquet", 1200),
        chunks={"size": 300, "per_server": 4},
        engine={"max_concurrent_requests": 4, "dummy": {"latency_s": 0.02}},
    )
    wf.configure(config)
    proc = wf.start()
    serve_log = wf.workdir / "logs" / "serve_model" / "slot-0.log"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "engine ready" not in read(serve_log):
        time.sleep(0.1)
    port = re.search(r"dataforge\.dummy --port (\d+)", read(serve_log)).group(1)
    time.sleep(2.0)  # mid-chunk: 1,200 rows at ~200 rows/s
    subprocess.run(["pkill", "-9", "-f", f"dataforge.dummy --port {port} "], check=True)
    t0 = time.monotonic()
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert time.monotonic() - t0 < 20, "the chunks fail fast instead of retrying a dead engine"
    assert "failed: engine is gone" in read(serve_log)
    assert len(wf.chunks()) < 4
    assert wait_no_engines() == []
    wf.run(timeout=120)
    check_rows_exactly_once(wf, 1200)


def read(path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""
