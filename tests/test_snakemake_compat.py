"""The workarounds of Snakemake internals (dataforge/snakemake_compat/): each test shows that
the Snakemake version in use still behaves as the workaround assumes, and that the workaround
works. When Snakemake is upgraded, a failure here says which workaround to revisit."""

from __future__ import annotations

import inspect
import logging
import signal
import subprocess
import sys
import threading
import time

import pytest
import snakemake

from dataforge import snakemake_compat as compat
from dataforge.snakemake_compat import console


def test_the_pinned_snakemake_is_the_one_the_workarounds_target() -> None:
    assert snakemake.__version__ == compat.SNAKEMAKE_VERSION


def test_the_scheduler_arms_a_timer_that_would_delay_exit() -> None:
    from snakemake.scheduling.job_scheduler import JobScheduler

    # Snakemake arms a plain (non-daemon) Timer to re-evaluate its job rate limit ...
    source = inspect.getsource(JobScheduler._schedule_reevalutation)
    assert "threading.Timer(" in source and "daemon" not in source
    # ... which cancel_pending_timers cancels.
    fired = threading.Event()
    timer = threading.Timer(30, fired.set)
    timer.start()
    assert compat.cancel_pending_timers() >= 1
    timer.join(2)
    assert not timer.is_alive() and not fired.is_set()


SIGTERM_WHILE_SELECTING = """
import os, signal, sys, threading, time
from snakemake.scheduling.job_scheduler import JobScheduler
from dataforge.snakemake_compat import defer_sigterm

class Scheduler:  # Snakemake's own handler, on the state it uses
    exit_gracefully = JobScheduler.exit_gracefully
    def __init__(self):
        self._lock, self._open_jobs = threading.Lock(), threading.Semaphore(0)
        self._user_kill = None

s = Scheduler()
signal.signal(signal.SIGTERM, s.exit_gracefully)  # as Snakemake installs it
if sys.argv[1] == "deferred":
    assert defer_sigterm(s)
with s._lock:  # the main thread selects jobs
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.3)
assert s._open_jobs.acquire(timeout=10)  # the scheduler loop wakes up
print(s._user_kill)
"""


@pytest.mark.parametrize("mode", ["snakemake", "deferred"])
def test_sigterm_while_the_scheduler_holds_its_lock(mode: str) -> None:
    cmd = [sys.executable, "-c", SIGTERM_WHILE_SELECTING, mode]
    if mode == "snakemake":  # Snakemake's handler blocks the main thread for good
        with pytest.raises(subprocess.TimeoutExpired):
            subprocess.run(cmd, capture_output=True, timeout=5)
    else:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0 and out.stdout.strip() == "graceful", out.stderr


def test_a_local_interrupt_waits_for_the_running_jobs_without_the_workaround() -> None:
    from snakemake.executors.local import Executor
    from snakemake.shell import shell

    # cancel() only shuts the thread pool down, which waits for every running job ...
    assert "self.pool.shutdown()" in inspect.getsource(Executor.cancel)
    # ... while the job processes are known by job id, which StopOnInterrupt terminates.
    assert isinstance(shell._processes, dict) and hasattr(shell._lock, "acquire")
    assert compat.job_processes() == []


STOP_ON_INTERRUPT = """
import os, signal, subprocess, sys, threading, time
from snakemake.shell import shell
from dataforge.snakemake_compat import INTERRUPTED, StopOnInterrupt

class Scheduler:
    calls = 0
    def exit_gracefully(self):
        Scheduler.calls += 1

proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
with shell._lock:
    shell._processes[1] = proc  # as Snakemake registers a running shell job
seen = []
handler = StopOnInterrupt(Scheduler(), seen.append, sweep_s=5).install()
os.kill(os.getpid(), signal.SIGINT)
os.kill(os.getpid(), signal.SIGTERM)  # a second signal changes nothing
t0 = time.monotonic()
code = proc.wait(timeout=10)
time.sleep(0.2)
print(seen, Scheduler.calls, code, INTERRUPTED.is_set(), round(time.monotonic() - t0, 1) < 2)
"""


def test_stop_on_interrupt_stops_the_job_processes_once() -> None:
    out = subprocess.run(
        [sys.executable, "-c", STOP_ON_INTERRUPT], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["['SIGINT']", "1", f"-{signal.SIGTERM.value}", "True", "True"]


def test_service_files_can_be_prepared() -> None:
    # (what dropping it prevents is tested end to end: tests/test_e2e.py,
    # test_engine_setting_change_neither_hangs_nor_reruns)
    from snakemake.persistence import PersistenceBase

    assert "target" in inspect.signature(PersistenceBase.cleanup_metadata).parameters


def test_a_resource_limit_set_in_onstart_bounds_the_jobs() -> None:
    from snakemake.scheduling.job_scheduler import JobScheduler

    # the scheduler's limits are these two dicts, read at every selection ...
    assert "self.resources = copy.copy(self.global_resources)" in inspect.getsource(
        JobScheduler.__init__
    )
    assert "for name in self.global_resources" in inspect.getsource(
        JobScheduler.update_available_resources
    )

    class Scheduler:
        def __init__(self) -> None:
            self.global_resources, self.resources = {"_cores": 2}, {"_cores": 2}

    s = Scheduler()
    compat.limit_resource(s, "dataforge_slot", 3)
    assert s.global_resources["dataforge_slot"] == s.resources["dataforge_slot"] == 3
    # (that it bounds real runs: tests/test_gpu_schedule.py, engines at once <= slots)


class _Job:
    def __init__(self, jobid: int, service: bool = False) -> None:
        self.jobid, self.is_service = jobid, service


class _Executor:
    """The parts of the local executor a group job uses: each job a future done in 50 ms."""

    def __init__(self) -> None:
        import concurrent.futures

        self.pool = concurrent.futures.ThreadPoolExecutor(4)

    def run_single_job(self, job: _Job):
        return self.pool.submit(time.sleep, 0.05 if not job.is_service else 5)


def test_a_group_ends_without_the_polling_second() -> None:
    from snakemake.executors.local import Executor

    assert "time.sleep(1)" in inspect.getsource(Executor.run_group_job)  # still polls
    group = [_Job(1, service=True), _Job(2), _Job(3)]
    t0 = time.monotonic()
    Executor.run_group_job(_Executor(), group)
    polled = time.monotonic() - t0
    t0 = time.monotonic()
    compat._GroupWait.run_group_job(_Executor(), group)
    waited = time.monotonic() - t0
    assert polled >= 1.0 and waited < 0.5, (polled, waited)
    original = Executor.run_group_job
    try:
        assert compat.wait_for_groups_without_polling()
        assert Executor.run_group_job is compat._GroupWait.run_group_job
    finally:
        Executor.run_group_job = original


def test_the_local_pool_can_be_widened() -> None:
    from snakemake.executors.local import Executor

    source = inspect.getsource(Executor.__post_init__)
    assert "workers = cores + 5" in source and "ThreadPoolExecutor" in source

    class Scheduler:
        _executor = _Executor()

    Scheduler._executor.workers = 7
    assert compat.widen_local_pool(Scheduler, 9)
    assert Scheduler._executor.workers == 16 and Scheduler._executor.pool._max_workers == 16


def test_service_file_notes_are_dropped_and_others_kept() -> None:
    import snakemake.api
    import snakemake.jobs
    import snakemake.report
    import snakemake.workflow

    sources = [inspect.getsource(m) for m in (snakemake.jobs, snakemake.workflow, snakemake.report)]
    for note in console._ServiceFileNotes.NOTES:  # Snakemake still prints each of them
        assert any(note in source for source in sources), note

    def kept(message: str) -> bool:
        record = logging.LogRecord("snakemake.logging", logging.WARNING, "", 0, message, None, None)
        return console._ServiceFileNotes().filter(record)

    assert not kept(
        "Warning: the following output files of rule serve_model were not present when the "
        "DAG was created:\n{'results/.serve/server-00000.json'}"
    )
    assert kept(
        "Warning: the following output files of rule generate_chunk were not present when the "
        "DAG was created:\n{'results/data/chunk-00001.parquet'}"
    )
    assert not kept(
        "1 jobs have missing provenance/metadata so that it in part cannot be used to trigger "
        "re-runs.\nRules with missing metadata: serve_model"
    )
    assert kept(
        "3 jobs have missing provenance/metadata so that it in part cannot be used to trigger "
        "re-runs.\nRules with missing metadata: generate_chunk serve_model"
    )
    assert not kept(
        "Missing metadata for file results/.serve/server-00002.json. Maybe metadata was "
        "deleted or it was created using an older version of Snakemake. This is a non "
        "critical warning."
    )
    assert kept("Missing metadata for file results/stats.json. Maybe metadata was deleted")
    assert kept("Select jobs to execute...")
    assert compat.quiet_service_file_notes() in (True, False)
    assert compat.quiet_service_file_notes() is False  # once


def test_reported_failures_get_no_snakemake_report(tmp_path) -> None:
    import snakemake.api
    import snakemake.jobs
    from snakemake_interface_logger_plugins.common import LogEvent

    source = inspect.getsource(snakemake.jobs.Job.get_log_error_info)
    assert "event=LogEvent.JOB_ERROR" in source and "log=" in source  # still how it reports

    reported, other = tmp_path / "reported.log", tmp_path / "other.log"
    reported.write_text("2026-12-06 01:00:00 ERROR dataforge: input.dataset: no file\n")
    other.write_text("Killed\n")

    def record(level: int, msg: str, **extra: object) -> logging.LogRecord:
        rec = logging.LogRecord("snakemake.logging", level, "", 0, msg, None, None)
        rec.__dict__.update(extra)
        return rec

    quiet = console._ReportedFailures()
    job_error = LogEvent.JOB_ERROR
    assert quiet.filter(record(logging.ERROR, "Error in rule x", event=job_error, log=[str(other)]))
    assert quiet.filter(record(logging.WARNING, "a warning before any reported failure"))
    assert not quiet.filter(
        record(logging.ERROR, "Error in rule y", event=job_error, log=[f"{reported} (check)"])
    )
    assert not quiet.filter(record(logging.ERROR, "WorkflowError:\nAt least one job did not"))
    assert quiet.filter(record(logging.INFO, "Complete log(s): .snakemake/log/x.log"))
    run_job = console._ReportedFailures()
    assert not run_job.filter(record(logging.ERROR, 'RuleException:\nJobFailed in file "x"'))
    assert not run_job.filter(record(logging.ERROR, "Exiting because a job execution failed"))
    assert snakemake.api is not None


def test_the_slurm_plugins_account_guess_is_quiet() -> None:
    import snakemake_executor_plugin_slurm as plugin
    import snakemake_executor_plugin_slurm.accounts as accounts

    source = inspect.getsource(plugin) + inspect.getsource(accounts)
    for note in console._AccountGuess.NOTES:  # the plugin still says each of them
        assert note in source, note
    assert "| tail -1" in inspect.getsource(accounts.get_account)  # and still guesses so

    def kept(message: str) -> bool:
        record = logging.LogRecord("snakemake.logging", logging.WARNING, "", 0, message, None, None)
        return console._AccountGuess().filter(record)

    assert not kept("No SLURM account given, trying to guess.")
    assert not kept(
        "No account was given, not able to get a SLURM account via sacct: sacct: invalid "
        "option -- '1'"
    )
    assert not kept("Unable to guess SLURM account. Trying to proceed without.")
    assert kept("Guessed SLURM account: physics")
    assert kept("SLURM sbatch failed. The error message was ...")
