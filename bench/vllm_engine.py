"""The real engine: is vLLM, not dataforge's client, the bottleneck? dataforge against a bare
client, vLLM's own batch runner and datatrove, on the same prompts in one run.

    .venv/bin/python bench/vllm_engine.py [--rows 400] [--max-tokens 32] [--model DIR]
        [--engine-python PY] [--per-server 8 4] [--no-datatrove] [--out FILE]

Needs the engine environment (`make engine`, or `--engine-python` naming any Python with vLLM,
e.g. on a GPU machine). Uses a tiny random Llama built on the spot
(engine/build_tiny_model.py) unless --model names a model folder. On the same prompts, with
temperature 0.8:
1. `bare`: one vLLM server started by hand (the command dataforge builds) and an async client
   (aiohttp, concurrency 256) that sends every request and keeps nothing;
2. `run_batch`: `python -m vllm.entrypoints.openai.run_batch` with the same engine arguments on
   a JSONL file of the same requests (loads the model itself; no HTTP);
3. `datatrove`: datatrove 0.10.1's InferenceRunner (bench/peers/datatrove_run.py) against a
   server started as for `bare` (its own `vllm serve` launch needs the `vllm` CLI, which the
   CPU build's is broken), in its own environment;
4. `dataforge, 1 group`: the whole workflow with 8 chunks and `chunks.per_server: 8`;
5. `dataforge, 2 groups`: 8 chunks with `chunks.per_server: 4`: the second group uses the
   engine the first one loaded (one engine slot on one machine: one model load).
Two throughputs: over the generation only (first request to last answer; for dataforge
`stats.json`'s wall_time_s, first chunk start to last chunk end; not known for run_batch), and
over the total time, model load included. Writes bench/results/vllm_engine.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENGINE_PYTHON = [str(REPO / ".venv-engine" / "bin" / "python")]  # --engine-python
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from common import (  # noqa: E402
    datatrove_command,
    measure,
    snakemake_command,
    table,
    write_results,
)

from dataforge.engines import vllm_spec  # noqa: E402
from dataforge.workflow import check_config  # noqa: E402

EXTRA: list[str] = []


def prompts(n: int) -> list[str]:
    return [f"question {i}: what is the answer to item {i % 17} of the list?" for i in range(n)]


def config_for(model: str, rows_file: Path, max_tokens: int, per_server: int, rows: int) -> dict:
    return {
        "input": {"dataset": str(rows_file)},
        "model": {"name": model, "max_context": max(512, 2 * max_tokens)},
        "engine": {
            "kind": "vllm",
            "python": ENGINE_PYTHON[0],
            "max_concurrent_requests": 256,
            "extra_args": EXTRA,
        },
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
            body = request_body(model, i, text, max_tokens)
            async with sem, session.post(url + "/chat/completions", json=body) as resp:
                data = await resp.json()
                if resp.status != 200:
                    raise RuntimeError(f"HTTP {resp.status}: {data}")
                tokens += data["usage"]["completion_tokens"]

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i, t) for i, t in enumerate(texts)))
        wall = time.perf_counter() - t0
    return {"wall_s": wall, "completion_tokens": tokens}


def request_body(model: str, i: int, text: str, max_tokens: int) -> dict:
    return {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
        "temperature": 0.8,
        "seed": i,
    }


def engine_spec(model: str, texts: list[str], max_tokens: int, work: Path):
    config = check_config(config_for(model, work / "x.jsonl", max_tokens, 8, len(texts)), REPO)
    return vllm_spec(config, REPO)


@contextlib.contextmanager
def vllm_server(model: str, texts: list[str], max_tokens: int, work: Path, name: str):
    """A vLLM server started with dataforge's command; yields (spec, seconds to ready)."""
    spec = engine_spec(model, texts, max_tokens, work)
    log = open(work / f"{name}-engine.log", "wb")  # noqa: SIM115
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
                    raise RuntimeError(f"vLLM exited; see {log.name}") from None
                time.sleep(0.2)
        yield spec, time.perf_counter() - t0
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=60)
        log.close()


def run_bare(model: str, texts: list[str], max_tokens: int, work: Path) -> dict:
    with vllm_server(model, texts, max_tokens, work, "bare") as (spec, start):
        result = asyncio.run(bare_client(spec.base_url, model, texts, max_tokens))
    return {"name": "bare async client, 1 server", "server_start_s": start,
            "total_s": start + result["wall_s"], **result}  # fmt: skip


def run_batch(model: str, texts: list[str], max_tokens: int, work: Path) -> dict:
    """vLLM's own offline batch runner on the same requests."""
    spec = engine_spec(model, texts, max_tokens, work)
    args = list(spec.command[3:])
    for flag in ("--host", "--port"):  # server-only flags
        i = args.index(flag)
        del args[i : i + 2]
    args.remove("--disable-uvicorn-access-log")
    batch_in, batch_out = work / "batch-in.jsonl", work / "batch-out.jsonl"
    with open(batch_in, "w") as f:
        for i, text in enumerate(texts):
            body = request_body(model, i, text, max_tokens)
            f.write(json.dumps({"custom_id": str(i), "method": "POST",
                                "url": "/v1/chat/completions", "body": body}) + "\n")  # fmt: skip
    cmd = [spec.command[0], "-m", "vllm.entrypoints.openai.run_batch",
           "-i", str(batch_in), "-o", str(batch_out), *args]  # fmt: skip
    t0 = time.perf_counter()
    with open(work / "run-batch.log", "wb") as log:
        subprocess.run(cmd, env={**os.environ, **spec.env}, stdout=log, stderr=log, check=True)
    total = time.perf_counter() - t0
    tokens = 0
    answers = [json.loads(line) for line in batch_out.read_text().splitlines()]
    assert len(answers) == len(texts), f"run_batch answered {len(answers)} of {len(texts)}"
    for a in answers:
        assert a.get("error") is None and a["response"]["status_code"] == 200, a
        tokens += a["response"]["body"]["usage"]["completion_tokens"]
    return {"name": "vLLM run_batch", "total_s": total, "completion_tokens": tokens}


def run_datatrove(model: str, texts: list[str], max_tokens: int, work: Path) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (work / "dt-in").mkdir(exist_ok=True)
    pq.write_table(pa.table({"prompt": texts}), work / "dt-in" / "prompts.parquet")
    with vllm_server(model, texts, max_tokens, work, "datatrove") as (spec, start):
        cmd = datatrove_command(
            work / "dt-in", work / "dt-out", spec.base_url, "--chunk", str(len(texts) // 8),
            "--concurrency", "256", "--max-tokens", str(max_tokens), "--model", model,
            "--temperature", "0.8",
        )  # fmt: skip
        wall = measure(cmd)["wall_s"]
    table_ = pq.read_table(work / "dt-out" / "data")
    tokens = sum(
        r["usage"]["completion_tokens"]
        for rollouts in table_.column("rollout_results").to_pylist()
        for r in rollouts
    )
    assert table_.num_rows == len(texts), f"datatrove wrote {table_.num_rows} rows"
    return {"name": "datatrove 0.10.1, 1 server", "server_start_s": start, "wall_s": wall,
            "total_s": start + wall, "completion_tokens": tokens}  # fmt: skip


def run_dataforge(model: str, texts: list[str], max_tokens: int, per_server: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="dataforge-vllm-bench-"))
    ok = False
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
        groups = len(list((work / "logs" / "serve_model").glob("[0-9][0-9][0-9][0-9][0-9].log")))
        starts = [e["startup_s"] for e in stats["engines"] if e["startup_s"] is not None]
        ok = True
        return {
            "name": f"dataforge, {groups} group(s), per_server {per_server}",
            "wall_s": stats["wall_time_s"],
            "completion_tokens": stats["completion_tokens"]["total"],
            "rows_failed": stats["rows_failed"],
            "model_loads": stats["model_loads"],
            "server_start_s": max(starts),
            "total_s": total,
        }
    finally:
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"dataforge run failed: its files are in {work}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--model", default=None)
    parser.add_argument("--extra-args", nargs="*", default=[], help="for vLLM's server")
    parser.add_argument("--engine-python", default=ENGINE_PYTHON[0], help="a Python with vLLM")
    parser.add_argument("--per-server", type=int, nargs="+", default=[8, 4])
    parser.add_argument("--no-datatrove", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    EXTRA.extend(args.extra_args)
    ENGINE_PYTHON[0] = args.engine_python
    if not Path(args.engine_python).exists():
        sys.exit(f"bench/vllm_engine.py: no {args.engine_python}: run `make engine` first")
    work = Path(tempfile.mkdtemp(prefix="dataforge-vllm-model-"))
    model = args.model
    if model is None:
        model = str(work / "tiny")
        subprocess.run(
            [ENGINE_PYTHON[0], str(REPO / "engine" / "build_tiny_model.py"), model],
            check=True,
            capture_output=True,
        )
    texts = prompts(args.rows)
    results = [
        run_bare(model, texts, args.max_tokens, work),
        run_batch(model, texts, args.max_tokens, work),
    ]
    if not args.no_datatrove:
        results.append(run_datatrove(model, texts, args.max_tokens, work))
    results += [run_dataforge(model, texts, args.max_tokens, n) for n in args.per_server]
    shutil.rmtree(work, ignore_errors=True)
    bare = results[0]
    for r in results:
        if "wall_s" in r:
            r["output_tokens_per_s"] = r["completion_tokens"] / r["wall_s"]
            r["tokens_per_s_vs_bare"] = r["output_tokens_per_s"] / bare["output_tokens_per_s"]
        r["total_tokens_per_s"] = r["completion_tokens"] / r["total_s"]
        r["total_vs_bare"] = r["total_s"] / bare["total_s"]
        r.setdefault("model_loads", 1)
    build = engine_build()
    print(f"\n{args.rows} prompts, max_tokens {args.max_tokens}, {build}, model {model}")
    print(table(results, [
        ("name", "run", ""), ("wall_s", "gen s", ".2f"),
        ("output_tokens_per_s", "gen tok/s", ".0f"),
        ("tokens_per_s_vs_bare", "vs bare", ".2f"), ("server_start_s", "start s", ".1f"),
        ("total_s", "total s", ".1f"), ("total_tokens_per_s", "total tok/s", ".0f"),
        ("total_vs_bare", "total x bare", ".2f"), ("model_loads", "loads", "d"),
    ]))  # fmt: skip
    write_results("vllm_engine", {"rows": args.rows, "max_tokens": args.max_tokens,
                                  "engine": build, "model": model,
                                  "results": results}, args.out)  # fmt: skip


def engine_build() -> str:
    """vLLM's version and device, as the engine's Python reports them."""
    code = (
        "import torch, vllm; print(vllm.__version__, torch.cuda.get_device_name(0) "
        "if torch.cuda.is_available() else 'CPU')"
    )
    env = {**os.environ, **engine_spec_env()}
    out = subprocess.run([ENGINE_PYTHON[0], "-c", code], capture_output=True, text=True, env=env)
    return f"vLLM {out.stdout.strip()}" if out.returncode == 0 else "vLLM (version unknown)"


def engine_spec_env() -> dict[str, str]:
    """The environment dataforge gives the engine (the CPU build's settings, engine.env)."""
    with tempfile.TemporaryDirectory() as work:
        return engine_spec("model", ["x"] * 8, 8, Path(work)).env


if __name__ == "__main__":
    main()
