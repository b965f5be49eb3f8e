"""Local input files by format: what a file name says, reading the first rows (parse-time
checks), and converting text files to Parquet once (the plan).

Parquet is read as it is. JSON Lines, a JSON array of objects (`.json`, alpaca's shape) and
CSV are streamed batch by batch, plain or compressed with gzip, zstd, bz2 or xz (by the
extension after the format's: `data.jsonl.gz`), so memory stays bounded whatever the size.

Text is cut here into blocks of whole records (JSON Lines and CSV: at a newline, for CSV one
outside quotes; a JSON array: its objects, read by ijson, as JSON Lines) that pyarrow parses
one at a time: its streaming readers read ahead without a bound that holds (a 350 MB file put
350 MB in memory), and refuse a record longer than their block. The first block, of
`block_bytes`, sets the column types, as pyarrow's readers do; the others are `STEP_BYTES`, a
record longer than that makes its block longer.
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
BLOCK_BYTES = 16 << 20  # text whose rows set the column types when converting
STEP_BYTES = 1 << 20  # text parsed at once after the first block
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
    """A binary stream without its UTF-8 byte order mark (ijson does not skip one, and only
    the first block of a text file would hold it)."""

    def __init__(self, f: pa.NativeFile) -> None:
        self.f = f
        head = f.read(3)
        self.head = head[3:] if head == b"\xef\xbb\xbf" else head

    def read(self, n: int = -1) -> bytes:
        if not self.head or n == 0:  # ijson reads 0 bytes first to learn the type
            return self.f.read(n)
        out, self.head = self.head, b""
        return out + (self.f.read(n - len(out)) if n > len(out) else b"")


def _array_blocks(f: _NoBom, first_bytes: int, step_bytes: int, path: Path) -> Iterator[bytes]:
    """The objects of a JSON array as blocks of JSON Lines text (parsed like JSON Lines): the
    first of about `first_bytes`, then about `step_bytes` each."""
    import ijson

    lines: list[bytes] = []
    size, want = 0, first_bytes
    try:
        for number, item in enumerate(ijson.items(f, "item", use_float=True), 1):
            if not isinstance(item, dict):
                raise InputError(
                    f"input.dataset: item {number} of the JSON array in {path} is not an "
                    "object; each row must be an object of columns"
                )
            line = json.dumps(item, ensure_ascii=False).encode()
            lines.append(line)
            size += len(line)
            if size >= want:
                yield b"\n".join(lines)
                lines, size, want = [], 0, step_bytes
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
        yield b"\n".join(lines)


def _parse_json(block: bytes, schema: pa.Schema | None) -> pa.Table:
    """JSON Lines text, whole records; typed as `schema` when given (no new column then)."""
    import pyarrow.json as pajson

    parse = pajson.ParseOptions()
    if schema is not None:
        parse = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error")
    read = pajson.ReadOptions(block_size=len(block) + 1)  # one block: no record straddles two
    return pajson.read_json(pa.BufferReader(block), read_options=read, parse_options=parse)


def _parse_csv(block: bytes, schema: pa.Schema | None) -> pa.Table:
    """CSV text, whole records: the first block with its header, the others typed as `schema`."""
    import pyarrow.csv as pacsv

    read = pacsv.ReadOptions(block_size=len(block) + 1)
    convert = pacsv.ConvertOptions()
    if schema is not None:
        read = pacsv.ReadOptions(block_size=len(block) + 1, column_names=schema.names)
        # bad text is found and named by line by _check_text_columns, as in the first block
        convert = pacsv.ConvertOptions(column_types=schema, check_utf8=False)
    parse = pacsv.ParseOptions(newlines_in_values=True)
    return pacsv.read_csv(
        pa.BufferReader(block), read_options=read, parse_options=parse, convert_options=convert
    )


def _parse_block(parse, block: bytes, schema: pa.Schema | None, path: Path, first: int) -> pa.Table:
    """One block parsed: the first sets the columns (`first` bytes of text), a later one with a
    column that the first lacks is refused naming it."""
    try:
        return parse(block, schema)
    except pa.ArrowInvalid as e:
        if schema is None or "unexpected field" not in str(e):
            raise
        new = sorted(set(parse(block, None).schema.names) - set(schema.names))
        raise InputError(
            f"input.dataset: {path}: column(s) {', '.join(map(repr, new))} first appear after "
            f"the first {first >> 20 or 1} MB of rows, whose columns are the dataset's; give "
            "the first rows every column (null where empty)"
        ) from None


def _line_end(data: bytes) -> int:
    """Where the last whole JSON line of `data` ends (0: none)."""
    return data.rfind(b"\n") + 1


def _csv_record_end(data: bytes) -> int:
    """Where the last whole CSV record of `data` ends (0: none): after a newline outside
    quotes. A quote inside a quoted value is doubled, so the newlines with an even number of
    quotes before them end records (`data` starts at a record)."""
    inside = data.count(b'"') % 2  # of data[:end]
    end = len(data)
    while (i := data.rfind(b"\n", 0, end)) >= 0:
        inside ^= data.count(b'"', i, end) % 2
        if not inside:
            return i + 1
        end = i
    return 0


def _record_blocks(f: _NoBom, first_bytes: int, step_bytes: int, cut) -> Iterator[bytes]:
    """The stream's text in blocks of whole records: the first of about `first_bytes`, then
    about `step_bytes` each; `cut(data)` says where the last whole record of `data` ends."""
    rest = b""
    want = first_bytes
    while True:
        parts, got = [rest], 0  # `want` new bytes after the rest of the last block
        while got < want and (data := f.read(want - got)):
            parts.append(data)
            got += len(data)
        text = b"".join(parts)
        if got == 0:  # the end of the stream: what is left is the last record
            if text.strip():
                yield text
            return
        end = cut(text)
        if end == 0:  # a record longer than the block: read on, twice as much each time
            rest, want = text, max(want, len(text))
            continue
        if text[:end].strip():
            yield text[:end]
        rest, want = text[end:], step_bytes


def _text_batches(path: Path, fmt: str, block_bytes: int) -> Iterator[pa.RecordBatch]:
    """The batches of a text file, block by block; the first block's types hold for the rest."""
    step = min(block_bytes, STEP_BYTES)
    array = fmt == "json" and is_json_array(path)
    parse = _parse_json if fmt == "json" else _parse_csv
    schema = None
    with open_input(path) as f:
        if array:
            blocks = _array_blocks(_NoBom(f), block_bytes, step, path)
        else:
            cut = _line_end if fmt == "json" else _csv_record_end
            blocks = _record_blocks(_NoBom(f), block_bytes, step, cut)
        for block in blocks:
            table = _parse_block(parse, block, schema, path, block_bytes)
            schema = schema or table.schema
            for batch in table.to_batches():
                _check_text_columns(batch, path)
                yield batch


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
        for batch in _text_batches(path, fmt, block_bytes):
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


ROW_GROUP_BYTES = 64 << 20  # at most this much held for one row group when converting


def convert_to_parquet(files: list[Path], target: Path, row_group_rows: int) -> None:
    """Stream input files (of any readable format) into one Parquet file, batch by batch, in
    row groups of `row_group_rows` rows (fewer when that many rows pass ROW_GROUP_BYTES)."""

    def write(tmp: Path) -> None:
        writer = None
        held: list[pa.RecordBatch] = []  # rows not written yet, fewer than one row group

        def flush(whole_groups_only: bool) -> None:
            table = pa.Table.from_batches(held, schema=writer.schema)
            keep = table.num_rows % row_group_rows if whole_groups_only else 0
            writer.write_table(table.slice(0, table.num_rows - keep), row_group_rows)
            held[:] = table.slice(table.num_rows - keep).to_batches() if keep else []

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
                    held.append(batch)
                    if sum(b.nbytes for b in held) >= ROW_GROUP_BYTES:
                        flush(whole_groups_only=False)
                    elif sum(b.num_rows for b in held) >= row_group_rows:
                        flush(whole_groups_only=True)
            if writer is None:
                raise InputError(f"input.dataset: {files[0]} holds no rows")
            if held:
                flush(whole_groups_only=False)
        finally:
            if writer is not None:
                writer.close()

    write_atomic(target, write)
