"""Live progress of a run: a line on the terminal per finished chunk, and a progress card.

`Monitor` is a daemon thread of the Snakemake submitting process (like `hub.PartialPublisher`),
so it sees local and Slurm runs alike: it only reads what `status.collect` reads
(results/plan.json and the chunk files' footers). Each line is written with a single
`stream.write` and flushed, so it lands whole between Snakemake's own log lines.

With an output repo, it also replaces the repo's `README.md` with a "generation in progress"
card (progress bar, rows, ETA), at most once every `interval_s` seconds, so whoever watches the
repo sees how far the run is; the first one `interval_s` after the start, so a short run or
rerun commits none. The card keeps the final card's `configs` (data/*.parquet), so the
repo stays loadable with the chunks published so far. It never uploads once every chunk is
done: the workflow then publishes the final card, and a late progress card must not replace it.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import yaml

from dataforge import hub, layout, status
from dataforge.fmt import duration
from dataforge.plan import load_plan

log = logging.getLogger("dataforge.monitor")

BAR_WIDTH = 20
UPLOAD_ATTEMPTS = 3  # a progress card that fails is replaced by the next one: don't linger


def _share(p: dict[str, Any]) -> float:
    """Fraction of chunks done (an empty plan counts as done)."""
    return p["chunks_done"] / p["chunks"] if p["chunks"] else 1.0


def _all_done(p: dict[str, Any]) -> bool:
    return bool(p.get("planned")) and p["chunks_done"] >= p["chunks"]


def _bar(p: dict[str, Any], full: str, empty: str) -> str:
    """A BAR_WIDTH bar, floored so that it only looks full when the run is done."""
    filled = math.floor(BAR_WIDTH * _share(p))
    return full * filled + empty * (BAR_WIDTH - filled)


def _percent(p: dict[str, Any]) -> int:
    """Floored too: 99.6% shows as 99%, not as a misleading 100%."""
    return math.floor(100 * _share(p))


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC")


def progress_line(p: dict[str, Any]) -> str:
    """One terminal line (no newline) from a `status.collect()` dict."""
    if not p.get("planned"):
        return "dataforge: planning… (no results/plan.json yet)"
    head = (
        f"dataforge: [{_bar(p, '#', '.')}] {_percent(p)}% "
        f"chunks {p['chunks_done']:,}/{p['chunks']:,}, rows {p['rows_done']:,}/{p['rows']:,}, "
        f"{p['rows_failed']:,} failed"
    )
    if _all_done(p):
        return f"{head}, done ({p['output_tokens']:,} output tokens)"
    eta = "ETA unknown" if p["eta_s"] is None else f"ETA {duration(p['eta_s'])}"
    return f"{head}, {p['output_tokens_per_s']:,.0f} output tokens/s, {eta}"


def progress_card(p: dict[str, Any], repo_id: str, now: float, split: str = "train") -> str:
    """The "generation in progress" dataset card (Markdown with YAML front matter).

    The front matter has the `configs` of the final card (`split` is the input's split, as in
    dataforge.card) so that `load_dataset(repo_id)` works on the chunks published so far.
    """
    from dataforge.card import data_configs

    front = {
        "configs": data_configs(split),
        "tags": ["synthetic", "dataforge"],
        "task_categories": ["text-generation"],
    }
    if p.get("planned"):
        eta_s = p["eta_s"]
        if _all_done(p):
            eta, finish = "done", _utc(p["last_finished"] or now)
        elif eta_s is None:
            eta, finish = "unknown (no chunk finished yet)", "unknown"
        else:
            eta, finish = duration(eta_s), f"about {_utc(now + eta_s)}"
        rate = f"{p['output_tokens_per_s']:,.0f}"
        if p["window_s"]:
            rate += f" (over the last {duration(p['window_s'])})"
        progress = "\n".join(
            [
                f"`{_bar(p, '▰', '▱')}` **{_percent(p)}%**",
                "",
                "| | |",
                "|---|---|",
                f"| Chunks done | {p['chunks_done']:,} of {p['chunks']:,} |",
                f"| Rows done | {p['rows_done']:,} of {p['rows']:,} |",
                f"| Failed rows | {p['rows_failed']:,} |",
                f"| Output tokens/s | {rate} |",
                f"| ETA | {eta} |",
                f"| Estimated finish | {finish} |",
            ]
        )
    else:
        progress = "The run is planning its chunks."
    return (
        f"---\n{yaml.safe_dump(front, sort_keys=False).strip()}\n---\n\n"
        f"# {repo_id.split('/')[-1]}: generation in progress\n\n"
        "This synthetic dataset is being generated with dataforge. Chunks appear under `data/` "
        "as they finish (when partial publishing is on); this card is replaced by the final "
        "one, with the full statistics, when the run ends.\n\n"
        f"{progress}\n\n"
        f"Last updated: {_utc(now)}\n"
    )


class Monitor:
    """Prints a progress line per change of the chunks done and, with `repo_id`, keeps a
    progress card on the Hub; a daemon thread, so it never holds the process up at exit."""

    def __init__(
        self,
        workdir: Path,
        repo_id: str | None,
        interval_s: float,
        poll_s: float = 2.0,
        stream: TextIO = sys.stderr,
        window_s: float = 300.0,
        settings: dict[str, Any] | None = None,
    ) -> None:
        """`settings`: the config's content settings; a chunk made with others is not done."""
        self.workdir, self.repo_id, self.interval_s = workdir, repo_id, interval_s
        self.settings = settings
        self.poll_s, self.stream, self.window_s = poll_s, stream, window_s
        self.printed: int | None = None  # chunks done in the last line printed
        self.uploaded: int | None = None  # chunks done in the last card uploaded
        self.last_upload = -math.inf  # time.monotonic() of the last upload attempt (or start)
        self.finished = False  # the final line is printed: nothing more to do
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.loop, name="dataforge-monitor", daemon=True)

    def start(self) -> Monitor:
        # The first card is due one interval after the start: a run (or a rerun that finishes
        # a few chunks) shorter than that needs none, and spends none of the repo's commits.
        self.last_upload = time.monotonic()
        self.thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        self.stopped.set()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout)

    def finish(self) -> None:
        """The run succeeded: stop polling and print the last line now if the loop has not
        (its next poll could come after the process exits)."""
        self.stop(timeout=5)
        if not self.finished:
            self.poll()

    def loop(self) -> None:
        """Poll right away, then every `poll_s`, until stopped or the run is done."""
        while True:
            try:
                self.poll()
            except Exception as e:  # e.g. a plan.json being written: try again next poll
                log.debug("progress poll failed: %s", e)
            if self.finished or self.stopped.wait(self.poll_s):
                return

    def poll(self) -> None:
        p = status.collect(self.workdir, self.window_s, settings=self.settings)
        if not p["planned"]:
            return
        if p["chunks_done"] != self.printed:
            self.stream.write(progress_line(p) + "\n")  # one write: the line lands whole
            self.stream.flush()
            self.printed = p["chunks_done"]
        if _all_done(p):
            self.finished = True  # the workflow publishes the final card: don't race it
            return
        due = time.monotonic() - self.last_upload >= self.interval_s
        if self.repo_id and due and p["chunks_done"] != self.uploaded:
            self.last_upload = time.monotonic()
            try:
                self.upload()
            except Exception as e:  # never stop the run, nor this loop, for a progress card
                log.warning("progress card upload to %s failed: %s", self.repo_id, e)

    def upload(self) -> None:
        """Upload a fresh progress card, unless the run is done by now (checked again on each
        attempt, right before the commit, to keep the window for a race with the final card
        as small as the Hub allows)."""
        from huggingface_hub import HfApi

        assert self.repo_id is not None
        api, repo_id = HfApi(), self.repo_id

        def attempt() -> int | None:
            p = status.collect(self.workdir, self.window_s, settings=self.settings)
            if _all_done(p):
                return None
            card = progress_card(p, repo_id, time.time(), self._split())
            api.upload_file(
                path_or_fileobj=card.encode("utf-8"),
                path_in_repo="README.md",
                repo_id=repo_id,
                repo_type="dataset",
                commit_message=f"dataforge: progress {p['chunks_done']}/{p['chunks']} chunks",
            )
            return p["chunks_done"]

        done = hub.with_retries(attempt, f"progress card upload to {repo_id}", UPLOAD_ATTEMPTS)
        if done is not None:  # None: the run is done, the next poll prints the final line
            self.uploaded = done

    def _split(self) -> str:
        """The input split named in the plan (the final card's split), "train" if absent."""
        try:
            plan = load_plan(self.workdir / layout.PLAN)
            return str(plan["input"]["split"])
        except (OSError, ValueError, KeyError, TypeError):
            return "train"
