"""The server of one engine slot of a local run (see `dataforge.slots`).

`python -m dataforge.slot_server --slot K --owner PID --log L --engine-log E`

Started by the first serve job on the slot, in a session of its own; it publishes its address
in the slot's record at once, then serves the chunks of every group the serve jobs hand it
(`dataforge.driver`), with the engine on the slot's GPUs. It stops on SIGTERM (the run ends)
or when the Snakemake process `--owner` is gone.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import time
import uuid
from pathlib import Path

from dataforge import layout, slots
from dataforge.logs import run_logged


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slot", type=int, required=True)
    parser.add_argument("--owner", type=int, required=True, help="the Snakemake process")
    parser.add_argument("--log", required=True)
    parser.add_argument("--engine-log", required=True)
    args = parser.parse_args(argv)

    def run() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        host, port = sock.getsockname()
        token = uuid.uuid4().hex
        data = json.loads(layout.SERVE_CONFIG.read_text(encoding="utf-8"))
        devices = data["slots"][args.slot]
        slots.write_record(args.slot, {
            "pid": os.getpid(), "url": f"http://{host}:{port}", "token": token,
            "owner": args.owner, "devices": devices, "host": socket.gethostname(),
            "started": time.time(),
        })  # fmt: skip
        import asyncio

        from dataforge.driver import Driver
        from dataforge.settings import Config

        config = Config.from_dict(data["config"])
        driver = Driver(
            config, f"slot-{args.slot}", sock, token, args.engine_log, Path(data["basedir"]),
            parent=args.owner, devices=devices,
        )  # fmt: skip
        try:
            code = asyncio.run(driver.run())
        finally:
            record = slots.read_record(args.slot)
            if record is not None and record.get("pid") == os.getpid():
                slots.record_path(args.slot).unlink(missing_ok=True)
        if code:
            raise SystemExit(code)

    run_logged(args.log, run)


if __name__ == "__main__":
    main()
