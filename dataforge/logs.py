"""Logging for the workflow's jobs: everything goes to the rule's log file.

`run_logged` is for a job that is a process of its own (the serve and chunk jobs, the publish
script): it routes `logging`, stderr and uncaught tracebacks into the job's log. `job_log` is
for a `run:` job, which Snakemake runs in a thread of its own process: it routes the logging of
that thread only, and turns an error into an exception that fails the job. Both print a
dataforge error's one-line message to the terminal, so the user sees the reason without opening
the log. Standard library only (the chunk job imports it).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO, TypeVar

T = TypeVar("T")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JobFailed(Exception):
    """A `run:` job failed; its reason is already on the terminal and in its log."""


def configure_logging(log_path: str | Path, level: int = logging.INFO) -> None:
    """Send logging and stderr to `log_path` (appending)."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    stream = open(log_path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives as long as the job
    sys.stderr = stream
    logging.basicConfig(level=level, stream=stream, format=FORMAT, force=True)


def run_logged(log_path: str | Path, main: Callable[[], T]) -> T:
    """Run `main` with logging into `log_path`; exit 1 with a one-line message on failure."""
    terminal = sys.stderr
    configure_logging(log_path)
    try:
        return main()
    except Exception as e:
        _report(e, log_path, terminal)
        sys.exit(1)


def _report(error: Exception, log_path: str | Path, terminal: TextIO) -> str:
    """Log `error` (with its traceback when unexpected) and print its line to `terminal`."""
    from dataforge.errors import DataforgeError

    expected = isinstance(error, DataforgeError)
    if expected:
        logging.getLogger("dataforge").error("%s", error)
    else:
        logging.getLogger("dataforge").exception("unexpected error")
    line = f"dataforge: {error}" if expected else f"dataforge: unexpected error: {error!r}"
    print(line, file=terminal)
    print(f"dataforge: details in {log_path}", file=terminal)
    return line


class _ThreadLog(logging.FileHandler):
    """Writes the records of one thread to the job's log. Records of other threads (Snakemake's,
    the progress monitor's) go where they would go without this handler: Python sends a record
    that no handler takes to `logging.lastResort` (warnings and errors on stderr), and this
    handler, being on the root logger, would otherwise count as taking it."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, encoding="utf-8")  # appends, like configure_logging
        self.setFormatter(logging.Formatter(FORMAT))
        self.thread = threading.get_ident()

    def handle(self, record: logging.LogRecord) -> bool:
        if record.thread == self.thread:
            return super().handle(record)
        last = logging.lastResort
        if last is not None and record.levelno >= last.level and self.is_only_handler(record):
            last.handle(record)
        return False

    def is_only_handler(self, record: logging.LogRecord) -> bool:
        """Whether no other handler sees `record`; of several job handlers, the first one."""
        logger: logging.Logger | None = logging.getLogger(record.name)
        while logger is not None:
            others = [h for h in logger.handlers if not isinstance(h, _ThreadLog)]
            if others:
                return False
            if not logger.propagate:
                break
            logger = logger.parent
        return next(h for h in logging.getLogger().handlers if isinstance(h, _ThreadLog)) is self


@contextlib.contextmanager
def job_log(log_path: str | Path) -> Iterator[None]:
    """The body of a `run:` job: its logging (this thread's, at INFO) into `log_path`.

    A `run:` job runs in a worker thread of Snakemake's own process (`force-use-threads` in
    profiles/default), so nothing process-wide may change: not sys.stderr, not the root logger's
    level, and no `sys.exit` (in a worker thread Snakemake would never learn that the job ended).
    An error is logged, its one line printed to the terminal, and the job fails with JobFailed.
    """
    path = Path(log_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = _ThreadLog(path)
    package = logging.getLogger("dataforge")
    level = package.level
    root = logging.getLogger()
    root.addHandler(handler)
    if package.getEffectiveLevel() > logging.INFO:
        package.setLevel(logging.INFO)
    try:
        yield
    except Exception as e:
        line = _report(e, path, sys.stderr)
        raise JobFailed(line.removeprefix("dataforge: ")) from None
    finally:
        package.setLevel(level)
        root.removeHandler(handler)
        handler.close()
