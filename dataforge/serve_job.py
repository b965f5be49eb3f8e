"""Entry point of the serve job (rule serve_model).

`python -m dataforge.serve_job --server ID --service-file F --log L --engine-log E`

The engine settings come from `config.json` next to the service file (written by the
workflow's main process), not from the command line: see rules/serve.smk for why.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dataforge.logs import run_logged

CONFIG_NAME = "config.json"


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and run the server until Snakemake stops it."""
    parser = argparse.ArgumentParser(description="Run one dataforge engine server.")
    parser.add_argument("--server", required=True)
    parser.add_argument("--service-file", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--engine-log", required=True)
    args = parser.parse_args(argv)

    def run() -> None:
        from dataforge.driver import serve

        config_file = Path(args.service_file).parent / CONFIG_NAME
        config = json.loads(config_file.read_text(encoding="utf-8"))
        code = serve(config, args.server, args.service_file, args.engine_log)
        if code:
            raise SystemExit(code)

    run_logged(args.log, run)


if __name__ == "__main__":
    main()
