"""The input dataset: resolve it and describe it for the plan.

A source is described by a plain dict (stored in `plan.json`) so that every chunk reads exactly
the rows the plan counted (`dataforge.reader`). Parquet files and the `datasets` cache of a Hub
input can be read by range; text files (JSON, CSV, compressed or not) cannot, so the plan
converts them once into a Parquet file beside the results.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dataforge.errors import InputError
from dataforge.formats import SUPPORTED, convert_to_parquet, format_of

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_DIGEST_BYTES = 1 << 20


def file_digest(path: str | Path) -> str:
    """A cheap content fingerprint: size plus the first and last MiB (sha256)."""
    h = hashlib.sha256()
    size = os.path.getsize(path)
    h.update(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(_DIGEST_BYTES))
        if size > 2 * _DIGEST_BYTES:
            f.seek(size - _DIGEST_BYTES)
        h.update(f.read(_DIGEST_BYTES))
    return h.hexdigest()


def resolve_local_files(dataset: str, search_dirs: list[Path]) -> list[Path] | None:
    """Local files for `dataset`, or None when it names a Hub dataset.

    Relative paths and globs are tried in each of `search_dirs` in turn.

    Raises:
        InputError: when it looks like a local path but nothing matches.
    """
    is_glob = any(c in dataset for c in "*?[")
    looks_local = (
        is_glob
        or format_of(dataset) is not None
        or dataset.startswith((".", "/", "~"))
        or not _HUB_ID.match(dataset)
    )
    expanded = os.path.expanduser(dataset)
    bases = [None] if os.path.isabs(expanded) else search_dirs
    for base in bases:
        pattern = expanded if base is None else str(base / expanded)
        matches = sorted(glob.glob(pattern)) if is_glob else [pattern]
        files = [Path(m).resolve() for m in matches if os.path.isfile(m)]
        if files:
            return files
        if not is_glob and os.path.isdir(pattern):
            found = [p for p in Path(pattern).rglob("*") if p.is_file()]
            files = sorted(p.resolve() for p in found if format_of(p.name))
            if files:
                return files
            raise InputError(
                f"input.dataset: the folder {pattern} holds no file dataforge reads "
                f"({len(found)} other files); use {SUPPORTED}"
            )
    if looks_local:
        where = "" if bases == [None] else f" (looked in {', '.join(map(str, bases))})"
        raise InputError(f"input.dataset: no file matches {dataset!r}{where}")
    return None


def check_readable(files: list[Path]) -> bool:
    """Whether every file is Parquet (read as it is; else the plan converts them all).

    Raises:
        InputError: naming the first file of a type dataforge cannot read.
    """
    bad = [f for f in files if format_of(f) is None]
    if bad:
        raise InputError(f"input.dataset: {bad[0]} is not a file dataforge reads; use {SUPPORTED}")
    return all(format_of(f) == "parquet" for f in files)


def portable(path: str | Path, workdir: Path, basedir: Path) -> dict[str, str]:
    """A path as the plan records it: relative to the working directory or to the workflow's
    folder when it lies inside one (so a run directory or a checkout can move), else absolute."""
    path = Path(path).resolve()
    for base, root in (("workdir", workdir), ("workflow", basedir)):
        try:
            return {"path": str(path.relative_to(Path(root).resolve())), "base": base}
        except ValueError:
            continue
    return {"path": str(path), "base": "absolute"}


def locate(entry: dict[str, Any], workdir: Path, basedir: Path) -> Path:
    """The file a plan entry (from `portable`) names, for this run's folders."""
    root = {"workdir": workdir, "workflow": basedir}.get(entry.get("base", "absolute"))
    return Path(entry["path"]) if root is None else Path(root) / entry["path"]


def _original(path: Path, workdir: Path, basedir: Path, digest: str | None = None) -> dict:
    st = path.stat()
    return {
        **portable(path, workdir, basedir),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "digest": digest or file_digest(path),
    }


def local_fingerprint(
    files: list[Path], known: list[dict[str, Any]], workdir: Path, basedir: Path
) -> str:
    """The fingerprint of local input files (as `describe_local` computes it), reusing the
    digests in `known` (a plan's `originals`) for files whose size and mtime are unchanged."""
    digests = []
    for f in files:
        st = f.stat()
        same = [
            k for k in known
            if locate(k, workdir, basedir).resolve() == f.resolve()
            and (k.get("size"), k.get("mtime_ns")) == (st.st_size, st.st_mtime_ns)
        ]  # fmt: skip
        digests.append(same[0]["digest"] if same else file_digest(f))
    return _fingerprint(digests)


def _fingerprint(digests: list[str]) -> str:
    return hashlib.sha256(json.dumps(digests).encode()).hexdigest()


def describe_local(
    files: list[Path],
    prepared_dir: Path,
    row_group_rows: int,
    workdir: Path = Path(),
    basedir: Path = Path(),
) -> dict[str, Any]:
    """Describe local input files; unless all are Parquet, they are converted once into one
    Parquet file in `prepared_dir` (dataforge.formats).

    Paths are recorded relative to `workdir` or `basedir` where they lie inside one (see
    `portable`), so that the run resumes after its directory moved.
    """
    all_parquet = check_readable(files)
    originals = [_original(f, workdir, basedir) for f in files]
    fingerprint = _fingerprint([o["digest"] for o in originals])
    if all_parquet:
        readable = files
    else:
        target = prepared_dir / f"input-{fingerprint[:16]}.parquet"
        if not target.exists():
            convert_to_parquet(files, target, row_group_rows)
            for old in prepared_dir.glob("input-*.parquet"):  # of an input that changed
                if old != target:
                    old.unlink(missing_ok=True)
        readable = [target]
    entries = []
    schema = None
    for f in readable:
        try:
            meta = pq.read_metadata(f)
            file_schema = pq.read_schema(f).remove_metadata()
        except (pa.ArrowInvalid, OSError) as e:
            raise InputError(f"input.dataset: cannot read {f}: {e}") from None
        if schema is None:
            schema = file_schema
        elif not file_schema.equals(schema):
            raise InputError(
                f"input.dataset: {f} has other columns or types than {readable[0]}; "
                "all input files must share one schema"
            )
        entries.append({**portable(f, workdir, basedir), "rows": meta.num_rows})
    return {
        "kind": "local",
        "format": "parquet",
        "originals": originals,
        "files": entries,
        "fingerprint": fingerprint,
    }


def describe_hub(dataset: str, config: str | None, split: str, revision: str | None) -> dict:
    """Resolve a Hub dataset to a commit, prepare it once with `datasets`, describe its files."""
    try:
        import datasets
        from huggingface_hub import HfApi
    except ImportError as e:  # pragma: no cover - both are dependencies
        raise InputError(f"input.dataset: Hub datasets need `datasets`: {e}") from None
    try:
        info = HfApi().dataset_info(dataset, revision=revision)
        sha = info.sha
        ds = datasets.load_dataset(dataset, config, split=split, revision=sha)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = ""
        if _unreachable(e):
            hint = (
                "; without network, download the dataset's files elsewhere (`hf download "
                f"{dataset} --repo-type dataset --local-dir DIR`) and set input.dataset to DIR"
            )
        raise InputError(
            f"input.dataset: cannot load {dataset!r} from the Hub: {first}{hint}"
        ) from None
    entries = []
    for cache in ds.cache_files:
        path = cache["filename"]
        with pa.memory_map(path) as source:
            rows = sum(b.num_rows for b in pa.ipc.open_stream(source))
        entries.append({"path": path, "base": "absolute", "rows": rows})
    identity = {"dataset": dataset, "config": config, "split": split, "revision": sha}
    return {
        "kind": "hub",
        "format": "arrow",
        **identity,
        "requested_revision": revision,
        # From the input's own card, for the result's card (None where it says nothing).
        "license": getattr(info.card_data, "license", None),
        "language": getattr(info.card_data, "language", None),
        "files": entries,
        "fingerprint": hashlib.sha256(json.dumps(identity).encode()).hexdigest(),
    }


def _unreachable(error: BaseException) -> bool:
    """Whether `error` (or what caused it) says the Hub could not be reached at all."""
    seen: BaseException | None = error
    for _ in range(10):
        if seen is None:
            return False
        names = {c.__name__ for c in type(seen).__mro__}
        if isinstance(seen, ConnectionError | TimeoutError) or names & {
            "ConnectError",
            "ConnectTimeout",
            "OfflineModeIsEnabled",
            "gaierror",
        }:
            return True
        if "Name or service not known" in str(seen) or "Temporary failure in name" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def source_schema(fmt: str, path: str | Path) -> pa.Schema:
    """The Arrow schema of the source rows in `path` (`fmt`: the source's format), without
    file metadata."""
    if fmt == "parquet":
        return pq.read_schema(path).remove_metadata()
    with pa.memory_map(str(path)) as f:
        return pa.ipc.open_stream(f).schema.remove_metadata()


def prompt_kind(schema: pa.Schema, column: str) -> str:
    """'text' or 'messages', from the type of the prompt column.

    Raises:
        InputError: naming the column when it is missing or of another type.
    """
    if column not in schema.names:
        raise InputError(
            f"input.prompt_column: column {column!r} not found; the input has "
            f"{', '.join(schema.names)}"
        )
    t = schema.field(column).type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "text"
    if (pa.types.is_list(t) or pa.types.is_large_list(t)) and pa.types.is_struct(t.value_type):
        names = {t.value_type.field(i).name for i in range(t.value_type.num_fields)}
        if {"role", "content"} <= names:
            return "messages"
    raise InputError(
        f"input.prompt_column: column {column!r} has type {t}; expected a string or a list of "
        "{role, content} messages"
    )


def check_output_columns(schema: pa.Schema, added: tuple[str, ...]) -> None:
    """Input columns must not collide with the columns dataforge adds."""
    clash = [c for c in added if c in schema.names]
    if clash:
        raise InputError(
            f"input.dataset: column {clash[0]!r} is reserved for dataforge's output "
            f"({', '.join(added)}); rename it in the input"
        )


def check_columns(
    schema: pa.Schema, prompt_column: str, template: str | None, rollout: bool
) -> str:
    """The prompt kind ('text', 'messages' or 'rollout') of rows with `schema`, checking the
    prompt column, the template's columns and the columns dataforge adds.

    Raises:
        InputError, ConfigError: one line naming the column or key.
    """
    from dataforge.output import OUTPUT_COLUMNS, ROLLOUT_OUTPUT_COLUMNS

    if rollout:
        check_output_columns(schema, ROLLOUT_OUTPUT_COLUMNS)
        return "rollout"
    kind = prompt_kind(schema, prompt_column)
    check_output_columns(schema, OUTPUT_COLUMNS)
    check_template(schema.names, kind, prompt_column, template)
    return kind


def check_template(names: list[str], kind: str, prompt_column: str, template: str | None) -> None:
    """A template needs text prompts and names only input columns.

    Raises:
        ConfigError: one line naming the key and the column.
    """
    from dataforge.errors import ConfigError
    from dataforge.prompts import template_columns

    if template and kind == "messages":
        raise ConfigError(
            "config: prompt.template cannot be used with message-list prompts (column "
            f"{prompt_column!r} holds chat messages)"
        )
    missing = [c for c in template_columns(template) if c not in names]
    if missing and kind == "text":
        raise ConfigError(
            f"prompt.template: [[{missing[0]}]] names no input column; the input has "
            f"{', '.join(names)} ([[DOCUMENT]] is the prompt column)"
        )


def check_local_input(
    dataset: str, prompt_column: str, template: str | None, rollout: bool, search_dirs: list[Path]
) -> None:
    """Before any job (parse time, `-n` too): a local input exists, is readable in its format,
    and has the prompt column and the template's columns, from its first file's metadata or
    first rows. A Hub input is checked by the plan (no network at parse time)."""
    from dataforge.formats import first_schema

    files = resolve_local_files(dataset, search_dirs)
    if files is None:
        return
    check_readable(files)
    check_columns(first_schema(files[0]), prompt_column, template, rollout)
