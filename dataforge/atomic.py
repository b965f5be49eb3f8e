"""Atomic file writes: write beside the target under a temporary name, then rename.

Readers (the stats job, a monitor, publish) never see a partial file, and a killed writer leaves
only a `*.tmp-*` file that no output glob matches.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def temp_path(target: str | Path) -> Path:
    """A unique temporary name in the target's folder (same file system, so rename is atomic)."""
    target = Path(target)
    return target.with_name(f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def remove_stale_temps(target: str | Path) -> None:
    """Delete temporary files left by killed writers of `target`."""
    target = Path(target)
    if target.parent.is_dir():
        for stale in target.parent.glob(f".{target.name}.tmp-*"):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `target` atomically."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(target)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_atomic(target: str | Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp_path)` and move the result to `target` atomically."""
    with atomic_path(target) as tmp:
        write(tmp)


def write_text_atomic(target: str | Path, text: str) -> None:
    """Write a text file atomically."""
    write_atomic(target, lambda p: p.write_text(text, encoding="utf-8"))


def write_json_atomic(target: str | Path, data: Any) -> None:
    """Write a JSON file atomically (indented, UTF-8, trailing newline)."""
    write_text_atomic(target, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
