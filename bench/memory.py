"""Memory against input size: a chunk's server on inputs of 100,000 and 2,000,000 rows with the
same chunk size must stay flat (at most 1.2x apart), and datatrove on the same inputs.

    .venv/bin/python bench/memory.py [--rows 100000 2000000] [--chunk 500] [--no-datatrove]
        [--out FILE]

For each input size (Parquet, row groups of 10,000 rows): dataforge plans the whole input and
runs its first chunk only (`snakemake results/data/chunk-00000.parquet`) on the zero-latency
loopback server; the peak RSS of that chunk's server process (the process that reads the rows,
sends the requests and writes the chunk; the chunk job itself is a stdlib-only client) comes
from its log, the plan job's and the whole tree's from the run. datatrove 0.10.1 runs the same
first chunk (its reader limited to the chunk) in its own environment. Writes
bench/results/memory.json.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from client_overhead import dataforge_config
from common import (
    datatrove_command,
    loopback_server,
    measure,
    snakemake_command,
    table,
    write_prompt_parquet,
    write_results,
)


def run_dataforge(data: Path, url: str, chunk: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="dataforge-mem-"))
    try:
        (work / "config.yaml").write_text(json.dumps(dataforge_config(data, url, chunk, 1)))
        plan = measure(snakemake_command("config.yaml", "results/plan.json"), cwd=work)
        run = measure(snakemake_command("config.yaml", "results/data/chunk-00000.parquet"), work)
        log = (work / "logs" / "serve_model" / "00000.log").read_text()
        server = float(re.search(r"peak RSS (\d+) MB", log)[1])
        return {"plan_rss_mb": plan["peak_rss_mb"], "server_rss_mb": server,
                "tree_rss_mb": run["peak_rss_mb"], "run_s": run["wall_s"]}  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_datatrove(data: Path, url: str, chunk: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="datatrove-mem-"))
    try:
        m = measure(datatrove_command(data.parent, work, url, "--chunk", str(chunk),
                                      "--limit", str(chunk)))  # fmt: skip
        return {"datatrove_rss_mb": m["peak_rss_mb"], "datatrove_s": m["wall_s"]}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 2_000_000])
    parser.add_argument("--chunk", type=int, default=500)
    parser.add_argument("--no-datatrove", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    results = []
    with loopback_server() as base:
        for rows in args.rows:
            with tempfile.TemporaryDirectory(prefix="bench-mem-input-") as tmp:
                data = write_prompt_parquet(Path(tmp) / "in" / "prompts.parquet", rows)
                r = {"rows": rows, "input_mb": data.stat().st_size / 2**20}
                r.update(run_dataforge(data, f"{base}/v1", args.chunk))
                if not args.no_datatrove:
                    r.update(run_datatrove(data, f"{base}/v1", args.chunk))
                results.append(r)
    first, last = results[0], results[-1]
    growth = {k: last[k] / first[k] for k in first if k.endswith("_rss_mb")}
    print(f"\none chunk of {args.chunk} rows out of inputs of different sizes (peak RSS, MB)")
    print(table(results, [
        ("rows", "input rows", ","), ("input_mb", "input MB", ".1f"),
        ("server_rss_mb", "dataforge server", ".0f"), ("plan_rss_mb", "dataforge plan", ".0f"),
        ("tree_rss_mb", "largest process", ".0f"), ("datatrove_rss_mb", "datatrove", ".0f"),
    ]))  # fmt: skip
    print("largest / smallest input: " + ", ".join(f"{k} x{v:.2f}" for k, v in growth.items()))
    write_results("memory", {"chunk": args.chunk, "results": results, "growth": growth}, args.out)


if __name__ == "__main__":
    main()
