"""Engine slots of a local run: one server per slot of GPUs, kept from group to group.

A local run lets at most `SEATS` serve jobs per engine slot run at once (a scheduler
resource, see `dataforge.snakemake_compat.limit_resource`): the group being generated and the
next one, whose chunk jobs are already connected when the first group's last chunk ends, so
that the engine never waits for Snakemake to start a group. A serve job takes a free seat of
a slot (a file lock, held until it exits; an idle slot first) and hands its group to the
slot's server, a process of its own
(`python -m dataforge.slot_server`) that holds the engine, pinned to the slot's GPUs, and
generates the chunks: the first group on the slot starts it, the next ones find it running,
its model loaded, its connections and input readers open. So the model is loaded once per slot
for the whole run, and a group costs little more than its chunk jobs. The slot servers belong
to the Snakemake process of the run: they stop when it ends (`stop_servers`, from the
workflow's onsuccess and onerror), and by themselves when it is gone (kill -9).

Standard library only (the serve job imports it). Each slot has a lock per seat,
`results/.serve/slots/slot-K.seat-S.lock`, one for starting its server, `slot-K.start.lock`,
and, while its server runs, `slot-K.json`: the server's pid, URL, identity token and owner
(the Snakemake process).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from dataforge import layout
from dataforge.guard import pid_alive

SLOTS = layout.SERVE / "slots"
SEATS = 2  # groups handed to one slot's server at once: the one generating and the next
ACQUIRE_TIMEOUT_S = 120.0  # the previous group's serve job may still be ending
START_TIMEOUT_S = 120.0  # for a slot server to publish its address


class SlotError(Exception):
    """No slot became free, or its server did not start."""


def acquire(count: int, timeout: float = ACQUIRE_TIMEOUT_S) -> tuple[int, Any]:
    """Lock a free seat of a slot among `count`, an idle slot first; return (slot index, the
    open lock file). The lock is released when the file is closed or the process ends."""
    SLOTS.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    while True:
        for seat in range(SEATS):
            for index in range(count):
                f = open(SLOTS / f"slot-{index}.seat-{seat}.lock", "a")  # noqa: SIM115 - held while in use
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    f.close()
                    continue
                return index, f
        if time.monotonic() > deadline:
            raise SlotError(f"no engine slot of {count} became free in {timeout:g} s")
        time.sleep(0.02)


def record_path(index: int) -> Path:
    return SLOTS / f"slot-{index}.json"


def read_record(index: int) -> dict[str, Any] | None:
    try:
        return json.loads(record_path(index).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_record(index: int, record: dict[str, Any]) -> None:
    from dataforge.atomic import write_json_atomic

    write_json_atomic(record_path(index), record)


def stop(pid: int, timeout: float = 40.0) -> bool:
    """SIGTERM a slot server (it stops its engine) and wait; whether it is gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not pid_alive(pid)


def ensure_server(index: int, owner: int, logs: Path) -> dict[str, Any]:
    """The record of slot `index`'s server for the Snakemake process `owner`: the one running
    there, or a new one (a server of another run is stopped first).

    Raises:
        SlotError: the new server did not publish its address in time.
    """
    SLOTS.mkdir(parents=True, exist_ok=True)
    with open(SLOTS / f"slot-{index}.start.lock", "a") as lock:  # the slot's two seats
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        return _ensure_server(index, owner, logs)


def _ensure_server(index: int, owner: int, logs: Path) -> dict[str, Any]:
    record = read_record(index)
    if record is not None and pid_alive(record.get("pid")):
        if record.get("owner") == owner:
            return record
        stop(record["pid"])
    record_path(index).unlink(missing_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "dataforge.slot_server", "--slot", str(index),
               "--owner", str(owner), "--log", str(logs / f"slot-{index}.log"),
               "--engine-log", str(logs / f"slot-{index}.engine.log")]  # fmt: skip
    proc = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # not stopped with the serve job, nor by Ctrl-C to the run
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        record = read_record(index)
        if record is not None and record.get("pid") == proc.pid:
            return record
        if proc.poll() is not None:
            raise SlotError(f"the server of slot {index} exited; see {logs}/slot-{index}.log")
        time.sleep(0.02)
    raise SlotError(f"the server of slot {index} did not start in {START_TIMEOUT_S:g} s")


def stop_servers() -> list[int]:
    """Stop every slot's server (the run is over), in parallel; return those that would not."""
    pids = []
    for path in sorted(SLOTS.glob("slot-*.json")) if SLOTS.is_dir() else []:
        try:
            pid = json.loads(path.read_text(encoding="utf-8")).get("pid")
        except (OSError, ValueError):
            continue
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
            pids.append(pid)
        path.unlink(missing_ok=True)
    return [pid for pid in pids if not stop(pid)]
