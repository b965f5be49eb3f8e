"""Client overhead and latency-bound throughput: dataforge, datatrove and a bare async client
against the same loopback OpenAI-compatible server, in one run.

    .venv/bin/python bench/client_overhead.py [--rows 20000] [--chunk-sizes 500 5000]
        [--latency-ms 0 200] [--no-datatrove] [--out FILE]

For each server latency (bench/loopback.py on 127.0.0.1, 16-token answers), on the same rows:
- `bare`: one async client process (aiohttp, concurrency 256) that only sends the requests and
  keeps nothing, the floor for any client;
- `datatrove`: datatrove 0.10.1's InferenceRunner as generate_data.py sets it up (Parquet in,
  checkpointed chunks of the first chunk size, Parquet out), `server_type="endpoint"`, in its
  own environment (bench/.venv-datatrove, built on first use);
- `dataforge`: a whole `snakemake` run (`engine.kind: endpoint`) in a fresh directory for each
  chunk size: plan, chunk jobs, Parquet files, stats.json and the card.
All use concurrency 256. The table has wall time, requests/s, CPU seconds of the process tree,
the largest peak RSS, the ratio to the bare client, and, with latency, how busy the client kept
its concurrency: the server's time-weighted mean of requests in flight over the window from
the first request to the last answer, divided by 256, and the throughput in that window as a
share of 256 / latency. Writes bench/results/client_overhead.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    datatrove_command,
    loopback_server,
    measure,
    snakemake_command,
    table,
    write_prompt_parquet,
    write_results,
)

CONCURRENCY = 256


def bare_client(url: str, rows: int) -> None:
    """Send one request per row with bounded concurrency; keep nothing (child process)."""
    import aiohttp

    async def main() -> None:
        sem = asyncio.Semaphore(CONCURRENCY)
        connector = aiohttp.TCPConnector(limit=CONCURRENCY)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one(i: int) -> None:
                body = {
                    "model": "bench",
                    "messages": [{"role": "user", "content": f"question {i} about things"}],
                    "max_tokens": 16,
                }
                async with sem, session.post(url + "/chat/completions", json=body) as resp:
                    await resp.json()

            await asyncio.gather(*(one(i) for i in range(rows)))

    asyncio.run(main())


def dataforge_config(data: Path, url: str, size: int, per_server: int | None) -> dict:
    chunks = {"size": size} if per_server is None else {"size": size, "per_server": per_server}
    return {
        "input": {"dataset": str(data)},
        "model": {"name": "bench"},
        "engine": {"kind": "endpoint", "url": url, "max_concurrent_requests": CONCURRENCY},
        "sampling": {"max_tokens": 16, "temperature": None, "seed": None},
        "chunks": chunks,
    }


EMPTY_SNAKEFILE = """
rule all:
    output: "done.txt"
    shell: "touch {output}"
"""


def run_empty_snakemake() -> dict:
    """Snakemake's own fixed cost on this machine: start, one job, exit (the floor of any
    workflow, dataforge's included)."""
    work = Path(tempfile.mkdtemp(prefix="empty-snakemake-"))
    try:
        (work / "Snakefile").write_text(EMPTY_SNAKEFILE)
        cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "--quiet"]
        return {"name": "empty Snakemake run (one touch job)", **measure(cmd, cwd=work)}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_dataforge(data: Path, url: str, size: int, per_server: int | None, rows: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="dataforge-bench-"))
    try:
        (work / "config.yaml").write_text(json.dumps(dataforge_config(data, url, size, per_server)))
        m = measure(snakemake_command("config.yaml"), cwd=work)
        stats = json.loads((work / "results" / "stats.json").read_text())
        assert stats["rows"] == rows and stats["rows_failed"] == 0, stats
        chunks = -(-rows // size)
        return {"name": f"dataforge, {size} rows/chunk ({chunks} chunks)", **m, "chunks": chunks}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_datatrove(data: Path, url: str, size: int, rows: int) -> dict:
    import pyarrow.parquet as pq

    work = Path(tempfile.mkdtemp(prefix="datatrove-bench-"))
    try:
        cmd = datatrove_command(
            data.parent, work, url, "--chunk", str(size), "--concurrency", str(CONCURRENCY)
        )
        m = measure(cmd)
        written = sum(pq.read_metadata(p).num_rows for p in (work / "data").glob("*.parquet"))
        assert written == rows, f"datatrove wrote {written} of {rows} rows"
        chunks = -(-rows // size)
        return {"name": f"datatrove 0.10.1, {size} rows/chunk ({chunks} chunks)", **m}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def server_stats(base: str) -> dict:
    return json.loads(urllib.request.urlopen(f"{base}/bench/stats").read())


def reset(base: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{base}/bench/reset", method="POST")).read()


def bench_latency(args: argparse.Namespace, data: Path, latency_ms: float) -> list[dict]:
    results = []
    with loopback_server(latency_ms / 1000) as base:
        url = f"{base}/v1"
        runs = [lambda: {"name": "bare async client", **measure(
            [sys.executable, __file__, "__bare__", url, str(args.rows)])}]  # fmt: skip
        runs.append(run_empty_snakemake)
        if not args.no_datatrove:
            runs.append(lambda: run_datatrove(data, url, args.chunk_sizes[0], args.rows))
        for size in args.chunk_sizes:
            runs.append(lambda s=size: run_dataforge(data, url, s, args.per_server, args.rows))
        for one in runs:
            reset(base)
            r = one()
            s = server_stats(base)
            r["latency_ms"] = latency_ms
            if r["name"].startswith("empty"):
                results.append(r)
                continue
            assert s["served"] == args.rows, f"{r['name']}: server answered {s['served']}"
            r["requests_per_s"] = args.rows / r["wall_s"]
            if latency_ms:
                ceiling = CONCURRENCY / (latency_ms / 1000)
                r["busy"] = s["mean_in_flight"] / CONCURRENCY
                r["window_s"] = s["window_s"]
                r["throughput_vs_ceiling"] = args.rows / s["window_s"] / ceiling
            results.append(r)
    bare, empty = results[0]["wall_s"], results[1]["wall_s"]
    for r in results:
        r["wall_vs_bare"] = r["wall_s"] / bare
        if r["name"].startswith("dataforge"):
            r["beyond_bare_and_empty_s"] = r["wall_s"] - bare - empty
    return results


COLUMNS = [
    ("name", "run", ""),
    ("wall_s", "wall s", ".2f"),
    ("requests_per_s", "req/s", ",.0f"),
    ("cpu_s", "CPU s", ".2f"),
    ("peak_rss_mb", "RSS MB", ".0f"),
    ("wall_vs_bare", "x bare", ".2f"),
    ("beyond_bare_and_empty_s", "s beyond bare+empty", ".2f"),
]
BUSY = [("busy", "busy", ".2f"), ("throughput_vs_ceiling", "of ceiling", ".2f")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--chunk-sizes", type=int, nargs="+", default=[500, 5000])
    parser.add_argument(
        "--per-server", type=int, default=None, help="chunks.per_server (default: the config's)"
    )
    parser.add_argument("--latency-ms", type=float, nargs="+", default=[0, 200])
    parser.add_argument("--no-datatrove", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-input-") as tmp:
        data = write_prompt_parquet(Path(tmp) / "in" / "prompts.parquet", args.rows)
        by_latency = {lat: bench_latency(args, data, lat) for lat in args.latency_ms}
    for latency, results in by_latency.items():
        print(f"\n{args.rows} rows, concurrency {CONCURRENCY}, server latency {latency:g} ms")
        print(table(results, COLUMNS + (BUSY if latency else [])))
    write_results(
        "client_overhead",
        {"rows": args.rows, "concurrency": CONCURRENCY,
         "results": [r for rs in by_latency.values() for r in rs]},
        args.out,
    )  # fmt: skip


if __name__ == "__main__":
    if sys.argv[1:2] == ["__bare__"]:
        bare_client(sys.argv[2], int(sys.argv[3]))
    else:
        main()
