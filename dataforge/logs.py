"""Logging for the workflow's scripts: everything goes to the rule's log file.

`run_logged` routes `logging`, stderr and uncaught tracebacks into the job's log and, for a
dataforge error, also prints its one-line message to the terminal, so the user sees the reason
without opening the log. Standard library only (the chunk job imports it).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def configure_logging(log_path: str | Path, level: int = logging.INFO) -> None:
    """Send logging and stderr to `log_path` (appending)."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    stream = open(log_path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives as long as the job
    sys.stderr = stream
    logging.basicConfig(
        level=level,
        stream=stream,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )


def run_logged(log_path: str | Path, main: Callable[[], T]) -> T:
    """Run `main` with logging into `log_path`; exit 1 with a one-line message on failure."""
    terminal = sys.stderr
    configure_logging(log_path)
    try:
        return main()
    except Exception as e:
        from dataforge.errors import DataforgeError

        # The chunk job's own error type is defined without importing the package's heavy parts.
        expected = isinstance(e, DataforgeError) or type(e).__name__ == "ChunkJobError"
        if expected:
            logging.getLogger("dataforge").error("%s", e)
        else:
            logging.getLogger("dataforge").exception("unexpected error")
        print(
            f"dataforge: {e}" if expected else f"dataforge: unexpected error: {e!r}", file=terminal
        )
        print(f"dataforge: details in {log_path}", file=terminal)
        sys.exit(1)
