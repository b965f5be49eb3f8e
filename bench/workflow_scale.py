"""The workflow itself at scale: plan and dry-run time and memory for 1,000 to 100,000 chunks
against a bare Snakemake workflow with the same jobs, and the per-job cost of a real run.

    .venv/bin/python bench/workflow_scale.py [--chunks 1000 10000 100000] [--jobs 200]
        [--out FILE]

1. For each chunk count: the plan (`snakemake results/plan.json`, one row per chunk so the
   input stays small) and then `snakemake -n` of the whole run (the plan made), against a bare
   workflow with the same jobs and edges (one `serve` job per 4 `gen` jobs, plus `all`), each
   with its wall time and peak RSS, in this run.
2. A real local run of `--jobs` one-row chunks on the zero-latency dummy engine, against one
   chunk holding the same rows: the difference divided by the extra jobs is what a chunk job
   costs, and from it the chunk length at which that cost is under 2% of the chunk's work.
Writes bench/results/workflow_scale.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path[:0] = [
    str(Path(__file__).resolve().parent),
    str(Path(__file__).resolve().parents[1] / "tests"),
]

from common import BIN, REPO, measure, table, write_results  # noqa: E402

BARE_SNAKEFILE = """
N, P = {chunks}, {per_server}
rule all:
    input: expand("out/{{i:05d}}.txt", i=range(N))
rule serve:
    output: "serve/{{s}}.txt"
    shell: "touch {{output}}"
rule gen:
    input: lambda wc: f"serve/{{int(wc.i) // P:05d}}.txt"
    output: "out/{{i}}.txt"
    shell: "touch {{output}}"
"""


def snakemake(*args: str) -> list[str]:
    return [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), *args]


def write_config(work: Path, rows: int, size: int, per_server: int, latency: float = 0) -> None:
    import yaml
    from conftest import base_config, write_prompts

    work.mkdir(parents=True, exist_ok=True)
    config = base_config(
        write_prompts(work / "in.parquet", rows, row_group=max(300, size)),
        chunks={"size": size, "per_server": per_server},
        engine={"dummy": {"latency_s": latency}},
        sampling={"max_tokens": 8},
    )
    (work / "config.yaml").write_text(yaml.safe_dump(config))


def bench_dryrun(chunks: int, root: Path, per_server: int = 4, profile: list[str] = ()) -> dict:
    """Plan and dry-run of `chunks` chunks, and the bare workflow's dry run of as many jobs;
    with `profile` (for example the Slurm one) both run under that executor."""
    df = root / f"dryrun-dataforge-{chunks}"
    write_config(df, chunks, 1, per_server)
    config = ["--configfile", "config.yaml"]
    plan = measure(snakemake("results/plan.json", "--cores", "1", *config), df)
    measure(snakemake("-n", "--quiet", *profile, *config), df)  # makes the service placeholders
    dataforge = measure(snakemake("-n", "--quiet", *profile, *config), df)
    bare_dir = root / f"dryrun-bare-{chunks}"
    bare_dir.mkdir()
    (bare_dir / "Snakefile").write_text(BARE_SNAKEFILE.format(chunks=chunks, per_server=per_server))
    executor = ["--executor", "slurm", "--jobs", "8"] if profile else ["--cores", "1"]
    bare = measure([str(BIN / "snakemake"), "-n", "--quiet", *executor], bare_dir)
    return {
        "chunks": chunks,
        "jobs": chunks + -(-chunks // per_server) + 1,
        "plan_s": plan["wall_s"],
        "plan_rss_mb": plan["peak_rss_mb"],
        "dataforge_s": dataforge["wall_s"],
        "dataforge_rss_mb": dataforge["peak_rss_mb"],
        "bare_s": bare["wall_s"],
        "bare_rss_mb": bare["peak_rss_mb"],
        "ratio": dataforge["wall_s"] / bare["wall_s"],
        "rss_ratio": dataforge["peak_rss_mb"] / bare["peak_rss_mb"],
    }


def bench_jobs(jobs: int, root: Path) -> dict:
    """`jobs` one-row chunks in one group against one chunk of the same rows."""
    many, one = root / "many", root / "one"
    write_config(many, jobs, 1, jobs)
    write_config(one, jobs, jobs, 1)
    cmd = snakemake("--cores", "2", "--configfile", "config.yaml", "--quiet")
    t_many = measure(cmd, many)
    t_one = measure(cmd, one)
    per_job = (t_many["wall_s"] - t_one["wall_s"]) / (jobs - 1)
    cpu_per_job = (t_many["cpu_s"] - t_one["cpu_s"]) / (jobs - 1)
    return {
        "jobs": jobs,
        "many_s": t_many["wall_s"],
        "one_s": t_one["wall_s"],
        "per_job_s": per_job,
        "cpu_per_job_s": cpu_per_job,
        # a chunk whose generation takes this long pays at most 2% for its job
        "chunk_s_for_2_percent": per_job / 0.02,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="df-bench-scale-") as tmp:
        root = Path(tmp)
        dry = [bench_dryrun(n, root) for n in args.chunks]
        jobs = bench_jobs(args.jobs, root)
    for d in dry:
        d["name"] = f"{d['chunks']:,} chunks ({d['jobs']:,} jobs)"
    print("\nplan and dry run (`snakemake -n`), dataforge against a bare workflow")
    print(table(dry, [
        ("name", "chunks", ""), ("plan_s", "plan s", ".1f"), ("plan_rss_mb", "plan MB", ".0f"),
        ("dataforge_s", "dry-run s", ".1f"), ("bare_s", "bare s", ".1f"),
        ("ratio", "ratio", ".2f"), ("dataforge_rss_mb", "MB", ".0f"),
        ("bare_rss_mb", "bare MB", ".0f"), ("rss_ratio", "MB ratio", ".2f"),
    ]))  # fmt: skip
    print(f"\n{jobs['jobs']} one-row chunks {jobs['many_s']:.1f} s, one chunk of the same rows "
          f"{jobs['one_s']:.1f} s: {jobs['per_job_s']:.3f} s wall and {jobs['cpu_per_job_s']:.3f}"
          f" s CPU per chunk job; under 2% for chunks of {jobs['chunk_s_for_2_percent']:.0f} s"
          " of generation or more")  # fmt: skip
    write_results("workflow_scale", {"dryrun": dry, "jobs": jobs}, args.out)


if __name__ == "__main__":
    main()
