"""The live progress monitor: its line, its card, and the thread, against a results folder whose
chunks appear over time and a loopback fake Hub (tests/fakehub.py)."""

from __future__ import annotations

import io
import json
import logging
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import fake_chunk
from fakehub import FakeHub

from dataforge.monitor import Monitor, progress_card, progress_line

REPO = "alice/ds"


def progress(done: int, chunks: int = 10, eta_s: float | None = 12.0, **kw: Any) -> dict:
    """A `status.collect()` dict with 5 rows per chunk."""
    return {
        "planned": True, "chunks": chunks, "chunks_done": done, "rows": 5 * chunks,
        "rows_done": 5 * done, "rows_failed": 0, "output_tokens": 100 * done, "window_s": 30.0,
        "chunks_per_min": 2.0, "output_tokens_per_s": 123.4, "eta_s": eta_s,
        "last_finished": 1000.0, **kw,
    }  # fmt: skip


def test_progress_line() -> None:
    assert progress_line(progress(0, eta_s=None, output_tokens_per_s=0.0)) == (
        "dataforge: [....................] 0% chunks 0/10, rows 0/50, 0 failed, "
        "0 output tokens/s, ETA unknown"
    )
    assert progress_line(progress(4)) == (
        "dataforge: [########............] 40% chunks 4/10, rows 20/50, 0 failed, "
        "123 output tokens/s, ETA 12 s"
    )
    assert progress_line(progress(4, eta_s=None)).endswith(", ETA unknown")
    assert progress_line(progress(4, eta_s=185.0)).endswith(", ETA 3 min 05 s")
    # floored: one chunk short of 200 is not shown as 100%
    assert "] 99% chunks 199/200," in progress_line(progress(199, chunks=200, rows_failed=1234))
    assert progress_line(progress(10, eta_s=0.0)) == (
        "dataforge: [####################] 100% chunks 10/10, rows 50/50, 0 failed, "
        "done (1,000 output tokens)"
    )
    assert progress_line({"planned": False}).startswith("dataforge: planning")


def test_progress_card_loads_and_keeps_the_configs() -> None:
    from huggingface_hub import DatasetCard

    now = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
    text = progress_card(progress(4, eta_s=3600.0), REPO, now, split="test")
    card = DatasetCard(text)
    assert card.data.configs == [
        {"config_name": "default", "data_files": [{"split": "test", "path": "data/*.parquet"}]}
    ]
    assert {"synthetic", "dataforge"} <= set(card.data.tags)
    assert "▰" * 8 + "▱" * 12 in text and "**40%**" in text
    assert "4 of 10" in text and "20 of 50" in text and "| Failed rows | 0 |" in text
    assert "| Output tokens/s | 123" in text and "| ETA | 1 h 00 min |" in text
    assert "about 2023-11-14 23:13 UTC" in text  # the estimated finish
    assert "Last updated: 2023-11-14 22:13 UTC" in text
    assert "in progress" in card.text
    unknown = progress_card(progress(0, eta_s=None), REPO, now)
    assert "| ETA | unknown" in unknown and DatasetCard(unknown).data.configs
    assert DatasetCard(progress_card({"planned": False}, REPO, now)).data.configs


class Chunks:
    """A results/ folder (as tests/test_status.py's fake_run) whose chunks finish over time."""

    def __init__(self, workdir: Path, chunks: int, split: str = "train") -> None:
        self.results, self.chunks, self.split = workdir / "results", chunks, split
        self.done = 0
        self.last_at = 0.0  # time.monotonic() when the last chunk appeared

    def plan(self) -> None:
        (self.results / "data").mkdir(parents=True)
        plan = {"chunks": self.chunks, "rows": 10 * self.chunks, "input": {"split": self.split}}
        (self.results / "plan.json").write_text(json.dumps(plan))

    def finish_one(self, took: float = 0.4) -> None:
        """A chunk file of 10 rows (1 failed, 100 output tokens)."""
        i, now = self.done, time.time()
        stats = {"rows": 10, "rows_failed": 1, "started": now - took, "finished": now,
                 "completion_tokens": {"total": 100}}  # fmt: skip
        fake_chunk(self.results.parent, i, stats)
        self.done += 1
        self.last_at = time.monotonic()

    def run(self, every: float, before_plan: float = 0.0) -> None:
        time.sleep(before_plan)
        self.plan()
        for _ in range(self.chunks):
            time.sleep(every)
            self.finish_one(every)


class Writes(io.StringIO):
    """Records each `write` call, to check a line is written in one piece."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.lock = threading.Lock()

    def write(self, s: str) -> int:
        with self.lock:
            self.calls.append(s)
        return super().write(s)


def counts(lines: list[str]) -> list[int]:
    return [int(re.search(r" chunks (\d+)/", line)[1]) for line in lines]


def test_monitor_prints_a_line_per_change_and_ends_when_done(tmp_path: Path) -> None:
    stream = Writes()
    monitor = Monitor(tmp_path, None, interval_s=1.0, poll_s=0.03, stream=stream).start()
    try:
        Chunks(tmp_path, 6).run(every=0.15, before_plan=0.1)
        monitor.thread.join(5)  # it ends by itself once the last line is printed
        assert not monitor.thread.is_alive()
    finally:
        monitor.stop()
    assert all(c.endswith("\n") and c.count("\n") == 1 for c in stream.calls)
    lines = stream.getvalue().splitlines()
    assert len(lines) == len(stream.calls)
    seen = counts(lines)
    assert seen[0] <= 1 and seen[-1] == 6, lines  # first line at the first poll with a plan
    assert seen == sorted(set(seen)), lines  # one line per change, counts increasing
    assert len(seen) >= 4, lines
    assert lines[-1].startswith("dataforge: [####################] 100% chunks 6/6, rows 60/60")
    assert lines[-1].endswith("6 failed, done (600 output tokens)")
    assert "output tokens/s, ETA " in lines[-2]


def test_stop_ends_the_loop_before_the_run_is_done(tmp_path: Path) -> None:
    Chunks(tmp_path, 3).plan()
    stream = io.StringIO()
    monitor = Monitor(tmp_path, None, interval_s=1.0, poll_s=0.05, stream=stream).start()
    time.sleep(0.2)
    monitor.stop()
    assert not monitor.thread.is_alive()
    assert stream.getvalue().splitlines() == [
        "dataforge: [....................] 0% chunks 0/3, rows 0/30, 0 failed, "
        "0 output tokens/s, ETA unknown"
    ]


def test_finish_prints_the_done_line_the_loop_had_no_time_for(tmp_path: Path) -> None:
    stream = io.StringIO()
    monitor = Monitor(tmp_path, None, interval_s=1.0, poll_s=60, stream=stream)
    chunks = Chunks(tmp_path, 3)
    chunks.plan()
    monitor.start()
    time.sleep(0.2)  # its first poll: 0 of 3
    for _ in range(3):  # the run ends within one poll
        chunks.finish_one()
    monitor.finish()
    lines = stream.getvalue().splitlines()
    assert counts(lines) == [0, 3] and lines[-1].endswith("3 failed, done (300 output tokens)")
    monitor.finish()  # once done, nothing more
    assert stream.getvalue().splitlines() == lines


@pytest.fixture
def here(hub: FakeHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeHub:
    """The fake Hub, for HfApi() in this process, with the repo created."""
    from huggingface_hub import HfApi, constants

    for name, value in {**hub.env("tok-write"), "HF_HOME": str(tmp_path / "hf-home")}.items():
        monkeypatch.setenv(name, value)
    # huggingface_hub reads these at import, which may have happened before this test
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    HfApi().create_repo(REPO, repo_type="dataset")
    return hub


def readme_commits(hub: FakeHub) -> list[str]:
    return [c["summary"] for c in hub.commits(REPO) if "README.md" in c["paths"]]


@pytest.mark.usefixtures("here")
def test_progress_card_uploads_are_throttled_and_stop_when_done(
    hub: FakeHub, tmp_path: Path
) -> None:
    from huggingface_hub import DatasetCard

    chunks = Chunks(tmp_path, 8, split="train")
    chunks.plan()
    stream = io.StringIO()
    cards: list[str] = []
    monitor = Monitor(tmp_path, REPO, interval_s=1.0, poll_s=0.05, stream=stream)
    started = time.monotonic()
    monitor.start()
    try:
        for i in range(chunks.chunks):  # a chunk every 0.4 s, 3.2 s in all
            time.sleep(0.4)
            if i < 2:  # the first card is due one interval after the start, not at once
                assert not readme_commits(hub), time.monotonic() - started
            if "README.md" in hub.files(REPO):
                cards.append(hub.files(REPO)["README.md"].decode())
            chunks.finish_one()
        all_done_commits = len(hub.commits(REPO))
        monitor.thread.join(5)
        assert not monitor.thread.is_alive()
    finally:
        monitor.stop()
    elapsed = time.monotonic() - started
    summaries = readme_commits(hub)
    assert 1 <= len(summaries) <= elapsed / 1.0 + 1, (summaries, elapsed)
    assert len(summaries) >= 2, summaries  # throttled, not stopped after the first
    done = [int(re.match(r"dataforge: progress (\d+)/8 chunks$", s)[1]) for s in summaries]
    assert done == sorted(set(done)) and done[-1] < 8, summaries  # never the final state
    # nothing started once all chunks were done (one started just before may still land)
    assert len(hub.commits(REPO)) - all_done_commits <= 1
    readme = hub.files(REPO)["README.md"].decode()
    assert "▰" in readme and "▱" in readme and "| ETA |" in readme and "in progress" in readme
    assert DatasetCard(readme).data.configs[0]["data_files"][0]["path"] == "data/*.parquet"
    assert cards and all("Last updated: " in c for c in cards)
    assert stream.getvalue().splitlines()[-1].endswith("done (800 output tokens)")


@pytest.mark.usefixtures("here")
def test_an_upload_failure_is_logged_and_the_loop_goes_on(
    hub: FakeHub, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    chunks = Chunks(tmp_path, 4)
    chunks.plan()
    hub.fail("POST", "/commit/", 400, times=1)  # not retried: the first card is lost
    stream = io.StringIO()
    monitor = Monitor(tmp_path, REPO, interval_s=0.3, poll_s=0.05, stream=stream)
    with caplog.at_level(logging.WARNING, logger="dataforge.monitor"):
        monitor.start()
        try:
            deadline = time.monotonic() + 10
            while not readme_commits(hub) and time.monotonic() < deadline:
                time.sleep(0.05)
            for _ in range(chunks.chunks):
                chunks.finish_one()
                time.sleep(0.4)
            monitor.thread.join(5)
            assert not monitor.thread.is_alive()
        finally:
            monitor.stop()
    assert ("POST", f"/api/datasets/{REPO}/commit/main", 400) in hub.requests
    warnings = [r for r in caplog.records if r.name == "dataforge.monitor"]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert "progress card upload to alice/ds failed" in warnings[0].getMessage()
    assert "HTTP 400" in warnings[0].getMessage()
    summaries = readme_commits(hub)
    assert summaries[0] == "dataforge: progress 0/4 chunks"  # retried at the next interval
    assert len(summaries) >= 2 and all(not s.endswith("4/4 chunks") for s in summaries)
    assert counts(stream.getvalue().splitlines()) == [0, 1, 2, 3, 4]
