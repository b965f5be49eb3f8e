"""The dataset card (`README.md` of the result), rendered from `templates/dataset_card.md.j2`,
and the stats tables page of Snakemake's report (`templates/stats_tables.html.j2`)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import jinja2
import yaml

from dataforge.fmt import short_duration

TEMPLATE_DIR = Path(__file__).parent / "templates"
HUB = "https://huggingface.co"
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
# engine.env values that look like secrets are not copied into the card
SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|CREDENTIAL", re.IGNORECASE)


def size_category(rows: int) -> str:
    """The Hub's `size_categories` value for a row count."""
    for limit, name in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
        (10_000_000, "1M<n<10M"),
    ):
        if rows < limit:
            return name
    return "n>10M"


def sample_rows(parquet: str | Path, prompt_column: str, n: int = 3) -> list[dict[str, Any]]:
    """The first `n` rows of a chunk file, shortened for display.

    A rollout's chunk (a `rollout` column) shows the row's input columns and the rollout's
    output, both as JSON.
    """
    import json

    import pyarrow.parquet as pq

    def short(value: Any, limit: int = 600) -> str:
        text = str(value).replace("```", "'''")  # keep the card's code fences intact
        return text if len(text) <= limit else text[:limit] + " …"

    names = pq.read_schema(parquet).names
    if "rollout" in names:
        table = pq.read_table(parquet).slice(0, n)
        out = []
        for r in table.to_pylist():
            row = {k: v for k, v in r.items() if k not in ("row", "rollout", "error")}
            value = json.loads(r["rollout"]) if r["rollout"] is not None else None
            out.append(
                {
                    "row": r["row"],
                    "prompt": short(json.dumps(row, ensure_ascii=False, default=str)),
                    "completion": short(json.dumps(value, ensure_ascii=False, indent=1)),
                    "error": r["error"],
                }
            )
        return out
    columns = [prompt_column, "row", "generations", "error"]
    table = pq.read_table(parquet, columns=columns).slice(0, n)
    out = []
    for r in table.to_pylist():
        gens = r["generations"] or []
        out.append(
            {
                "row": r["row"],
                "prompt": short(r[prompt_column]),
                "completion": short(gens[0]["text"]) if gens else "",
                "error": r["error"],
            }
        )
    return out


def shareable_config(config: dict[str, Any]) -> dict[str, Any]:
    """The run's effective config for the card, with secret-looking engine.env values hidden
    (the config holds no other secret: the endpoint key is only an environment variable's
    name)."""
    config = yaml.safe_load(yaml.safe_dump(config))  # a deep copy
    env = config.get("engine", {}).get("env") or {}
    for name in env:
        if SECRET_NAME.search(name):
            env[name] = "<hidden>"
    return config


def command_line(invocation: dict[str, Any] | None) -> str | None:
    """The command that started the run (recorded by the workflow's onstart), as a line that
    works pasted anywhere: it changes to the directory it was started in and names the
    Snakefile when that was not found there by default."""
    if not invocation or not invocation.get("argv"):
        return None
    argv = list(invocation["argv"])
    args = argv[1:]
    snakefile = invocation.get("snakefile")
    named = any(a in ("-s", "--snakefile") or a.startswith("--snakefile=") for a in args)
    cwd = invocation.get("cwd")
    if snakefile and not named and cwd and Path(cwd, "Snakefile") != Path(snakefile):
        args = ["--snakefile", snakefile, *args]
    command = shlex.join([argv[0], *args])
    return f"cd {shlex.quote(cwd)} && {command}" if cwd else command


def data_configs(split: str) -> list[dict[str, Any]]:
    """The card's `configs`: every chunk file as the input's split (also on the progress card,
    so the repo loads with `datasets.load_dataset` during the run)."""
    return [{"config_name": "default", "data_files": [{"split": split, "path": "data/*.parquet"}]}]


def hub_model(settings: dict[str, Any]) -> bool:
    """Whether the model is a Hub id (not a local folder), so it can be linked and tagged."""
    return settings.get("model_source") == "hub" and bool(HUB_ID.match(settings["model"]))


def front_matter(
    stats: dict[str, Any],
    plan: dict[str, Any],
    settings: dict[str, Any],
    data_bytes: tuple[int, int] | None = None,
) -> str:
    """The card's YAML header. `data_bytes` (the chunk files' size on disk and uncompressed)
    goes into `dataset_info` with the row count: `datasets` keys its cache of a local folder by
    these (and by nothing else that tells two runs' `results/` apart), so without them
    `load_dataset("<run>/results")` could return the rows of another run loaded before."""
    source = plan["source"]
    model = settings["model"]
    tags = ["synthetic", "dataforge"]
    if hub_model(settings):
        tags.append(model.split("/")[-1])
    front: dict[str, Any] = {}
    if source.get("license"):
        front["license"] = source["license"]
    if source.get("language"):
        front["language"] = source["language"]
    front.update(
        {
            "tags": tags,
            "task_categories": ["text-generation"],
            "size_categories": [size_category(stats["rows"])],
            "annotations_creators": ["machine-generated"],
        }
    )
    if source.get("kind") == "hub":
        front["source_datasets"] = [plan["input"]["dataset"]]
    split = plan["input"]["split"]
    front["configs"] = data_configs(split)
    if data_bytes is not None:
        stored, uncompressed = data_bytes
        front["dataset_info"] = {
            "config_name": "default",
            "splits": [{"name": split, "num_bytes": uncompressed, "num_examples": stats["rows"]}],
            "download_size": stored,
            "dataset_size": uncompressed,
        }
    return yaml.safe_dump(front, sort_keys=False, allow_unicode=True).strip()


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=jinja2.select_autoescape(["html"]),
    )
    env.globals["num"] = lambda v: "n/a" if v is None else f"{v:,}"
    env.globals["duration"] = short_duration
    return env


def render_card(
    stats: dict[str, Any],
    plan: dict[str, Any],
    settings: dict[str, Any],
    samples: list[dict],
    *,
    figures: dict[str, str],
    config: dict[str, Any] | None = None,
    invocation: dict[str, Any] | None = None,
    repo_id: str | None = None,
    data_bytes: tuple[int, int] | None = None,
) -> str:
    """The card's Markdown with YAML front matter. `figures` maps `completion` and `finish` to
    the PNG paths relative to the card; `data_bytes`: the chunk files' size (see
    `front_matter`)."""
    model = settings["model"]
    dataset = plan["input"]["dataset"]
    hub_input = plan["source"].get("kind") == "hub"
    return (
        _environment()
        .get_template("dataset_card.md.j2")
        .render(
            front_matter=front_matter(stats, plan, settings, data_bytes),
            title=f"Dataset card for {repo_id}" if repo_id else "Synthetic dataset",
            model_url=f"{HUB}/{model}" if hub_model(settings) else None,
            shows_parallelism=_loads_model(settings.get("engine_kind")),
            source_url=f"{HUB}/datasets/{dataset}" if hub_input else None,
            stats=stats,
            plan=plan,
            settings=settings,
            samples=samples,
            figures=figures,
            repo_id=repo_id,
            command=command_line(invocation),
            config_yaml=yaml.safe_dump(
                shareable_config(config or {}), sort_keys=False, allow_unicode=True
            ).strip(),
        )
    )


def _loads_model(kind: str | None) -> bool:
    """Whether the engine kind runs the model itself (its parallel sizes mean something)."""
    from dataforge.engines import KINDS

    return kind in KINDS and KINDS[kind].loads_model


def render_stats_tables(stats: dict[str, Any]) -> str:
    """A self-contained HTML page of the stats tables, for Snakemake's report."""
    return _environment().get_template("stats_tables.html.j2").render(stats=stats)


def _read_json(path: Path) -> dict[str, Any] | None:
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def data_sizes(chunks: list[str]) -> tuple[int, int]:
    """The chunk files' bytes on disk, and uncompressed (from their Parquet metadata)."""
    import pyarrow.parquet as pq

    stored = uncompressed = 0
    for chunk in chunks:
        stored += Path(chunk).stat().st_size
        meta = pq.read_metadata(chunk)
        uncompressed += sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    return stored, uncompressed


def write_card(inputs: Any, outputs: Any, repo: str | None) -> None:
    """The rule's work: figures, stats tables and the card, each written atomically.

    What the chunks were generated with comes from stats.json's provenance (from the chunk
    files' own records); the effective config from `results/.serve/config.json` (what the
    servers ran with) and the command line from `results/.invocation.json` (written in
    onstart); neither is a rule input, so a new command line does not rewrite a finished card.
    """
    from collections import Counter

    from dataforge import layout
    from dataforge.atomic import atomic_path, write_text_atomic
    from dataforge.plan import load_plan
    from dataforge.plots import write_figures
    from dataforge.stats import load_chunks, merged_tokens

    results = Path(outputs.card).parent
    plan = load_plan(inputs.plan)
    stats = _read_json(Path(inputs.stats))
    counts = merged_tokens(load_chunks(inputs.chunks), "completion_tokens").counts
    figures = {"completion": outputs.completion, "finish": outputs.finish}
    with atomic_path(figures["completion"]) as completion, atomic_path(figures["finish"]) as fin:
        write_figures(stats, counts or Counter(), {"completion": completion, "finish": fin})
    write_text_atomic(outputs.tables, render_stats_tables(stats))
    serve = _read_json(layout.SERVE_CONFIG) or {}
    card = render_card(
        stats,
        plan,
        stats["provenance"],
        sample_rows(inputs.chunks[0], plan["input"]["prompt_column"]),
        figures={k: str(Path(v).relative_to(results)) for k, v in figures.items()},
        config=serve.get("config"),
        invocation=_read_json(layout.INVOCATION),
        repo_id=repo,
        data_bytes=data_sizes(inputs.chunks),
    )
    write_text_atomic(outputs.card, card)
