"""Entry point of the serve job (rule serve_model), one per group of chunks.

`python -m dataforge.serve_job --parent PID --server ID --service-file F --log L --engine-log E`

In a local run the serve job hands its group to an engine slot's server (`dataforge.slots`):
it takes a free slot, finds or starts the slot's server, publishes that server's address in
its service file, and waits until Snakemake stops it when the group's chunks are done. The
slot's server and its engine stay up for the next group (one model load per slot). Standard
library only, so this costs a group little. In a Slurm job the serve job is the server itself
(`dataforge.driver`), with the engine on the job's GPUs, and ends with the job.

The engine settings and the slots come from results/.serve/config.json (written by the
workflow's main process), not from the command line: see rules/serve.smk for why.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import threading
import uuid
from pathlib import Path

from dataforge import layout
from dataforge.logs import run_logged

log = logging.getLogger("dataforge.serve")


def write_service_file(path: str, server: str, url: str, pid: int, token: str) -> None:
    """Publish the address and identity of the server that generates this group's chunks
    (atomically). `ppid` is the Snakemake process, which tells a chunk job this run's file
    from a leftover of another."""
    from dataforge.atomic import write_json_atomic

    write_json_atomic(
        path,
        {
            "url": url,
            "pid": pid,
            "ppid": os.getppid(),
            "host": socket.gethostname(),
            "server": server,
            "token": token,
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),  # None outside Slurm
        },
    )


def hand_to_slot(args: argparse.Namespace, slot_count: int) -> None:
    """A local run: the group's chunks go to an engine slot's server; wait to be stopped."""
    from dataforge import slots
    from dataforge.guard import pid_alive

    index, _lock = slots.acquire(slot_count)  # held until this process ends
    record = slots.ensure_server(index, args.parent, Path(args.log).parent)
    write_service_file(
        args.service_file, args.server, record["url"], record["pid"], record["token"]
    )
    log.info("group %s: slot %d's server (pid %d, %s)", args.server, index, record["pid"],
             ", ".join(record["devices"]) or "no GPU")  # fmt: skip
    with open(args.engine_log, "a", encoding="utf-8") as f:
        f.write(f"group {args.server} ran on slot {index}: see slot-{index}.engine.log\n")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        if not pid_alive(args.parent):
            log.error("group %s: the Snakemake process %d is gone", args.server, args.parent)
            break
    log.info("group %s: done", args.server)


def serve_here(args: argparse.Namespace, data: dict) -> None:
    """A Slurm job (or a run without slots): this process is the group's server."""
    # Bind and publish the address before importing anything heavy: the chunk jobs are
    # already waiting for it.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    host, port = sock.getsockname()
    token = uuid.uuid4().hex
    write_service_file(args.service_file, args.server, f"http://{host}:{port}", os.getpid(), token)

    import asyncio

    from dataforge.driver import Driver
    from dataforge.settings import Config

    config, basedir = Config.from_dict(data["config"]), Path(data["basedir"])
    driver = Driver(config, args.server, sock, token, args.engine_log, basedir, args.parent)
    code = asyncio.run(driver.run())
    if code:
        raise SystemExit(code)


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and serve the group until Snakemake stops the job."""
    parser = argparse.ArgumentParser(description="Serve one group of chunks.")
    parser.add_argument(
        "--parent", type=int, help="PID of the Snakemake process (the shell's $PPID)"
    )
    parser.add_argument("--server", required=True)
    parser.add_argument("--service-file", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--engine-log", required=True)
    args = parser.parse_args(argv)
    if args.parent is None:
        args.parent = os.getppid()

    def run() -> None:
        data = json.loads(layout.SERVE_CONFIG.read_text(encoding="utf-8"))
        slot_table = data.get("slots")
        if slot_table and not os.environ.get("SLURM_JOB_ID"):
            hand_to_slot(args, len(slot_table))
        else:
            serve_here(args, data)

    run_logged(args.log, run)


if __name__ == "__main__":
    main()
