"""Memory against input size: a chunk's server on inputs of 100,000 and 2,000,000 rows with the
same chunk size must stay flat (at most 1.2x apart), and datatrove on the same inputs; and a
whole run's memory against its size: every process of a run of 8,000 and of 100,000 rows (16
and 200 chunks of 500, the default config, on the dummy engine), summed, at most 1.3x apart;
and the plan's memory by input format: the same rows as JSON Lines (the baseline), a JSON
array (alpaca's shape, streamed with ijson) and gzip-compressed JSON Lines, converted to
Parquet by the plan job, at two sizes.

    .venv/bin/python bench/memory.py [--rows 100000 2000000] [--chunk 500] [--no-datatrove]
        [--run-rows 8000 100000] [--format-rows 1000000 4000000] [--out FILE]

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
    run_sampling_memory,
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
        log = "".join(p.read_text() for p in (work / "logs" / "serve_model").glob("*.log"))
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


def run_whole(rows: int, chunk: int) -> dict:
    """A whole run of `rows` rows (the default config but the dummy engine, 16-token answers),
    with the summed RSS of all its processes sampled."""
    work = Path(tempfile.mkdtemp(prefix="dataforge-run-mem-"))
    try:
        data = write_prompt_parquet(work / "prompts.parquet", rows)
        config = {"input": {"dataset": str(data)}, "model": {"name": "bench"},
                  "engine": {"kind": "dummy", "dummy": {"completion_tokens": 16}},
                  "chunks": {"size": chunk}}  # fmt: skip
        (work / "config.yaml").write_text(json.dumps(config))
        m = run_sampling_memory(snakemake_command("config.yaml"), work)
        stats = json.loads((work / "results" / "stats.json").read_text())
        assert stats["rows"] == rows and stats["rows_failed"] == 0, stats
        return {"rows": rows, "chunks": stats["chunks"], **m}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def write_text_inputs(parquet: Path, folder: Path) -> dict[str, Path]:
    """The rows of `parquet` as JSON Lines, a JSON array and gzip-compressed JSON Lines."""
    import gzip

    import pyarrow.parquet as pq

    paths = {"jsonl": folder / "rows.jsonl", "json array": folder / "rows.json",
             "jsonl.gz": folder / "rows.jsonl.gz"}  # fmt: skip
    with (
        open(paths["jsonl"], "w", encoding="utf-8") as lines,
        open(paths["json array"], "w", encoding="utf-8") as array,
        gzip.open(paths["jsonl.gz"], "wt", encoding="utf-8", compresslevel=1) as packed,
    ):
        array.write("[\n")
        first = True
        for batch in pq.ParquetFile(parquet).iter_batches(batch_size=10_000):
            text = [json.dumps(row, ensure_ascii=False) for row in batch.to_pylist()]
            block = "\n".join(text) + "\n"
            lines.write(block)
            packed.write(block)
            array.write(("" if first else ",\n") + ",\n".join(text))
            first = False
        array.write("\n]\n")
    return paths


def run_plan_formats(rows: int, chunk: int) -> list[dict]:
    """The plan job's peak RSS and time on the same rows in each text format."""
    work = Path(tempfile.mkdtemp(prefix="dataforge-formats-"))
    try:
        parquet = write_prompt_parquet(work / "prompts.parquet", rows)
        results = []
        for fmt, path in write_text_inputs(parquet, work).items():
            run = work / fmt.replace(" ", "-")
            run.mkdir()
            config = {"input": {"dataset": str(path)}, "model": {"name": "bench"},
                      "engine": {"kind": "dummy"}, "chunks": {"size": chunk}}  # fmt: skip
            (run / "config.yaml").write_text(json.dumps(config))
            m = measure(snakemake_command("config.yaml", "results/plan.json"), cwd=run)
            plan = json.loads((run / "results" / "plan.json").read_text())
            assert plan["rows"] == rows, (fmt, plan["rows"])
            results.append({"format": fmt, "rows": rows, "input_mb": path.stat().st_size / 2**20,
                            "plan_rss_mb": m["peak_rss_mb"], "plan_s": m["wall_s"]})  # fmt: skip
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 2_000_000])
    parser.add_argument("--chunk", type=int, default=500)
    parser.add_argument("--no-datatrove", action="store_true")
    parser.add_argument("--run-rows", type=int, nargs="+", default=[8_000, 100_000])
    parser.add_argument("--format-rows", type=int, nargs="+", default=[1_000_000, 4_000_000])
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
    runs = [run_whole(rows, args.chunk) for rows in args.run_rows]
    run_growth = runs[-1]["peak_sum_rss_mb"] / runs[0]["peak_sum_rss_mb"]
    print(f"\nwhole runs, every process summed (peak; {args.chunk} rows per chunk)")
    print(table(runs, [
        ("rows", "rows", ","), ("chunks", "chunks", ","), ("wall_s", "wall s", ".1f"),
        ("peak_sum_rss_mb", "all processes MB", ".0f"), ("peak_processes", "processes", ".0f"),
    ]))  # fmt: skip
    print(f"largest / smallest run: x{run_growth:.2f}")
    formats = [r for rows in args.format_rows for r in run_plan_formats(rows, args.chunk)]
    baseline = {r["rows"]: r for r in formats if r["format"] == "jsonl"}
    for r in formats:
        r["rss_vs_jsonl"] = r["plan_rss_mb"] / baseline[r["rows"]]["plan_rss_mb"]
        r["time_vs_jsonl"] = r["plan_s"] / baseline[r["rows"]]["plan_s"]
    small, large = min(args.format_rows), max(args.format_rows)
    format_growth = {
        r["format"]: r["plan_rss_mb"] / next(
            s["plan_rss_mb"] for s in formats if s["format"] == r["format"] and s["rows"] == small
        )
        for r in formats if r["rows"] == large
    }  # fmt: skip
    print("\nthe plan by input format (it converts text to Parquet once; peak RSS of the run)")
    print(table(formats, [
        ("format", "format", ""), ("rows", "rows", ","), ("input_mb", "input MB", ".1f"),
        ("plan_rss_mb", "plan MB", ".0f"), ("rss_vs_jsonl", "MB / jsonl", ".2f"),
        ("plan_s", "plan s", ".1f"), ("time_vs_jsonl", "s / jsonl", ".2f"),
    ]))  # fmt: skip
    grown = ", ".join(f"{k} x{v:.2f}" for k, v in format_growth.items())
    print(f"largest / smallest input: {grown}")
    write_results("memory", {"chunk": args.chunk, "results": results, "growth": growth,
                             "runs": runs, "run_growth": run_growth, "formats": formats,
                             "format_growth": format_growth}, args.out)  # fmt: skip


if __name__ == "__main__":
    main()
