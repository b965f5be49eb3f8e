"""The real engine: is vLLM, not dataforge's client, the bottleneck?

    .venv/bin/python bench/vllm_engine.py [--rows 400] [--max-tokens 32] [--model DIR]

Needs the engine environment (`make engine`). Uses a tiny random Llama built on the spot
(engine/build_tiny_model.py) unless --model names a model folder. In one run, on the same
prompts and sampling (temperature 0.8, seeded):
1. `bare`: one vLLM server started by hand (the command dataforge builds) and an async client
   (aiohttp, concurrency 256) that sends every request and keeps nothing;
2. `dataforge, 1 server`: the whole workflow with 8 chunks and `chunks.per_server: 8`;
3. `dataforge, 2 servers`: 8 chunks with `chunks.per_server: 4`, to count model loads (2).
Throughput is taken over the generation only (first request to last answer; for dataforge
`stats.json`'s wall_time_s, first chunk start to last chunk end), so server start-up, which is
reported separately, does not blur the comparison. Writes bench/results/vllm_engine.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENGINE_PYTHON = REPO / ".venv-engine" / "bin" / "python"
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from client_overhead import snakemake_command  # noqa: E402

from dataforge.engines import vllm_spec  # noqa: E402
from dataforge.workflow import check_config  # noqa: E402

EXTRA: list[str] = []


def prompts(n: int) -> list[str]:
    return [f"question {i}: what is the answer to item {i % 17} of the list?" for i in range(n)]


def config_for(model: str, rows_file: Path, max_tokens: int, per_server: int, rows: int) -> dict:
    return {
        "input": {"dataset": str(rows_file)},
        "model": {"name": model, "max_context": 512},
        "engine": {"kind": "vllm", "max_concurrent_requests": 256, "extra_args": EXTRA},
        "sampling": {"max_tokens": max_tokens, "temperature": 0.8, "seed": 0},
        "chunks": {"size": rows // 8, "per_server": per_server},
    }


async def bare_client(url: str, model: str, texts: list[str], max_tokens: int) -> dict:
    import aiohttp

    sem = asyncio.Semaphore(256)
    tokens = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:

        async def one(i: int, text: str) -> None:
            nonlocal tokens
            body = {
                "model": model,
                "messages": [{"role": "user", "content": text}],
                "max_tokens": max_tokens,
                "temperature": 0.8,
                "seed": i,
            }
            async with sem, session.post(url + "/chat/completions", json=body) as resp:
                data = await resp.json()
                if resp.status != 200:
                    raise RuntimeError(f"HTTP {resp.status}: {data}")
                tokens += data["usage"]["completion_tokens"]

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i, t) for i, t in enumerate(texts)))
        wall = time.perf_counter() - t0
    return {"wall_s": wall, "completion_tokens": tokens}


def run_bare(model: str, texts: list[str], max_tokens: int, work: Path) -> dict:
    config = check_config(config_for(model, work / "x.jsonl", max_tokens, 8, len(texts)), REPO)
    spec = vllm_spec(config, REPO)
    log = open(work / "bare-engine.log", "wb")  # noqa: SIM115
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        spec.command,
        env={**os.environ, **spec.env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        import urllib.request

        while True:
            try:
                urllib.request.urlopen(spec.health_url, timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"vLLM exited; see {work / 'bare-engine.log'}") from None
                time.sleep(0.2)
        start = time.perf_counter() - t0
        result = asyncio.run(bare_client(spec.base_url, model, texts, max_tokens))
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=60)
    return {"name": "bare async client, 1 server", "server_start_s": start, **result}


def run_dataforge(model: str, texts: list[str], max_tokens: int, per_server: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="dataforge-vllm-bench-"))
    try:
        rows = work / "in.jsonl"
        rows.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts))
        (work / "config.yaml").write_text(
            json.dumps(config_for(model, rows, max_tokens, per_server, len(texts)))
        )
        t0 = time.perf_counter()
        subprocess.run(
            snakemake_command("config.yaml"),
            cwd=work,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        total = time.perf_counter() - t0
        stats = json.loads((work / "results" / "stats.json").read_text())
        logs = sorted((work / "logs" / "serve_model").glob("*[0-9].log"))
        starts = [
            float(m.group(1))
            for p in logs
            for m in re.finditer(r"engine ready after ([\d.]+) s", p.read_text())
        ]
        return {
            "name": f"dataforge, {len(logs)} server(s), per_server {per_server}",
            "wall_s": stats["wall_time_s"],
            "completion_tokens": stats["completion_tokens"]["total"],
            "rows_failed": stats["rows_failed"],
            "model_loads": len(starts),
            "server_start_s": max(starts),
            "whole_run_s": total,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--model", default=None)
    parser.add_argument("--extra-args", nargs="*", default=[], help="for vLLM's server")
    args = parser.parse_args()
    EXTRA.extend(args.extra_args)
    if not ENGINE_PYTHON.exists():
        sys.exit("bench/vllm_engine.py: run `make engine` first")
    work = Path(tempfile.mkdtemp(prefix="dataforge-vllm-model-"))
    model = args.model
    if model is None:
        model = str(work / "tiny")
        subprocess.run(
            [str(ENGINE_PYTHON), str(REPO / "engine" / "build_tiny_model.py"), model],
            check=True,
            capture_output=True,
        )
    texts = prompts(args.rows)
    results = [
        run_bare(model, texts, args.max_tokens, work),
        run_dataforge(model, texts, args.max_tokens, per_server=8),
        run_dataforge(model, texts, args.max_tokens, per_server=4),
    ]
    shutil.rmtree(work, ignore_errors=True)
    bare = results[0]
    for r in results:
        r["requests_per_s"] = args.rows / r["wall_s"]
        r["output_tokens_per_s"] = r["completion_tokens"] / r["wall_s"]
        r["tokens_per_s_vs_bare"] = r["output_tokens_per_s"] / bare["output_tokens_per_s"]
    print(f"\n{args.rows} prompts, max_tokens {args.max_tokens}, vLLM CPU build, model {model}")
    print(f"{'run':42} {'gen s':>6} {'req/s':>7} {'tok/s':>7} {'ratio':>6} {'start s':>7} loads")
    for r in results:
        print(
            f"{r['name']:42} {r['wall_s']:6.2f} {r['requests_per_s']:7.1f} "
            f"{r['output_tokens_per_s']:7.0f} {r['tokens_per_s_vs_bare']:6.2f} "
            f"{r['server_start_s']:7.1f} {r.get('model_loads', 1):5}"
        )
    out = REPO / "bench" / "results" / "vllm_engine.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {"date": time.strftime("%Y-%m-%d"), "rows": args.rows, "results": results}, indent=2
        )
        + "\n"
    )
    print(f"wrote {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
