"""The dataset card (`README.md` of the result), rendered from `templates/dataset_card.md.j2`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import yaml

TEMPLATE_DIR = Path(__file__).parent / "templates"


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
    """The first `n` rows of a chunk file, shortened for display."""
    import pyarrow.parquet as pq

    table = pq.read_table(parquet, columns=[prompt_column, "generations", "error"]).slice(0, n)

    def short(value: Any, limit: int = 300) -> str:
        text = str(value)
        return text if len(text) <= limit else text[:limit] + " …"

    out = []
    for r in table.to_pylist():
        gens = r["generations"] or []
        out.append(
            {
                "prompt": short(r[prompt_column]),
                "completion": short(gens[0]["text"]) if gens else "",
                "error": r["error"],
            }
        )
    return out


def render_card(
    stats: dict[str, Any], plan: dict[str, Any], settings: dict[str, Any], samples: list[dict]
) -> str:
    """The card's Markdown with YAML front matter."""
    front = {
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": plan["input"]["split"], "path": "data/*.parquet"}],
            }
        ],
        "tags": ["synthetic", "dataforge"],
        "task_categories": ["text-generation"],
        "size_categories": [size_category(stats["rows"])],
    }
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    return env.get_template("dataset_card.md.j2").render(
        front_matter=yaml.safe_dump(front, sort_keys=False).strip(),
        stats=stats,
        plan=plan,
        settings=settings,
        samples=samples,
    )
