"""Reading a row range of the planned input, without loading the rest.

Parquet is read through its row-group index (streamed in batches, so memory stays bounded by
the batch size even when a row group is much larger than a chunk), Arrow IPC files (the
`datasets` cache of a Hub input) through memory maps.
"""

from __future__ import annotations

import bisect
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dataforge.errors import InputError
from dataforge.source import file_digest, locate, source_schema


class RowReader:
    """Reads global row ranges from a described source; keeps file handles open for reuse.

    Relative paths of the plan are taken from `workdir` and `basedir` (see `portable`)."""

    def __init__(
        self, source: dict[str, Any], workdir: Path = Path(), basedir: Path = Path()
    ) -> None:
        self.source = source
        self.workdir, self.basedir = Path(workdir), Path(basedir)
        self.paths = [str(locate(f, self.workdir, self.basedir)) for f in source["files"]]
        self.offsets = [0]
        for f in source["files"]:
            self.offsets.append(self.offsets[-1] + f["rows"])
        self._parquet: dict[str, tuple[pq.ParquetFile, list[int]]] = {}
        self._arrow: dict[str, list[pa.RecordBatch]] = {}

    def check_unchanged(self) -> None:
        """Fail if a local input file changed since the plan was made (the workflow checks
        this before any job starts; this is for a file changed during the run)."""
        for original in self.source.get("originals", []):
            path = locate(original, self.workdir, self.basedir)
            try:
                st = path.stat()
                same = (st.st_size, st.st_mtime_ns) == (original["size"], original["mtime_ns"])
                if same or file_digest(path) == original["digest"]:
                    continue
            except OSError:
                pass
            raise InputError(
                f"input.dataset: {path} changed or vanished during the run; restore it and "
                "run again (the chunks generated from it so far are kept only if it is the "
                "same file)"
            )

    def read(self, start: int, end: int) -> pa.Table:
        """Rows [start, end) as one table."""
        pieces = []
        first = bisect.bisect_right(self.offsets, start) - 1
        for i in range(max(first, 0), len(self.source["files"])):
            lo, hi = self.offsets[i], self.offsets[i + 1]
            if lo >= end:
                break
            a, b = max(start, lo) - lo, min(end, hi) - lo
            if b > a:
                pieces.append(self._read_file(i, a, b))
        if not pieces:
            return source_schema(self.source["format"], self.paths[0]).empty_table()
        table = pa.concat_tables(pieces) if len(pieces) > 1 else pieces[0]
        return table.replace_schema_metadata(None)

    def _read_file(self, i: int, start: int, end: int) -> pa.Table:
        path = self.paths[i]
        if self.source["format"] == "parquet":
            return self._read_parquet(path, start, end)
        return self._read_arrow(path, start, end)

    def _read_parquet(self, path: str, start: int, end: int) -> pa.Table:
        if path not in self._parquet:
            pf = pq.ParquetFile(path, memory_map=True)
            starts = [0]
            for g in range(pf.metadata.num_row_groups):
                starts.append(starts[-1] + pf.metadata.row_group(g).num_rows)
            self._parquet[path] = (pf, starts)
        pf, starts = self._parquet[path]
        g0 = bisect.bisect_right(starts, start) - 1
        g1 = bisect.bisect_left(starts, end)
        groups = list(range(g0, min(g1, pf.metadata.num_row_groups)))
        batches, pos = [], starts[g0]
        # Stream the overlapping row groups in batches: memory stays bounded by the batch size
        # even when a row group is much larger than a chunk.
        for batch in pf.iter_batches(batch_size=8192, row_groups=groups, use_threads=False):
            b0, b1 = pos, pos + batch.num_rows
            pos = b1
            if b1 <= start:
                continue
            batches.append(batch.slice(max(start - b0, 0), min(end, b1) - max(start, b0)))
            if b1 >= end:
                break
        return pa.Table.from_batches(batches, schema=pf.schema_arrow)

    def _read_arrow(self, path: str, start: int, end: int) -> pa.Table:
        if path not in self._arrow:
            source = pa.memory_map(path)  # zero-copy: batches point into the mapping
            self._arrow[path] = list(pa.ipc.open_stream(source))
        batches, pos = [], 0
        for batch in self._arrow[path]:
            b0, b1 = pos, pos + batch.num_rows
            pos = b1
            if b1 <= start:
                continue
            if b0 >= end:
                break
            batches.append(batch.slice(max(start - b0, 0), min(end, b1) - max(start, b0)))
        return pa.Table.from_batches(batches, schema=self._arrow[path][0].schema)
