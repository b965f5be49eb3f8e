"""The chunk file: one Parquet file per chunk, whose footer records what it holds.

The footer's record (key `dataforge`) is the truth about a chunk, wherever the file goes and
whatever happened to Snakemake's own records (`.snakemake/`):

- `key`: what decides the chunk's content: its rows (input fingerprint, chunk size, range) and
  the content settings (model, prompt, sampling, engine kind, ...; see `content_settings`),
  with their digest. A chunk file whose key differs from the one the config and plan give is
  stale: the workflow regenerates it (`dataforge.resume`).
- `run`: how it was made (server, engine settings, host, GPUs, start-up and timings).
- `stats`: its statistics (rows, failures, token summaries), summed into stats.json.

Written atomically (temporary name, then rename), so a chunk file that exists is complete.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataforge.settings import Config, plain

FORMAT = 2
META_KEY = b"dataforge"


def content_settings(config: Config) -> dict[str, Any]:
    """The settings that decide what a chunk holds; a change regenerates the chunks.

    How a chunk is made (concurrency, timeouts, retries, engine tuning and parallelism,
    `chunks.per_server`, monitoring, publishing) is left out: changing it reruns nothing.
    """
    from dataforge.engines import content_identity

    rollout = config.rollout
    return {
        "model": config.model.name,
        "model_revision": config.model.revision,
        "max_context": config.model.max_context,
        "engine": content_identity(config),
        "prompt_column": None if rollout.function else config.input.prompt_column,
        "system": config.prompt.system,
        "template": config.prompt.template,
        "too_long": config.prompt.too_long,
        "sampling": plain(config.sampling),
        "rollout": plain(rollout) if rollout.function else None,
    }


@dataclass(frozen=True)
class ChunkKey:
    """What decides a chunk's content: its rows and the content settings."""

    chunk: int
    start: int
    end: int
    fingerprint: str  # the input's (plan.json's `fingerprint`)
    chunk_size: int
    settings: dict[str, Any] = field(hash=False)

    @property
    def digest(self) -> str:
        return hashlib.sha256(
            json.dumps(self.as_dict(digest=False), sort_keys=True).encode()
        ).hexdigest()

    def as_dict(self, digest: bool = True) -> dict[str, Any]:
        out = {
            "chunk": self.chunk,
            "start": self.start,
            "end": self.end,
            "fingerprint": self.fingerprint,
            "chunk_size": self.chunk_size,
            "settings": self.settings,
        }
        return {**out, "digest": self.digest} if digest else out


def expected_key(plan: dict[str, Any], index: int, settings: dict[str, Any]) -> ChunkKey:
    """The key chunk `index` of `plan` must have for the content settings `settings`."""
    size = plan["chunk_size"]
    return ChunkKey(
        chunk=index,
        start=index * size,
        end=min((index + 1) * size, plan["rows"]),
        fingerprint=plan["fingerprint"],
        chunk_size=size,
        settings=settings,
    )


@dataclass(frozen=True)
class ChunkRecord:
    """A chunk file's footer record."""

    key: ChunkKey
    run: dict[str, Any]
    stats: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "key": self.key.as_dict(), "run": self.run, "stats": self.stats}


class ForeignChunk(Exception):
    """A file named like a chunk file that dataforge did not write (or an older format)."""


def _parse(meta: dict[bytes, bytes] | None, path: Path) -> ChunkRecord:
    try:
        data = json.loads((meta or {})[META_KEY])
    except (KeyError, ValueError) as e:
        raise ForeignChunk(f"{path} has no dataforge record in its Parquet footer") from e
    if data.get("format") != FORMAT:
        raise ForeignChunk(
            f"{path} was written by an older dataforge (chunk format "
            f"{data.get('format', 1)}, this one writes {FORMAT})"
        )
    k = data["key"]
    key = ChunkKey(
        k["chunk"], k["start"], k["end"], k["fingerprint"], k["chunk_size"], k["settings"]
    )
    return ChunkRecord(key, data["run"], data["stats"])


@functools.lru_cache(maxsize=4096)
def _read_cached(path: str, _identity: tuple[int, ...]) -> ChunkRecord:
    import pyarrow.parquet as pq

    try:
        meta = pq.read_metadata(path).metadata
    except Exception as e:  # not Parquet, truncated, unreadable
        raise ForeignChunk(f"{path} is not a readable Parquet file ({e})") from None
    return _parse(meta, Path(path))


def read_record(path: str | Path) -> ChunkRecord:
    """The footer record of a chunk file (cached while the file is unchanged).

    Raises:
        ForeignChunk: the file is not a chunk file of this dataforge.
        FileNotFoundError: it is gone.
    """
    st = os.stat(path)
    return _read_cached(str(path), (st.st_ino, st.st_size, st.st_mtime_ns))


def read_key_or_none(path: str | Path) -> ChunkKey | None:
    """The key of a chunk file, None if it is absent or not a chunk file of this format."""
    try:
        return read_record(path).key
    except (OSError, ForeignChunk):
        return None


def differences(have: ChunkKey, want: ChunkKey) -> list[str]:
    """What differs between a chunk's recorded key and the expected one, as short phrases
    (`sampling.temperature 0.7 -> 0.9`, `rows 1500-2000 -> 1500-1800`)."""
    out = []
    if (have.start, have.end) != (want.start, want.end):
        out.append(f"rows {have.start}-{have.end} -> {want.start}-{want.end}")
    if have.fingerprint != want.fingerprint:
        out.append("input")
    if have.chunk_size != want.chunk_size:
        out.append(f"chunks.size {have.chunk_size} -> {want.chunk_size}")
    out.extend(_dict_differences(have.settings, want.settings, ""))
    return out


def _dict_differences(a: Any, b: Any, prefix: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out.extend(_dict_differences(a.get(k), b.get(k), f"{prefix}{k}."))
        return out
    if a == b:
        return []

    def show(v: Any) -> str:
        text = json.dumps(v, ensure_ascii=False)
        return text if len(text) <= 40 else text[:37] + "..."

    return [f"{prefix.rstrip('.')} {show(a)} -> {show(b)}"]


def write_chunk(table: Any, record: ChunkRecord, path: str | Path) -> None:
    """Write a chunk's table with its record in the footer, atomically (temp file, fsync,
    rename); temporary files of killed writers of the same chunk are removed first."""
    import pyarrow.parquet as pq

    from dataforge.atomic import remove_stale_temps, write_atomic

    table = table.replace_schema_metadata({META_KEY: json.dumps(record.as_dict()).encode()})
    remove_stale_temps(path)
    write_atomic(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))
