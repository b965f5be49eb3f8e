"""Prompts, the engine client against the real dummy server, the guard, token summaries, the
`run:` jobs' logging and the end-of-run timer clean-up."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from aiohttp import web
from harness import pid_alive

from dataforge.chunkstats import TokenSummary
from dataforge.client import EngineClient, EngineDead, RequestFailed, backoff_delay
from dataforge.dummy import DummyEngine, make_app
from dataforge.prompts import PromptError, build_messages, build_payload, request_seed

SAMPLING = {"max_tokens": 16, "temperature": 0.5, "top_p": None, "top_k": 20}


def test_messages_follow_datatrove() -> None:
    assert build_messages("hi", "text", None, None) == [{"role": "user", "content": "hi"}]
    assert build_messages("doc", "text", "sys", "A [[DOCUMENT]] B [[DOCUMENT]]") == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "A doc B doc"},
    ]
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    assert build_messages(msgs, "messages", "sys", None)[1:] == msgs
    for bad, kind in [("", "empty_prompt"), (None, "empty_prompt"), (" \n", "empty_prompt")]:
        with pytest.raises(PromptError, match=kind):
            build_messages(bad, "text", None, None)
    with pytest.raises(PromptError, match=r"invalid_messages: message 0 has invalid role 'bot'"):
        build_messages([{"role": "bot", "content": "x"}], "messages", None, None)
    with pytest.raises(PromptError, match="empty_prompt"):
        build_messages([], "messages", None, None)


def test_payload_and_seeds() -> None:
    payload = build_payload([{"role": "user", "content": "x"}], "m", SAMPLING, 5)
    assert payload == {
        "model": "m",
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 16,
        "temperature": 0.5,
        "top_k": 20,
        "seed": 5,
    }
    assert request_seed(None, 3, 0, 2) is None
    seeds = {request_seed(7, row, r, 3) for row in range(100) for r in range(3)}
    assert len(seeds) == 300  # distinct per row and rollout
    assert request_seed(7, 10, 1, 3) == request_seed(7, 10, 1, 3)


def test_backoff_grows_caps_and_honours_retry_after() -> None:
    assert 0.5 <= backoff_delay(0, 1.0, None) <= 1.0
    assert 4 <= backoff_delay(3, 1.0, None) <= 8
    assert backoff_delay(20, 1.0, None) <= 60
    assert backoff_delay(0, 1.0, 7.0) >= 7.0


async def _with_dummy(engine: DummyEngine, body) -> object:
    runner = web.AppRunner(make_app(engine), shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        return await body(f"http://127.0.0.1:{port}/v1")
    finally:
        await runner.cleanup()


def test_client_retries_every_transient_fault_and_reports_permanent_ones() -> None:
    engine = DummyEngine(
        reject_marker="BAD",
        faults={"http_500": 0.1, "timeout": 0.05, "reset": 0.05, "malformed": 0.05},
    )

    async def body(url: str) -> tuple:
        counts: Counter = Counter()
        async with EngineClient(
            url, max_concurrent=32, timeout_s=0.5, max_retries=3, backoff_base_s=0.01
        ) as client:
            results = await asyncio.gather(
                *(
                    client.chat(
                        build_payload(
                            [{"role": "user", "content": f"q {i}" + (" BAD" if i == 5 else "")}],
                            "m",
                            SAMPLING,
                            i,
                        ),
                        counts,
                    )
                    for i in range(200)
                ),
                return_exceptions=True,
            )
        return results, counts

    results, counts = asyncio.run(_with_dummy(engine, body))
    failed = [i for i, r in enumerate(results) if isinstance(r, Exception)]
    assert failed == [5]
    assert isinstance(results[5], RequestFailed) and results[5].kind == "http_400"
    injected = sum(engine.counts[k] for k in ("http_500", "timeout", "reset", "malformed"))
    assert injected >= 20
    assert counts["retries"] == injected
    assert counts["requests"] == 200 + injected
    assert all(r.text.startswith("Echo: q") for i, r in enumerate(results) if i != 5)


def test_client_gives_up_after_max_retries_without_a_final_sleep() -> None:
    engine = DummyEngine(faults={"http_500": 1.0})
    engine.seen = set()

    class Always500(DummyEngine):
        def _fault_for(self, key: str, digest: bytes) -> str | None:
            return "http_500"

    async def body(url: str) -> float:
        async with EngineClient(
            url, max_concurrent=1, timeout_s=5, max_retries=2, backoff_base_s=0.2
        ) as client:
            t0 = time.monotonic()
            with pytest.raises(RequestFailed, match=r"http_500: .*gave up after 3 attempts"):
                await client.chat(
                    build_payload([{"role": "user", "content": "x"}], "m", SAMPLING, None)
                )
            return time.monotonic() - t0

    elapsed = asyncio.run(_with_dummy(Always500(), body))
    assert 0.3 <= elapsed < 1.5  # two backoffs (0.1-0.2 s and 0.2-0.4 s), none after the last


def test_client_fails_fast_when_the_engine_is_dead() -> None:
    async def body() -> None:
        async with EngineClient(
            "http://127.0.0.1:9/v1",
            max_concurrent=1,
            timeout_s=5,
            max_retries=6,
            alive=lambda: False,
        ) as client:
            with pytest.raises(EngineDead):
                await client.chat({"model": "m", "messages": []})

    t0 = time.monotonic()
    asyncio.run(body())
    assert time.monotonic() - t0 < 2


def test_guard_kills_the_whole_group_when_its_owner_goes_away(tmp_path) -> None:
    script = tmp_path / "tree.sh"
    script.write_text("sleep 300 & sleep 300 & trap '' TERM; wait\n")  # ignores SIGTERM
    guard = subprocess.Popen(
        [sys.executable, "-m", "dataforge.guard", "--grace-s", "1", "--", "bash", str(script)],
        stdin=subprocess.PIPE,
        start_new_session=True,
    )
    time.sleep(0.5)
    children = subprocess.run(
        ["pgrep", "-s", str(_engine_sid(guard.pid))], capture_output=True, text=True
    ).stdout.split()
    assert len(children) >= 3
    guard.stdin.close()  # the owner is gone
    assert guard.wait(timeout=10) is not None
    time.sleep(0.2)
    for pid in children:
        assert not pid_alive(int(pid)), f"{pid} survived"


def _engine_sid(guard_pid: int) -> int:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        out = subprocess.run(["pgrep", "-P", str(guard_pid)], capture_output=True, text=True)
        if out.stdout.strip():
            return int(out.stdout.split()[0])
        time.sleep(0.05)
    raise AssertionError("guard started no child")


def test_guard_passes_on_the_engine_exit_code() -> None:
    guard = subprocess.Popen(
        [sys.executable, "-m", "dataforge.guard", "--", "bash", "-c", "exit 3"],
        stdin=subprocess.PIPE,
    )
    assert guard.wait(timeout=10) == 3


def test_token_summary_merges_exactly() -> None:
    a, b, whole = TokenSummary(), TokenSummary(), TokenSummary()
    for i, v in enumerate([0, 1, 5, 1000, 3, None, 70000]):
        (a if i % 2 else b).add(v)
        whole.add(v)
    merged = TokenSummary()
    merged.merge(a.as_dict(with_counts=True))
    merged.merge(b.as_dict(with_counts=True))
    assert merged.as_dict() == whole.as_dict()
    assert whole.as_dict()["n"] == 6 and whole.as_dict()["max"] == 70000
    assert sum(whole.hist) == 6


def test_sigterm_reaches_no_zombie() -> None:
    # the dummy server exits cleanly on SIGTERM
    from dataforge.engines import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dataforge.dummy", "--port", str(port)], stdout=subprocess.PIPE
    )
    assert b"listening" in proc.stdout.readline()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 0


def test_token_percentiles_are_exact_and_merge_in_any_order() -> None:
    import random

    import numpy as np

    from dataforge.chunkstats import TokenSummary

    rng = random.Random(7)
    values = [rng.choice([1, 2, 3, 50, 51, 400, 4000]) + rng.randrange(30) for _ in range(5000)]
    whole = TokenSummary()
    for v in values:
        whole.add(v)
    got = whole.as_dict()
    for name, q in TokenSummary.QUANTILES:
        assert got[name] == int(np.percentile(values, q * 100, method="inverted_cdf")), name
    parts = []
    for i in range(0, len(values), 700):
        part = TokenSummary()
        for v in values[i : i + 700]:
            part.add(v)
        parts.append(part.as_dict(with_counts=True))
    for _ in range(3):
        rng.shuffle(parts)
        merged = TokenSummary()
        for p in parts:
            merged.merge(p)
        assert merged.as_dict() == got


def _in_worker_thread(func) -> BaseException | None:
    """Run `func` in a worker thread, as Snakemake runs a `run:` job; return what it raised."""
    raised: list[BaseException] = []

    def target() -> None:
        try:
            func()
        except BaseException as e:  # SystemExit included: it must not happen in a job thread
            raised.append(e)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    return raised[0] if raised else None


def test_job_log_takes_only_its_threads_logging_and_fails_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dataforge.errors import InputError
    from dataforge.logs import JobFailed, job_log

    log_path = tmp_path / "logs" / "job.log"
    other = logging.getLogger("dataforge.monitor")
    started, go_on = threading.Event(), threading.Event()

    def job() -> None:
        with job_log(log_path):
            logging.getLogger("dataforge.plan").info("planning %d rows", 7)
            started.set()
            go_on.wait(5)

    def failing_job() -> None:
        with job_log(log_path):
            raise InputError("input.dataset: no file matches 'x'")

    level = logging.getLogger("dataforge").level
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers.clear()  # as in Snakemake's process: no handler on the root logger
    try:
        worker = threading.Thread(target=job)
        worker.start()
        started.wait(5)
        other.info("another thread's info")  # dropped, as without the job's handler
        other.warning("another thread's warning")  # still on stderr (logging.lastResort)
        go_on.set()
        worker.join()
        error = _in_worker_thread(failing_job)
        assert not root.handlers  # nothing process-wide is left changed
    finally:
        root.handlers[:] = saved
    assert isinstance(error, JobFailed), error  # an exception, never sys.exit in a job thread
    assert str(error) == "input.dataset: no file matches 'x'"
    text = log_path.read_text()
    assert "INFO dataforge.plan: planning 7 rows" in text
    assert "ERROR dataforge: input.dataset: no file matches 'x'" in text
    assert "another thread" not in text
    err = capsys.readouterr().err
    assert "another thread's warning" in err and "another thread's info" not in err
    assert err.splitlines()[-2:] == [
        "dataforge: input.dataset: no file matches 'x'",
        f"dataforge: details in {log_path}",
    ]
    assert logging.getLogger("dataforge").level == level


def test_job_log_reports_an_unexpected_error_with_its_traceback_in_the_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dataforge.logs import JobFailed, job_log

    def job() -> None:
        with job_log(tmp_path / "job.log"):
            {}["missing"]

    error = _in_worker_thread(job)
    assert isinstance(error, JobFailed)
    assert "dataforge: unexpected error: KeyError('missing')" in capsys.readouterr().err
    text = (tmp_path / "job.log").read_text()
    assert "Traceback" in text and "KeyError: 'missing'" in text
