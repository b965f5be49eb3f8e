"""What Slurm adds: dry-run time at 10,000 chunks, submission overhead, time to the first job.

    .venv/bin/python bench/slurm_overhead.py [--chunks 10000] [--groups 8] [--skip-cluster]

1. Dry-run of 10,000 chunks (`snakemake -n --profile profiles/slurm`, plan already made)
   against a bare Snakemake workflow with the same jobs and edges (one `serve` job per 4
   `gen` jobs, plus `all`), both timed in this run. No cluster needed.
2. On the test cluster (tests/slurm/start_cluster.sh, started if needed), with the dummy engine
   at zero latency: `--groups` one-chunk groups through a copy of profiles/slurm edited for the
   test node (status polling every 2 s), and the same config run locally. It reports the
   `sbatch` call time per job (a timing shim in front of the real sbatch), the queue wait and
   the time inside each job that is not the server's own (Snakemake's job step start-up), the
   time from launching `snakemake` to the first job running, and the whole run against the
   local run.
Writes bench/results/slurm_overhead.json.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path[:0] = [
    str(Path(__file__).resolve().parent),
    str(Path(__file__).resolve().parents[1] / "tests"),
]

from common import REPO, measure, write_results  # noqa: E402
from workflow_scale import bench_dryrun, snakemake, write_config  # noqa: E402


def run(cmd: list[str], cwd: Path, env: dict | None = None) -> float:
    """Run `cmd`, fail loudly, return its wall time."""
    return measure(cmd, cwd, env)["wall_s"]


SHIM = """#!/bin/sh
t0=$(date +%s.%N)
{real} "$@"
rc=$?
echo "$t0 $(date +%s.%N)" >> {record}
exit $rc
"""


def sacct_times(workdir: Path) -> list[dict]:
    fmt = "JobID,Submit,Start,End,State,WorkDir"
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-S", "now-1hours", "-o", fmt],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rows = []
    for line in out.splitlines():
        job, submit, start, end, state, work = line.split("|")
        if work == str(workdir):
            ts = [datetime.fromisoformat(t).timestamp() for t in (submit, start, end)]
            rows.append({"id": job, "submit": ts[0], "start": ts[1], "end": ts[2], "state": state})
    return rows


def bench_cluster(groups: int, root: Path) -> dict:
    from test_slurm import site_profile

    subprocess.run(["bash", str(REPO / "tests" / "slurm" / "start_cluster.sh")], check=True)
    work = root / "cluster"
    work.mkdir()
    write_config(work, groups * 10, 10, 1)
    profile = site_profile(root / "site")
    shim_dir = root / "shim"
    shim_dir.mkdir()
    record = root / "sbatch-times.txt"
    (shim_dir / "sbatch").write_text(SHIM.format(real=shutil.which("sbatch"), record=record))
    (shim_dir / "sbatch").chmod(0o755)
    env = {**os.environ, "PATH": f"{shim_dir}:{os.environ['PATH']}"}
    launched = time.time()
    wall = run(snakemake("--profile", str(profile), "--configfile", "config.yaml"), work, env)
    jobs = sacct_times(work)
    assert len(jobs) == groups and all(j["state"] == "COMPLETED" for j in jobs), jobs
    serve_s = []
    for log in (work / "logs" / "serve_model").glob("?????.log"):
        serve_s.append(
            float(re.search(r"stopping after \d+ chunks \(([\d.]+) s", log.read_text())[1])
        )
    sbatch_s = [
        float(b) - float(a) for a, b in (x.split() for x in record.read_text().splitlines())
    ]
    local = root / "local"
    local.mkdir()
    write_config(local, groups * 10, 10, 1)
    local_wall = run(snakemake("--cores", "2", "--configfile", "config.yaml"), local)
    return {
        "groups": groups,
        "wall_s": wall,
        "local_wall_s": local_wall,
        "ratio_to_local": wall / local_wall,
        "to_first_running_s": min(j["start"] for j in jobs) - launched,
        "sbatch_call_s": statistics.mean(sbatch_s),
        "queue_wait_s": statistics.mean(j["start"] - j["submit"] for j in jobs),
        "job_s": statistics.mean(j["end"] - j["start"] for j in jobs),
        "server_s": statistics.mean(serve_s),
        "in_job_overhead_s": statistics.mean(j["end"] - j["start"] for j in jobs)
        - statistics.mean(serve_s),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=10_000)
    parser.add_argument("--per-server", type=int, default=4)
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--skip-cluster", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    result = {}
    with tempfile.TemporaryDirectory(prefix="df-bench-slurm-") as tmp:
        root = Path(tmp)
        profile = ["--profile", str(REPO / "profiles" / "slurm")]
        d = result["dryrun"] = bench_dryrun(args.chunks, root, args.per_server, profile)
        print(f"dry-run, {d['chunks']:,} chunks ({d['jobs']:,} jobs): dataforge "
              f"{d['dataforge_s']:.1f} s, bare Snakemake {d['bare_s']:.1f} s, "
              f"ratio {d['ratio']:.2f}")  # fmt: skip
        if not args.skip_cluster:
            c = result["cluster"] = bench_cluster(args.groups, root)
            print(f"slurm, {c['groups']} one-chunk groups on 2 fake GPUs: {c['wall_s']:.1f} s "
                  f"(local {c['local_wall_s']:.1f} s, x{c['ratio_to_local']:.1f}); first job "
                  f"running after {c['to_first_running_s']:.1f} s; per job: sbatch "
                  f"{c['sbatch_call_s']:.2f} s, queue wait {c['queue_wait_s']:.1f} s, "
                  f"in-job overhead {c['in_job_overhead_s']:.1f} s "
                  f"(job {c['job_s']:.1f} s, server {c['server_s']:.1f} s)")  # fmt: skip
    write_results("slurm_overhead", result, args.out)


if __name__ == "__main__":
    main()
