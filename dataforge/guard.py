"""Run an engine in its own process group and make sure the whole group dies with its owner.

`python -m dataforge.guard [--grace-s 15] -- CMD ...`

The guard starts CMD in a new session and watches its own standard input, a pipe held by the
process that started it (the server). When that pipe closes, however the owner ended (normal
stop, SIGTERM, kill -9 of the whole Snakemake process group), or when the guard gets SIGTERM,
SIGINT or SIGHUP, it sends SIGTERM to the engine's process group, waits `--grace-s`, then
SIGKILLs what is left. vLLM starts child processes and ignores a SIGTERM during start-up, so
signalling one PID is not enough. The guard itself runs in a session of its own so that a signal
to Snakemake's process group does not kill it before it has cleaned up. It exits with the
engine's exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path


def _kill_group(pgid: int, grace_s: float, proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        proc.poll()
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    proc.wait()


def pid_alive(pid: int | None) -> bool:
    """Whether process `pid` runs (a zombie does not)."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def running_guards(workdir: str | Path) -> list[int]:
    """The guards still running for the run in `workdir` (their working directory; Linux
    /proc). A serve job that Snakemake kills (SIGKILL, when a sibling chunk fails) leaves its
    guard stopping the engine on its own for a few seconds."""
    root = str(Path(workdir).resolve())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            if b"dataforge.guard" not in cmdline[:3]:
                continue
            cwd = os.readlink(entry / "cwd")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and (cwd == root or cwd.startswith(root + "/")):
            found.append(int(entry.name))
    return found


def wait_for_guards(workdir: str | Path, timeout: float = 30.0) -> list[int]:
    """Wait until no guard of the run in `workdir` runs (each ends once its engine's process
    group is gone: at most its grace plus a moment); return those still running."""
    deadline = time.monotonic() + timeout
    while (left := running_guards(workdir)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the engine's exit code."""
    parser = argparse.ArgumentParser(description="Run CMD in its own process group, reaped.")
    parser.add_argument("--grace-s", type=float, default=15.0)
    parser.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("no command given")

    stop = False

    def request_stop(*_: object) -> None:
        nonlocal stop
        stop = True

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, request_stop)

    proc = subprocess.Popen(cmd, start_new_session=True, stdin=subprocess.DEVNULL)
    stdin = sys.stdin.fileno()
    watch_stdin = True
    while not stop:
        code = proc.poll()
        if code is not None:
            # The engine ended by itself; take any children it left behind with it.
            _kill_group(proc.pid, 0.5, proc)
            return 128 - code if code < 0 else code
        if watch_stdin:
            try:
                ready, _, _ = select.select([stdin], [], [], 0.2)
            except InterruptedError:
                continue
            if ready and not os.read(stdin, 4096):
                break  # the owner is gone (or asked us to stop by closing the pipe)
        else:
            time.sleep(0.2)
    _kill_group(proc.pid, args.grace_s, proc)
    code = proc.returncode or 0
    return 128 - code if code < 0 else code  # killed by signal N: 128 + N, as shells report


if __name__ == "__main__":
    sys.exit(main())
