"""Whole-run GPU efficiency on simulated GPU machines, against the ideal and datatrove's model.

    .venv/bin/python bench/gpu_schedule.py [--gpus 1 8] [--rows 1000 10000 50000 200000]
        [--load-s 10] [--tokens-per-s 20000] [--completion-tokens 200] [--out FILE]

A machine with N GPUs is simulated by a stand-in `nvidia-smi` that lists them; the engine is
the dummy with a model load (`engine.dummy.load_s`) and a throughput ceiling
(`engine.dummy.tokens_per_s`, shared by all requests in flight), every answer
`--completion-tokens` long. dataforge runs the default config on it (500 rows per chunk,
4 chunks per group, one engine per GPU slot), and its stats.json gives the GPU-seconds it
allocated, spent loading, generating and idle (its efficiency: generating / allocated; "of
machine": generating / (GPUs x the run's wall time), Snakemake's own start and end included).
Beside it:
- ideal: one model load per GPU and never idle: generating / (generating + N x load);
- datatrove's model: generate_data.py starts one server per task (`--tasks`, 10 by default;
  at least one per GPU), each loading the model: generating / (generating + tasks x load).
Writes bench/results/gpu_schedule.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    run_sampling_memory,
    snakemake_command,
    table,
    write_prompt_parquet,
    write_results,
)

DATATROVE_TASKS = 10  # generate_data.py's --tasks default


def gpu_machine(folder: Path, gpus: int) -> dict[str, str]:
    """The environment of a machine with `gpus` stand-in GPUs (`nvidia-smi -L` lists them)."""
    bin_dir = folder / "fake-bin"
    bin_dir.mkdir(parents=True)
    smi = bin_dir / "nvidia-smi"
    lines = "".join(f"GPU {i}: Simulated GPU (UUID: GPU-sim-{i})\\n" for i in range(gpus))
    smi.write_text(f'#!/bin/sh\nprintf "{lines}"\n')
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    return env


def run(gpus: int, rows: int, args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="dataforge-gpu-"))
    try:
        env = gpu_machine(work, gpus)
        data = write_prompt_parquet(work / "prompts.parquet", rows)
        dummy = {"load_s": args.load_s, "tokens_per_s": args.tokens_per_s,
                 "completion_tokens": args.completion_tokens}  # fmt: skip
        config = {"input": {"dataset": str(data)}, "model": {"name": "sim"},
                  "engine": {"kind": "dummy", "dummy": dummy},
                  "sampling": {"max_tokens": args.completion_tokens}}  # fmt: skip
        (work / "config.yaml").write_text(json.dumps(config))
        m = run_sampling_memory(snakemake_command("config.yaml"), work, every_s=0.5, env=env)
        stats = json.loads((work / "results" / "stats.json").read_text())
        assert stats["rows"] == rows and stats["rows_failed"] == 0, stats
        gpu = stats["gpu"]
        generating = rows * args.completion_tokens / args.tokens_per_s  # GPU-seconds of work
        tasks = max(DATATROVE_TASKS, gpus)
        return {
            "gpus": gpus,
            "rows": rows,
            "wall_s": m["wall_s"],
            "model_loads": gpu["model_loads"],
            "allocated_gpu_s": gpu["gpu_seconds"]["allocated"],
            "loading_gpu_s": gpu["gpu_seconds"]["loading"],
            "idle_gpu_s": gpu["gpu_seconds"]["idle"],
            "efficiency": gpu["efficiency"],
            # on a machine of its own: generating over every GPU for the whole run
            "of_machine": gpu["gpu_seconds"]["generating"] / (gpus * m["wall_s"]),
            "ideal": generating / (generating + gpus * args.load_s),
            "datatrove_model": generating / (generating + tasks * args.load_s),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000, 10_000, 50_000, 200_000])
    parser.add_argument("--max-rows-per-gpu", type=int, default=50_000,
                        help="skip runs with more rows per GPU (time)")  # fmt: skip
    parser.add_argument("--load-s", type=float, default=10.0)
    parser.add_argument("--tokens-per-s", type=float, default=20_000.0)
    parser.add_argument("--completion-tokens", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    results = []
    for gpus in args.gpus:
        for rows in args.rows:
            if rows / gpus > args.max_rows_per_gpu:
                continue
            results.append(run(gpus, rows, args))
            print(json.dumps(results[-1]), file=sys.stderr)
    print(
        f"\nsimulated GPUs: model load {args.load_s:g} s, {args.tokens_per_s:,.0f} output "
        f"tokens/s per engine, {args.completion_tokens} tokens per answer"
    )
    print(table(results, [
        ("gpus", "GPUs", "d"), ("rows", "rows", ","), ("wall_s", "wall s", ".1f"),
        ("model_loads", "loads", "d"), ("allocated_gpu_s", "GPU-s", ",.0f"),
        ("loading_gpu_s", "loading", ",.0f"), ("idle_gpu_s", "idle", ",.0f"),
        ("efficiency", "dataforge", ".2f"), ("of_machine", "of machine", ".2f"),
        ("ideal", "ideal", ".2f"),
        ("datatrove_model", "datatrove model", ".2f"),
    ]))  # fmt: skip
    write_results("gpu_schedule", {"settings": vars(args) | {"out": None}, "results": results},
                  args.out)  # fmt: skip


if __name__ == "__main__":
    main()
