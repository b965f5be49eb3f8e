"""`dataforge status [DIR]`: how far a run is, from what is on disk.

Reads `results/plan.json` and the records in the footers of the chunk files present (a chunk
counts once its file exists), so it works while the run goes, after it ended, after a crash,
and for a Slurm run from the login node. Throughput and the ETA come from the chunks that
finished in the last `--window` seconds: chunks of a group finish one after another, so the
recent rate of finished chunks is what the rest of the run will see.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from dataforge.fmt import duration


def collect(
    workdir: Path,
    window_s: float = 300.0,
    now: float | None = None,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Progress numbers of the run in `workdir` (see the module docstring). With `settings`
    (the config's content settings, `chunkfile.content_settings`), a chunk file made with
    other settings is not done: the run generates it again."""
    now = time.time() if now is None else now
    from dataforge import chunkfile, layout
    from dataforge.plan import load_plan

    plan_file = workdir / layout.PLAN
    if not plan_file.is_file():
        return {"planned": False}
    plan = load_plan(plan_file)
    done = []
    for index, path in layout.chunk_files(workdir).items():
        if index >= plan["chunks"]:
            continue
        try:
            record = chunkfile.read_record(path)
        except (OSError, chunkfile.ForeignChunk):
            continue  # not a chunk of this dataforge, or being replaced right now
        if settings is not None:
            want = chunkfile.expected_key(plan, index, settings)
            if record.key.digest != want.digest:
                continue
        done.append(record.stats)
    first_start = min((s["started"] for s in done), default=None)
    span = min(window_s, now - first_start) if first_start is not None else 0.0
    recent = [s for s in done if s["finished"] >= now - span] if span > 0 else []
    chunks_per_s = len(recent) / span if span > 0 else 0.0
    tokens_per_s = sum(s["completion_tokens"]["total"] for s in recent) / span if span else 0.0
    remaining = plan["chunks"] - len(done)
    eta = 0.0 if remaining == 0 else (remaining / chunks_per_s if chunks_per_s else None)
    return {
        "planned": True,
        "chunks": plan["chunks"],
        "chunks_done": len(done),
        "rows": plan["rows"],
        "rows_done": sum(s["rows"] for s in done),
        "rows_failed": sum(s["rows_failed"] for s in done),
        "output_tokens": sum(s["completion_tokens"]["total"] for s in done),
        "window_s": span,
        "chunks_per_min": chunks_per_s * 60,
        "output_tokens_per_s": tokens_per_s,
        "eta_s": eta,
        "last_finished": max((s["finished"] for s in done), default=None),
    }


def render(workdir: Path, p: dict[str, Any]) -> str:
    if not p["planned"]:
        return f"{workdir}: not planned yet (no results/plan.json)"
    share = 100 * p["chunks_done"] / p["chunks"] if p["chunks"] else 100.0
    lines = [
        f"{workdir}",
        f"chunks  {p['chunks_done']:,} / {p['chunks']:,} ({share:.1f}%)   "
        f"rows {p['rows_done']:,} / {p['rows']:,}   failed {p['rows_failed']:,}",
    ]
    if p["chunks_done"] == p["chunks"]:
        lines.append(f"done: {p['output_tokens']:,} output tokens")
    elif p["eta_s"] is None:
        lines.append("no chunk finished yet: no rate or ETA")
    else:
        lines.append(
            f"{p['output_tokens_per_s']:,.0f} output tokens/s, {p['chunks_per_min']:.1f} chunks/min"
            f" (last {duration(p['window_s'])})   ETA {duration(p['eta_s'])}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dataforge status", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["status"])
    parser.add_argument("directory", nargs="?", default=".", type=Path)
    parser.add_argument("--window", type=float, default=300.0, help="seconds of recent chunks")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args(argv)
    progress = collect(args.directory, args.window)
    print(json.dumps(progress) if args.json else render(args.directory, progress))
    return 0


if __name__ == "__main__":
    sys.exit(main())
