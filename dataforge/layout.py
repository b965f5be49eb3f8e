"""Where a run keeps its files: every path of the results layout, relative to the working
directory (`snakemake --directory`). Standard library only (the chunk job imports it).

    results/plan.json                  the plan (plan_chunks)
    results/data/chunk-NNNNN.parquet   one file per chunk; its footer records what it holds
    results/stats.json                 aggregate_stats
    results/README.md                  the dataset card, with results/plots/
    results/.serve/                    the serve config and each server's service file
    results/.stale/                    markers that make Snakemake redo a stale chunk or plan
    results/.prepared/                 JSONL/CSV inputs converted once to Parquet
"""

from __future__ import annotations

from pathlib import Path

RESULTS = Path("results")
PLAN = RESULTS / "plan.json"
DATA = RESULTS / "data"
CHUNK_GLOB = "chunk-*.parquet"
STATS = RESULTS / "stats.json"
CARD = RESULTS / "README.md"
PLOTS = RESULTS / "plots"
FIGURES = {"completion": PLOTS / "completion_tokens.png", "finish": PLOTS / "finish_reasons.png"}
STATS_TABLES = PLOTS / "stats.html"
SERVE = RESULTS / ".serve"
SERVE_CONFIG = SERVE / "config.json"
STALE = RESULTS / ".stale"
PREPARED = RESULTS / ".prepared"
INVOCATION = RESULTS / ".invocation.json"
PUBLISHED = RESULTS / ".published.json"

# Snakemake patterns (wildcards in braces) of the per-chunk and per-server files.
CHUNK_PATTERN = str(DATA / "chunk-{chunk}.parquet")
SERVICE_PATTERN = str(SERVE / "server-{server}.json")


def chunk_name(index: int) -> str:
    """The 5-digit id of chunk `index`."""
    return f"{index:05d}"


def chunk_file(index: int, workdir: str | Path = ".") -> Path:
    """The chunk file of chunk `index`."""
    return Path(workdir) / DATA / f"chunk-{chunk_name(index)}.parquet"


def chunk_index(path: str | Path) -> int | None:
    """The index of a chunk file (None for a name that is not `chunk-NNNNN.parquet`)."""
    stem = Path(path).name.removesuffix(".parquet").removeprefix("chunk-")
    return int(stem) if len(stem) == 5 and stem.isdigit() else None


def chunk_files(workdir: str | Path = ".") -> dict[int, Path]:
    """The chunk files present, by index (temporary files of a writer are not listed)."""
    found = {}
    for path in sorted((Path(workdir) / DATA).glob(CHUNK_GLOB)):
        index = chunk_index(path)
        if index is not None:
            found[index] = path
    return found


def service_file(server: str) -> str:
    """The service() file through which server `server` publishes its address."""
    return SERVICE_PATTERN.format(server=server)


def stale_marker(name: str) -> Path:
    """The marker that makes Snakemake redo `name` (a chunk file's or the plan's name)."""
    return STALE / f"{name}.json"
