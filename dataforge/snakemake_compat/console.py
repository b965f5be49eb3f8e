"""What Snakemake 9.27.1 and its Slurm plugin print that dataforge keeps off the console (part
of `dataforge.snakemake_compat`: each names the version it targets and the test that shows it
is still needed)."""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from typing import Any


class _OnlyFinalLines(logging.Filter):
    """After an interrupt: Snakemake's console shows no more job errors or warnings (each
    stopped job would print its command and a RuleException); its log file keeps them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING and "finishing currently running" not in str(
            record.msg
        )


def _quiet_console() -> None:
    from snakemake.logging import logger

    for handler in logger.handlers:
        if not isinstance(handler, logging.FileHandler):
            handler.addFilter(_OnlyFinalLines())


def _add_once(kind: type[logging.Filter]) -> bool:
    """Add a filter of `kind` to Snakemake's logger unless it has one; whether it was added."""
    from snakemake.logging import logger

    if any(isinstance(f, kind) for f in logger.filters):
        return False
    logger.addFilter(kind())
    return True


class _ServiceFileNotes(logging.Filter):
    """Drops Snakemake's notes that only concern service files (see `quiet_service_file_notes`)."""

    NOTES = (
        "present when the DAG was created",  # jobs.py, every run
        "provenance/metadata so that",  # workflow.py, `-n` and reruns
        "Missing metadata for file",  # report/__init__.py, `--report`
    )

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if not any(note in text for note in self.NOTES):
            return True
        if "Rules with missing metadata:" in text:
            return text.rsplit(":", 1)[1].split() != ["serve_model"]
        paths = re.findall(r"[\w./-]*results/[\w./-]+", text)
        return not paths or any("/.serve/" not in p for p in paths)


def quiet_service_file_notes() -> bool:
    """Keep off the terminal the notes Snakemake 9.27.1 prints about the service files that
    `prepare_service_file` makes without metadata: "the following output files of rule
    serve_model were not present when the DAG was created" (every run), "N jobs have missing
    provenance/metadata … serve_model" (`-n`, reruns) and "Missing metadata for file
    results/.serve/server-N.json … non critical" (`--report`, once per group). A note that
    names any other file or rule is kept. Returns whether the filter was added (once).
    Test: test_snakemake_compat.py::test_service_file_notes_are_dropped_and_others_kept.
    """
    return _add_once(_ServiceFileNotes)


class _ReportedFailures(logging.Filter):
    """Drops Snakemake's report of a job failure that dataforge already reported in one line
    (see `quiet_reported_failures`); from then on, the console shows no more warnings or
    errors, as after an interrupt."""

    def __init__(self) -> None:
        super().__init__()
        self.reported = False

    @staticmethod
    def _reported_in(logs: list[str]) -> bool:
        """Whether a job's log holds dataforge's error record (its line reached the terminal)."""
        for log in logs:
            with contextlib.suppress(OSError), open(log.split(" ")[0], "rb") as f:
                f.seek(0, 2)
                f.seek(max(0, f.tell() - (64 << 10)))
                if b" ERROR dataforge: " in f.read():
                    return True
        return False

    def filter(self, record: logging.LogRecord) -> bool:
        from snakemake_interface_logger_plugins.common import LogEvent

        if getattr(record, "event", None) == LogEvent.JOB_ERROR:
            if self.reported or self._reported_in(list(getattr(record, "log", None) or [])):
                self.reported = True
                return False
            return True
        if record.levelno >= logging.WARNING and "JobFailed in file" in str(record.msg):
            self.reported = True  # a `run:` job's dataforge.logs.JobFailed
            return False
        return not (self.reported and record.levelno >= logging.WARNING)


def quiet_reported_failures() -> bool:
    """Keep Snakemake 9.27.1's job error report off the console when the job already printed
    dataforge's one-line reason: its `RuleException` traceback (a `run:` job raises
    `JobFailed`), its "Error in rule …: message: None … log: … (check log file(s))" block and
    the closing "Exiting because a job execution failed" / "WorkflowError: At least one job
    did not complete successfully". Snakemake's log file (.snakemake/log/) keeps all of it;
    a failure dataforge did not report (a job killed by a signal) is shown as before.
    Called from onstart (the console handlers exist then). Returns whether it was added.
    Test: test_snakemake_compat.py::test_reported_failures_get_no_snakemake_report and
    tests/test_inputs.py::test_input_errors_stop_before_any_job_in_one_line.
    """
    from snakemake.logging import logger

    consoles = [h for h in logger.handlers if not isinstance(h, logging.FileHandler)]
    fresh = [h for h in consoles if not any(isinstance(f, _ReportedFailures) for f in h.filters)]
    for handler in fresh:
        handler.addFilter(_REPORTED)
    return bool(fresh)


_REPORTED = _ReportedFailures()  # the console's filter; also told of sbatch refusals


def report_sbatch_refusals(scheduler: Any) -> bool:
    """Print sbatch's reason when it refuses a group job: snakemake-executor-plugin-slurm
    2.8.0 reports it as the job's error message ("SLURM sbatch failed. The error message was
    '…'"), but Snakemake 9.27.1's `GroupJob.log_error` drops the message of a group job and
    prints only "Error in group …" (nor is it in the log files). The executor's
    `print_job_error` is wrapped to print `dataforge: Slurm refused …: <reason>` first.
    Returns whether it was wrapped (a Slurm run, once).
    Test: tests/test_slurm.py::test_an_sbatch_refusal_reaches_the_terminal_in_one_line.
    """
    executor = getattr(scheduler, "_executor", None)
    original = getattr(executor, "print_job_error", None)
    if original is None or getattr(original, "dataforge", False):
        return False

    refused: set[str] = set()

    def print_job_error(job_info: Any, msg: Any = None, **kwargs: Any) -> None:
        text = str(msg or "")
        match = re.search(r"SLURM sbatch failed.*?The error message was '(.*?)'", text, re.S)
        if match:
            reason = " ".join(match.group(1).split())
            if reason not in refused:  # once, not once per retry
                refused.add(reason)
                print(f"dataforge: Slurm refused a serve job: {reason}", file=sys.stderr)
            _REPORTED.reported = True
        original(job_info, msg, **kwargs)

    print_job_error.dataforge = True  # type: ignore[attr-defined]
    executor.print_job_error = print_job_error
    return True


class _AccountGuess(logging.Filter):
    """Drops the Slurm plugin's failed account guess (see `quiet_account_guess`)."""

    NOTES = (
        "No SLURM account given, trying to guess.",
        "No account was given, not able to get a SLURM account via sacct",
        "Unable to guess SLURM account. Trying to proceed without.",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.NOTES)


def quiet_account_guess() -> bool:
    """Keep off the terminal what snakemake-executor-plugin-slurm 2.8.0 prints when no
    `slurm_account` is set: "No SLURM account given, trying to guess.", then, as its guess runs
    `sacct … | tail -1` without a shell, "not able to get a SLURM account via sacct: sacct:
    invalid option -- '1'" and "Unable to guess SLURM account. Trying to proceed without."
    Called only where dataforge found that the site enforces no account (`dataforge.slurm`),
    so that submitting without one is right. Returns whether the filter was added (once).
    Test: test_snakemake_compat.py::test_the_slurm_plugins_account_guess_is_quiet.
    """
    return _add_once(_AccountGuess)
