"""Entry point of the serve job (rule serve_model).

`python -m dataforge.serve_job --server ID --service-file F --log L --engine-log E`

The engine settings come from results/.serve/config.json (written by the workflow's main
process), not from the command line: see rules/serve.smk for why.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import uuid
from pathlib import Path

from dataforge import layout
from dataforge.logs import run_logged


def write_service_file(path: str, server: str, sock: socket.socket, token: str) -> None:
    """Publish the server's address and identity (atomically)."""
    from dataforge.atomic import write_json_atomic

    host, port = sock.getsockname()
    write_json_atomic(
        path,
        {
            "url": f"http://{host}:{port}",
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "host": socket.gethostname(),
            "server": server,
            "token": token,
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),  # None outside Slurm
        },
    )


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and run the server until Snakemake stops it."""
    parser = argparse.ArgumentParser(description="Run one dataforge engine server.")
    parser.add_argument(
        "--parent", type=int, help="PID of the Snakemake process (the shell's $PPID)"
    )
    parser.add_argument("--server", required=True)
    parser.add_argument("--service-file", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--engine-log", required=True)
    args = parser.parse_args(argv)

    def run() -> None:
        # Bind and publish the address before importing anything heavy: the chunk jobs are
        # already waiting for it.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        token = uuid.uuid4().hex
        write_service_file(args.service_file, args.server, sock, token)

        import asyncio

        from dataforge.driver import Driver
        from dataforge.settings import Config

        data = json.loads(layout.SERVE_CONFIG.read_text(encoding="utf-8"))
        config, basedir = Config.from_dict(data["config"]), Path(data["basedir"])

        driver = Driver(config, args.server, sock, token, args.engine_log, basedir, args.parent)
        code = asyncio.run(driver.run())
        if code:
            raise SystemExit(code)

    run_logged(args.log, run)


if __name__ == "__main__":
    main()
