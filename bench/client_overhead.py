"""Client overhead: dataforge against a bare async client, on a zero-latency loopback server.

    .venv/bin/python bench/client_overhead.py [--rows 20000] [--chunk-sizes 500 5000]

Starts a minimal OpenAI-compatible server on 127.0.0.1 that answers every chat request at once
(in its own process), then, in the same run and against the same server:
- `bare`: one async client process that only sends the rows' requests (aiohttp, concurrency 256)
  and keeps nothing: the floor for any client;
- `dataforge`: a whole `snakemake` run of the workflow (`engine.kind: endpoint`) on the same
  rows in a fresh working directory, for each chunk size: plan, chunk jobs, Parquet files,
  stats.json and the card.
Prints a table (wall time, requests/s, CPU seconds of the process tree, peak RSS of the largest
process) with ratios to the bare client, and writes JSON to bench/results/client_overhead.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CONCURRENCY = 256

RESPONSE = json.dumps(
    {
        "id": "x",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "ok " * 16},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 16, "total_tokens": 28},
    }
).encode()


def serve(port: int) -> None:
    """The zero-latency server (run in a child process)."""
    from aiohttp import web

    async def chat(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=RESPONSE, content_type="application/json")

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "bench"}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def bare_client(url: str, rows: int) -> None:
    """Send one request per row with bounded concurrency; keep nothing (child process)."""
    import aiohttp

    async def main() -> None:
        sem = asyncio.Semaphore(CONCURRENCY)
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=CONCURRENCY)
        ) as session:

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


def measure(cmd: list[str], cwd: Path | None = None) -> dict[str, float]:
    """Run `cmd`, return wall time, CPU of its process tree and the largest peak RSS."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err, timeout=600)
        if proc.returncode:
            err.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{err.read()[-3000:]}")
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": after.ru_maxrss / 1024}


def snakemake_command(configfile: str) -> list[str]:
    """A whole dataforge run on 2 cores with `configfile`, in the current directory."""
    return [
        str(BIN / "snakemake"),
        "-s",
        str(REPO / "Snakefile"),
        "--cores",
        "2",
        "--configfile",
        configfile,
        "--quiet",
    ]


def write_input(path: Path, rows: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table(
            {
                "id": [f"r{i}" for i in range(rows)],
                "prompt": [f"question {i} about things" for i in range(rows)],
            }
        ),
        path,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--chunk-sizes", type=int, nargs="+", default=[500, 5000])
    parser.add_argument("--per-server", type=int, default=100)
    args = parser.parse_args()

    from dataforge.engines import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    server = subprocess.Popen(
        [sys.executable, __file__, "__serve__", str(port)], stdout=subprocess.DEVNULL
    )
    results = []
    try:
        _wait_http(f"{url}/models")
        results.append(
            {
                "name": "bare async client",
                **measure([sys.executable, __file__, "__bare__", url, str(args.rows)]),
            }
        )
        for size in args.chunk_sizes:
            work = Path(tempfile.mkdtemp(prefix="dataforge-bench-"))
            try:
                write_input(work / "in.parquet", args.rows)
                config = {
                    "input": {"dataset": str(work / "in.parquet")},
                    "model": {"name": "bench"},
                    "engine": {
                        "kind": "endpoint",
                        "url": url,
                        "max_concurrent_requests": CONCURRENCY,
                    },
                    "sampling": {"max_tokens": 16, "temperature": None, "seed": None},
                    "chunks": {"size": size, "per_server": args.per_server},
                }
                (work / "config.yaml").write_text(json.dumps(config))
                m = measure(snakemake_command("config.yaml"), cwd=work)
                stats = json.loads((work / "results" / "stats.json").read_text())
                assert stats["rows"] == args.rows and stats["rows_failed"] == 0, stats
                chunks = -(-args.rows // size)
                results.append(
                    {
                        "name": f"dataforge, {size} rows/chunk ({chunks} chunks)",
                        **m,
                        "chunks": chunks,
                    }
                )
            finally:
                shutil.rmtree(work, ignore_errors=True)
    finally:
        server.terminate()
        server.wait()

    bare = results[0]
    for r in results:
        r["requests_per_s"] = args.rows / r["wall_s"]
        r["wall_vs_bare"] = r["wall_s"] / bare["wall_s"]
        if "chunks" in r:
            r["cpu_per_chunk_beyond_bare_s"] = (r["cpu_s"] - bare["cpu_s"]) / r["chunks"]
    print(f"\n{args.rows} rows, concurrency {CONCURRENCY}, zero-latency server on 127.0.0.1")
    print(f"{'run':44} {'wall s':>7} {'req/s':>8} {'CPU s':>7} {'RSS MB':>7} {'x bare':>7}")
    for r in results:
        print(
            f"{r['name']:44} {r['wall_s']:7.2f} {r['requests_per_s']:8.0f} {r['cpu_s']:7.2f} "
            f"{r['peak_rss_mb']:7.0f} {r['wall_vs_bare']:7.2f}"
        )
    for r in results[1:]:
        print(f"{r['name']}: {r['cpu_per_chunk_beyond_bare_s']:.3f} s CPU per chunk beyond bare")
    out = REPO / "bench" / "results" / "client_overhead.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%d"),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "rows": args.rows,
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out.relative_to(REPO)}")


def _wait_http(url: str, timeout: float = 20) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "__serve__":
        serve(int(sys.argv[2]))
    elif len(sys.argv) > 1 and sys.argv[1] == "__bare__":
        bare_client(sys.argv[2], int(sys.argv[3]))
    else:
        main()
