"""Soak: a long run on the dummy engine with injected faults and random kills, then the count
of every input row in the output. The line to expect is `missing=0 duplicates=0`.

    .venv/bin/python bench/soak.py [--rows 200000] [--chunk-size 5000] [--kills 3] [--seed S]
        [--workdir DIR] [--out FILE]

The engine (dataforge's dummy, started per group of chunks) fails requests on their first
attempt: 5% with HTTP 500, 2% with a timeout (request timeout 2 s), 2% with a reset
connection, 1% with malformed JSON; every row whose prompt holds `REJECT` (one in 10,000) is
always refused (HTTP 400), so it must come out as a failed row. The run is killed with
kill -9 of its whole process group `--kills` times, each once a random number of chunk files
exist (plus 0-3 s), each kill followed by the README's rerun (`--unlock`, then the run),
and finally run to its end. Then every chunk file
is read: rows in, rows out, duplicates, missing, failures by kind, and whether stats.json
agrees. Exits 1 unless missing=0 and duplicates=0 and the failures are exactly the
refused rows.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BIN, REPO, write_results

FAULTS = {"http_500": 0.05, "timeout": 0.02, "reset": 0.02, "malformed": 0.01}
REJECT_EVERY = 10_000


def write_input(path: Path, rows: int) -> int:
    """Prompts with an id; every REJECT_EVERY-th one is always refused. Returns how many."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with pq.ParquetWriter(path, pa.schema([("id", pa.string()), ("prompt", pa.string())])) as w:
        for start in range(0, rows, 10_000):
            ids = range(start, min(rows, start + 10_000))
            prompts = [
                f"question {i} REJECT" if i % REJECT_EVERY == 1 else f"question {i} about things"
                for i in ids
            ]
            w.write_table(pa.table({"id": [f"r{i}" for i in ids], "prompt": prompts}))
    return len(range(1, rows, REJECT_EVERY))


def snakemake(workdir: Path, *args: str) -> list[str]:
    return [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
            "--configfile", str(workdir / "config.json"), "--cores", "2", *args]  # fmt: skip


def count_rows(workdir: Path, rows: int) -> dict:
    """Read every chunk file: rows out, duplicates, missing, failures by kind."""
    import pyarrow.parquet as pq

    seen: Counter[int] = Counter()
    failures: Counter[str] = Counter()
    for path in sorted((workdir / "results" / "data").glob("chunk-*.parquet")):
        table = pq.read_table(path, columns=["row", "error"])
        seen.update(table.column("row").to_pylist())
        failures.update(e.split(":", 1)[0] for e in table.column("error").to_pylist() if e)
    return {
        "rows_in": rows,
        "rows_out": sum(seen.values()),
        "duplicates": sum(c - 1 for c in seen.values() if c > 1),
        "missing": len(set(range(rows)) - set(seen)),
        "failures_by_kind": dict(failures),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--chunk-size", type=int, default=5_000)
    parser.add_argument("--per-server", type=int, default=4)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--seed", type=int, default=None, help="default: from the clock")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary one")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else int(time.time())
    rng = random.Random(seed)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dataforge-soak-"))
    shutil.rmtree(workdir / "results", ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    refused = write_input(workdir / "in.parquet", args.rows)
    config = {
        "input": {"dataset": str(workdir / "in.parquet")},
        "model": {"name": "dummy"},
        "engine": {
            "kind": "dummy",
            "max_concurrent_requests": 256,
            "request_timeout_s": 2,
            "max_retries": 6,
            "dummy": {"faults": FAULTS, "reject_marker": "REJECT", "latency_s": 0.01},
        },
        "sampling": {"max_tokens": 16, "seed": 0},
        "chunks": {"size": args.chunk_size, "per_server": args.per_server},
        "monitor": {"progress": False},
    }
    (workdir / "config.json").write_text(json.dumps(config))
    print(f"soak: {args.rows:,} rows, chunks of {args.chunk_size:,}, {args.kills} kills, "
          f"seed {seed}, in {workdir}", flush=True)  # fmt: skip

    started = time.monotonic()
    log = open(workdir / "soak.log", "a")  # noqa: SIM115 - lives as long as the runs
    kills = []
    data = workdir / "results" / "data"
    n_chunks = -(-args.rows // args.chunk_size)
    # Each kill comes once a random number of chunk files exist, plus a random 0-3 s: spread
    # over the whole run (start-up, mid-chunk, the last chunks) whatever its length.
    for target in sorted(rng.randint(1, n_chunks) for _ in range(args.kills)):
        subprocess.run(snakemake(workdir, "--unlock"), capture_output=True, check=True)
        t0 = time.monotonic()
        proc = subprocess.Popen(
            snakemake(workdir), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        while proc.poll() is None and len(list(data.glob("chunk-*.parquet"))) < target:
            time.sleep(0.1)
        time.sleep(rng.uniform(0.0, 3.0))
        after = round(time.monotonic() - t0, 1)
        if proc.poll() is not None:
            kills.append({"after_s": after, "killed": False})
            continue
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        chunks = len(list(data.glob("chunk-*.parquet")))
        kills.append({"after_s": after, "killed": True, "chunks_done": chunks})
        print(f"  kill -9 after {after:.1f} s: {chunks} of {n_chunks} chunk files", flush=True)
    subprocess.run(snakemake(workdir, "--unlock"), capture_output=True, check=True)
    final = subprocess.run(snakemake(workdir), stdout=log, stderr=subprocess.STDOUT)
    wall = time.monotonic() - started
    counts = count_rows(workdir, args.rows)
    stats_file = workdir / "results" / "stats.json"
    stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
    ok = (
        final.returncode == 0
        and counts["missing"] == 0
        and counts["duplicates"] == 0
        and counts["failures_by_kind"] == ({"http_400": refused} if refused else {})
        and stats.get("rows") == args.rows
        and stats.get("rows_failed_by_kind") == counts["failures_by_kind"]
    )
    retries = {k: v for k, v in stats.get("requests", {}).items() if k.startswith("retry")}
    print(f"rows in {counts['rows_in']:,}, rows out {counts['rows_out']:,}, "
          f"failures by kind {counts['failures_by_kind']} (expected http_400: {refused}), "
          f"retries {retries}, {wall:.0f} s")  # fmt: skip
    print(f"missing={counts['missing']} duplicates={counts['duplicates']}")
    write_results(
        "soak",
        {"seed": seed, "args": {k: str(v) for k, v in vars(args).items()}, "kills": kills,
         "wall_s": wall, "final_returncode": final.returncode, **counts, "refused": refused,
         "stats_rows": stats.get("rows"), "retries": retries, "ok": ok},
        args.out,
    )  # fmt: skip
    if not ok:
        print(f"soak: FAILED (details in {workdir}/soak.log)", file=sys.stderr)
        return 1
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
