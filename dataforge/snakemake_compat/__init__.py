"""Every place where dataforge reaches into Snakemake's internals, in one package: the
scheduler and its jobs here, what Snakemake prints in `console.py` (re-exported here).

Each workaround names the Snakemake version it was written against (9.27.1, pinned in
pyproject.toml) and the test that shows it is still needed and still works; when Snakemake
changes, those tests fail here first (tests/test_snakemake_compat.py).

- `defer_sigterm`: SIGTERM handled without the scheduler's lock deadlock.
- `cancel_pending_timers`: the run exits without waiting for the scheduler's last timer.
- `StopOnInterrupt`: Ctrl-C, SIGINT or SIGTERM stop a local run at once, not after every
  running job has finished.
- `prepare_service_file`: a chunk reruns alone, and never a service without its chunks;
  `quiet_service_file_notes` keeps the notes this causes off the terminal.
- `quiet_reported_failures`: a job that failed with a `dataforge:` line gets no Snakemake
  error report (traceback, `message: None`) under it.
- `report_sbatch_refusals`: a group job that sbatch refused says why, in one line.
- `quiet_account_guess`: no account-guessing noise from the Slurm plugin on a site that needs
  no account.
- `limit_resource`: a local run's engine slots bound its serve jobs without `--resources`.
- `wait_for_groups_without_polling`: a local group ends when its jobs do, not up to a second
  later.
- `widen_local_pool`: every engine slot gets the threads its group needs.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from dataforge.snakemake_compat.console import (
    _quiet_console,
    quiet_account_guess,
    quiet_reported_failures,
    quiet_service_file_notes,
    report_sbatch_refusals,
)

__all__ = [
    "INTERRUPTED",
    "SNAKEMAKE_VERSION",
    "StopOnInterrupt",
    "cancel_pending_timers",
    "defer_sigterm",
    "job_processes",
    "limit_resource",
    "local_execution",
    "on_slurm",
    "prepare_service_file",
    "quiet_account_guess",
    "quiet_reported_failures",
    "quiet_service_file_notes",
    "report_sbatch_refusals",
    "wait_for_groups_without_polling",
    "widen_local_pool",
]

SNAKEMAKE_VERSION = "9.27.1"
# Set once a local run was interrupted: long `run:` jobs (the plan's conversion) stop early.
INTERRUPTED = threading.Event()


def cancel_pending_timers() -> int:
    """Cancel the `threading.Timer`s still waiting in this process (the run is over); return
    how many there were.

    Snakemake 9.27.1's job scheduler arms a Timer in every scheduling round that had jobs
    ready, so that its job rate limit (`max-jobs-per-timespan`) gets re-evaluated a timespan
    later (`JobScheduler._schedule_reevalutation`); the last round, for rule `all`, arms one
    too. A Timer is not a daemon thread: the interpreter waits for it before it exits, which
    added up to a second to every run. Called from the onsuccess and onerror handlers, once
    the scheduler has returned. dataforge itself starts no Timer.
    Test: test_snakemake_compat.py::test_the_scheduler_arms_a_timer_that_would_delay_exit.
    """
    timers = [t for t in threading.enumerate() if isinstance(t, threading.Timer)]
    for timer in timers:
        timer.cancel()
    return len(timers)


def defer_sigterm(scheduler: Any) -> bool:
    """Make Snakemake's SIGTERM handling safe from deadlock; return whether it was needed.

    Snakemake 9.27.1's scheduler handles SIGTERM ("finish the running jobs, then stop") with
    `JobScheduler.exit_gracefully`, which takes its `threading.Lock`. Python runs signal
    handlers in the main thread, which holds that same lock while it selects and finishes
    jobs: a SIGTERM arriving then blocked the run for good. The handler is replaced by one that
    runs Snakemake's own method in a new thread, which waits for the lock instead of the main
    thread. Used for Slurm runs (local runs use `StopOnInterrupt`).
    Test: test_snakemake_compat.py::test_sigterm_while_the_scheduler_holds_its_lock.
    """
    handler = getattr(scheduler, "exit_gracefully", None)
    if handler is None or signal.getsignal(signal.SIGTERM) != handler:
        return False

    def deferred(signum: int, frame: object) -> None:
        threading.Thread(target=handler, name="dataforge-sigterm", daemon=True).start()

    signal.signal(signal.SIGTERM, deferred)
    return True


def job_processes() -> list[Any]:
    """The processes of the shell jobs this Snakemake process runs (serve and chunk jobs):
    Snakemake 9.27.1 keeps them in `snakemake.shell.shell._processes` (jobid -> Popen) while
    they run."""
    from snakemake.shell import shell

    with shell._lock:
        return list(shell._processes.values())


class StopOnInterrupt:
    """Ctrl-C (SIGINT to the process group), SIGINT or SIGTERM to Snakemake alone: stop a local
    run within seconds.

    Snakemake 9.27.1 stops a local run only after every running job has ended: on SIGINT its
    scheduler calls the local executor's `cancel()`, which is `ThreadPoolExecutor.shutdown()`
    and waits for them (a group of chunks generates for minutes); on SIGTERM it "finishes the
    running jobs". Neither signals the job processes (a second Ctrl-C then prints asyncio
    tracebacks). Here the first signal asks the scheduler to start nothing new (its own
    `exit_gracefully`, from a thread: see `defer_sigterm`), sends SIGTERM to every job process
    (serve jobs stop their engines, chunk jobs end; a chunk file is written whole or not at
    all), keeps doing so for a job that a scheduling round started just then, and keeps
    Snakemake's report of each stopped job off the terminal (it stays in its log file). Later
    signals change nothing. Snakemake then ends as after a failed job: lock released,
    `onerror` run.
    Test: test_snakemake_compat.py::test_interrupt_hooks_exist and tests/test_resume.py
    (each signal on a real run, with the time it takes to stop).
    """

    def __init__(
        self, scheduler: Any, on_interrupt: Callable[[str], None], sweep_s: float = 120.0
    ) -> None:
        self.scheduler = scheduler
        self.on_interrupt = on_interrupt
        self.sweep_s = sweep_s
        self.signal_name: str | None = None
        self.at: float | None = None

    def install(self) -> StopOnInterrupt:
        signal.signal(signal.SIGINT, self.handle)
        signal.signal(signal.SIGTERM, self.handle)
        return self

    def handle(self, signum: int, frame: object) -> None:
        if self.signal_name is not None:
            return
        self.signal_name = signal.Signals(signum).name
        self.at = time.monotonic()
        INTERRUPTED.set()
        _quiet_console()
        threading.Thread(target=self._stop, name="dataforge-interrupt", daemon=True).start()
        self.on_interrupt(self.signal_name)

    def elapsed(self) -> float:
        """Seconds since the first signal."""
        return time.monotonic() - self.at if self.at is not None else 0.0

    def _stop(self) -> None:
        self.scheduler.exit_gracefully()  # takes the scheduler's lock: not in the main thread
        deadline = time.monotonic() + self.sweep_s
        while time.monotonic() < deadline:
            for proc in job_processes():
                with contextlib.suppress(OSError):
                    if proc.poll() is None:
                        proc.terminate()
            time.sleep(0.1)


def prepare_service_file(workflow: Any, path: str) -> None:
    """Make a group's service file safe to take as `ancient()` input (main process, DAG time).

    Snakemake 9.27.1 reruns every consumer of a service (its file is always "updated by
    another job") unless the consumer takes it as `ancient()` input, and honours `ancient()`
    only for a file that exists when the DAG is built: an empty placeholder is created (the
    serve job overwrites it at once). And it forgets its record of how the file was made
    (`PersistenceBase.cleanup_metadata`), so that no params or code change schedules the
    service alone, without consumers, which would never be stopped (the run would hang).
    Tests: tests/test_e2e.py::test_delete_one_chunk_reruns_that_chunk_alone and
    ::test_engine_setting_change_neither_hangs_nor_reruns.
    """
    from pathlib import Path

    from snakemake.io import IOFile

    placeholder = Path(path)
    if not placeholder.exists():
        placeholder.parent.mkdir(parents=True, exist_ok=True)
        placeholder.touch()
    workflow.persistence.cleanup_metadata(IOFile(path))


def limit_resource(scheduler: Any, name: str, limit: int) -> None:
    """At most `limit` of resource `name` in use at once, as `--resources name=limit` would set
    it, from the workflow (onstart, before any job is scheduled): Snakemake 9.27.1's scheduler
    keeps its limits in `JobScheduler.global_resources` (the capacity) and `.resources` (what is
    free); a resource that is in neither is not limited.
    Test: test_snakemake_compat.py::test_a_resource_limit_set_in_onstart_bounds_the_jobs.
    """
    scheduler.global_resources[name] = limit
    scheduler.resources[name] = limit


def widen_local_pool(scheduler: Any, threads: int) -> bool:
    """Give the local executor's thread pool `threads` more workers (onstart, before any job).

    Snakemake 9.27.1's local executor runs every job of a group in a thread of one pool of
    `cores + 5` workers, plus one thread per running group (`Executor.__post_init__`,
    `run_job`): four groups of a server and two chunks need 16, so with `--cores 8` the fourth
    engine slot waited for threads instead of starting its group.
    Test: tests/test_gpu_schedule.py (4 slots on `--cores 8`: 4 engines at once).
    """
    import concurrent.futures

    executor = getattr(scheduler, "_executor", None)
    if executor is None or not hasattr(executor, "pool") or not hasattr(executor, "workers"):
        return False
    executor.workers += threads
    executor.pool = concurrent.futures.ThreadPoolExecutor(max_workers=executor.workers)
    return True


class _GroupWait:
    """Snakemake 9.27.1's local executor looks at the jobs of a running group once a second
    (`time.sleep(1)` in `Executor.run_group_job`): a group's end, and the stop of its service,
    came up to a second late, and one more second passed before the next group. This waits on
    the jobs' futures instead, and returns as soon as every non-service job has ended (or one
    failed), exactly as the original does otherwise.
    Test: test_snakemake_compat.py::test_a_group_ends_without_the_polling_second.
    """

    @staticmethod
    def run_group_job(self: Any, job: Any) -> None:  # `self`: the local Executor
        import concurrent.futures

        from snakemake.logging import logger
        from snakemake.shell import shell

        service_futures = [self.run_single_job(j) for j in job if j.is_service]
        normal_futures = [self.run_single_job(j) for j in job if not j.is_service]
        pending = set(normal_futures)
        while pending:
            done, pending = concurrent.futures.wait(
                pending, return_when=concurrent.futures.FIRST_COMPLETED
            )
            for f in done:
                ex = f.exception()
                if ex is not None:
                    for j in job:
                        shell.kill(j.jobid)
                    raise ex
        if service_futures:
            for j in job:
                if j.is_service:
                    logger.info(
                        f"Terminating service job {j.jobid} since all consuming jobs are finished."
                    )
                    shell.terminate(j.jobid)
                    logger.info(f"Service job {j.jobid} has been successfully terminated.")


def wait_for_groups_without_polling() -> bool:
    """Replace the local executor's once-a-second group polling (see `_GroupWait`); returns
    whether the method replaced is the one this was written for."""
    import inspect

    from snakemake.executors.local import Executor

    original = Executor.run_group_job
    if original is _GroupWait.run_group_job:
        return True
    if "time.sleep(1)" not in inspect.getsource(original):
        return False  # another Snakemake: keep its own
    Executor.run_group_job = _GroupWait.run_group_job
    return True


def on_slurm(workflow: Any) -> bool:
    """Whether this run submits its jobs through the Slurm executor (known from the DAG on)."""
    plugin = workflow.executor_plugin
    return plugin is not None and plugin.name == "slurm"


def local_execution(workflow: Any) -> bool:
    """Whether the jobs run as processes of this Snakemake process (not through Slurm)."""
    plugin = workflow.executor_plugin
    return plugin is None or plugin.common_settings.local_exec
