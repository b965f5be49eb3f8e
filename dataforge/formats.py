"""Local input files by format: what a file name says, reading the first rows (parse-time
checks), and converting text files to Parquet once (the plan).

Parquet is read as it is. JSON Lines, a JSON array of objects (`.json`, alpaca's shape) and
CSV are streamed batch by batch, plain or compressed with gzip, zstd, bz2 or xz (by the
extension after the format's: `data.jsonl.gz`), so memory stays bounded whatever the size.
"""

from __future__ import annotations

import json
import lzma
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from dataforge.atomic import write_atomic
from dataforge.errors import InputError

FORMATS = {
    ".parquet": "parquet",
    ".jsonl": "json",
    ".ndjson": "json",
    ".json": "json",
    ".csv": "csv",
}
COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bz2", ".xz": "xz"}
SUPPORTED = (
    ".parquet, .jsonl, .json (JSON Lines or one array of objects) or .csv; the text formats "
    "also compressed as .gz, .zst, .bz2 or .xz"
)
BLOCK_BYTES = 16 << 20  # text read per batch when converting
PEEK_BYTES = 1 << 20  # text read for the first rows (parse-time checks)


def split_name(name: str) -> tuple[str | None, str | None]:
    """(format, compression) from a file name: ('json', 'gzip') for `x.jsonl.gz`; format None
    when dataforge cannot read the file (Parquet compresses inside, never around)."""
    lower = name.lower()
    compression = None
    for ext, codec in COMPRESSIONS.items():
        if lower.endswith(ext):
            compression, lower = codec, lower[: -len(ext)]
            break
    fmt = next((f for ext, f in FORMATS.items() if lower.endswith(ext)), None)
    if fmt == "parquet" and compression:
        return None, compression
    return fmt, compression


def format_of(path: str | Path) -> str | None:
    """'parquet', 'json' or 'csv' for a file dataforge reads, else None."""
    return split_name(Path(path).name)[0]


def open_input(path: Path) -> pa.NativeFile:
    """The file's bytes, decompressed as its name says."""
    compression = split_name(path.name)[1]
    if compression == "xz":  # not an Arrow codec
        return pa.PythonFile(lzma.open(path, "rb"), mode="r")
    return pa.input_stream(str(path), compression=compression)


def is_json_array(path: Path) -> bool:
    """Whether a JSON file holds one array (rather than JSON Lines): its first character."""
    with open_input(path) as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
        while not head:
            more = f.read(4096)
            if not more:
                return False
            head = more.lstrip(b" \t\r\n")
    return head.startswith(b"[")


def _read_error(path: Path, error: Exception) -> InputError:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return InputError(f"input.dataset: cannot read {path}: {text}")


class _NoBom:
    """A binary stream without its UTF-8 byte order mark (ijson does not skip one)."""

    def __init__(self, f: pa.NativeFile) -> None:
        self.f = f
        head = f.read(3)
        self.head = head[3:] if head == b"\xef\xbb\xbf" else head

    def read(self, n: int = -1) -> bytes:
        if not self.head or n == 0:  # ijson reads 0 bytes first to learn the type
            return self.f.read(n)
        out, self.head = self.head, b""
        return out + (self.f.read(n - len(out)) if n > len(out) else b"")


def _json_array_batches(path: Path, block_bytes: int, limit: int | None) -> Iterator[pa.Table]:
    """The objects of a JSON array, as tables of about `block_bytes` of JSON text each (typed
    like JSON Lines: pyarrow's JSON reader parses each block, the first block's types hold
    for the rest). `limit`: stop after this many bytes (the first rows only)."""
    import ijson
    import pyarrow.json as pajson

    def parse(lines: list[bytes], schema: pa.Schema | None) -> pa.Table:
        options = pajson.ParseOptions(explicit_schema=schema) if schema is not None else None
        return pajson.read_json(pa.BufferReader(b"\n".join(lines)), parse_options=options)

    lines: list[bytes] = []
    size = 0
    schema = None
    with open_input(path) as f:
        try:
            for number, item in enumerate(ijson.items(_NoBom(f), "item", use_float=True), 1):
                if not isinstance(item, dict):
                    raise InputError(
                        f"input.dataset: item {number} of the JSON array in {path} is not an "
                        "object; each row must be an object of columns"
                    )
                line = json.dumps(item, ensure_ascii=False).encode()
                lines.append(line)
                size += len(line)
                if size >= block_bytes:
                    table = parse(lines, schema)
                    schema = schema or table.schema
                    yield table
                    if limit is not None:
                        return
                    lines, size = [], 0
        except ijson.JSONError as e:
            what = e.args[0] if e.args else ""
            what = what.decode(errors="replace") if isinstance(what, bytes) else str(what)
            if "UTF8" in what:
                raise InputError(
                    f"input.dataset: {_first_bad_utf8(path)}; dataforge reads text as UTF-8"
                ) from None
            raise _read_error(path, ValueError(what or "not valid JSON")) from None
        except UnicodeEncodeError:
            raise InputError(
                f"input.dataset: {path} holds text that is not valid UTF-8; dataforge reads "
                "text as UTF-8"
            ) from None
    if lines:
        yield parse(lines, schema)


def _text_batches(path: Path, fmt: str, block_bytes: int) -> Iterator[pa.RecordBatch]:
    if fmt == "json":
        import pyarrow.json as pajson

        options = pajson.ReadOptions(block_size=block_bytes)
        return iter(pajson.open_json(open_input(path), read_options=options))
    import pyarrow.csv as pacsv

    options = pacsv.ReadOptions(block_size=block_bytes)
    return iter(pacsv.open_csv(open_input(path), read_options=options))


def batches(path: Path, block_bytes: int = BLOCK_BYTES, first_only: bool = False):
    """Record batches of a local input file, streamed; text is checked to be UTF-8.

    Raises:
        InputError: naming the file (and line and column for bad text) when it cannot be read.
    """
    fmt = format_of(path)
    try:
        if fmt == "parquet":
            parquet = pq.ParquetFile(path)
            size = min(max(block_bytes // 1024, 1), 65536)
            for batch in parquet.iter_batches(batch_size=size):
                yield batch
                if first_only:
                    return
            return
        if fmt == "json" and is_json_array(path):
            limit = block_bytes if first_only else None
            for table in _json_array_batches(path, block_bytes, limit):
                for batch in table.to_batches():
                    _check_text_columns(batch, path)
                    yield batch
            return
        for batch in _text_batches(path, fmt, block_bytes):
            _check_text_columns(batch, path)
            yield batch
            if first_only:
                return
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, EOFError, lzma.LZMAError) as e:
        raise _read_error(path, e) from None


def first_schema(path: Path) -> pa.Schema:
    """The columns of a local input file, from its metadata or its first rows."""
    if format_of(path) == "parquet":
        try:
            return pq.read_schema(path).remove_metadata()
        except (pa.ArrowInvalid, OSError) as e:
            raise _read_error(path, e) from None
    for batch in batches(path, PEEK_BYTES, first_only=True):
        return batch.schema
    raise InputError(f"input.dataset: {path} holds no rows")


def _lines(f: pa.NativeFile) -> Iterator[bytes]:
    rest = b""
    while block := f.read(1 << 20):
        *lines, rest = (rest + block).split(b"\n")
        yield from lines
    if rest:
        yield rest


def _first_bad_utf8(path: Path) -> str:
    """Where `path` first holds bytes that are not UTF-8 (for the error message)."""
    with open_input(path) as f:
        for number, line in enumerate(_lines(f), 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                return f"{path} line {number} is not valid UTF-8 (byte {e.start + 1} of the line)"
    return f"{path} is not valid UTF-8"


def _check_text_columns(batch: pa.RecordBatch, path: Path) -> None:
    """Text that is not UTF-8 stops the plan with the file, line and column: pyarrow's JSON
    reader keeps such bytes in string columns unchecked (reading the rows fails later, in the
    middle of the run), and its CSV reader types the whole column binary."""
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        bad = pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type)
        if not bad and pa.types.is_string(column.type):
            try:
                column.validate(full=True)
            except pa.ArrowInvalid:
                bad = True
        if bad:
            raise InputError(
                f"input.dataset: column {name!r} of {_first_bad_utf8(path)}; "
                "dataforge reads text as UTF-8"
            )


def convert_to_parquet(files: list[Path], target: Path, row_group_rows: int) -> None:
    """Stream input files (of any readable format) into one Parquet file, batch by batch."""

    def write(tmp: Path) -> None:
        writer = None
        try:
            for f in files:
                for batch in batches(f):
                    if writer is None:
                        writer = pq.ParquetWriter(tmp, batch.schema)
                    elif not batch.schema.equals(writer.schema):
                        raise InputError(
                            f"input.dataset: {f} has other columns or types than {files[0]}; "
                            "all input files must share one schema"
                        )
                    writer.write_batch(batch, row_group_size=row_group_rows)
            if writer is None:
                raise InputError(f"input.dataset: {files[0]} holds no rows")
        finally:
            if writer is not None:
                writer.close()

    write_atomic(target, write)
