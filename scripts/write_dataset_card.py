"""Rule write_dataset_card: render results/README.md.

input: stats, plan, chunks; output: card; params: settings; log: one file.
"""

import json
from typing import TYPE_CHECKING

from dataforge.logs import run_logged

if TYPE_CHECKING:
    from snakemake.script import snakemake


def main() -> None:
    from dataforge.atomic import write_text_atomic
    from dataforge.card import render_card, sample_rows
    from dataforge.plan import load_plan

    plan = load_plan(snakemake.input.plan)
    with open(snakemake.input.stats, encoding="utf-8") as f:
        stats = json.load(f)
    samples = sample_rows(snakemake.input.chunks[0], plan["input"]["prompt_column"])
    card = render_card(stats, plan, snakemake.params.settings, samples)
    write_text_atomic(snakemake.output.card, card)


run_logged(snakemake.log[0], main)
