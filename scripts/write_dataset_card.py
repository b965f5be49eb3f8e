"""Rule write_dataset_card: render results/README.md, its figures and the report's tables.

input: stats, plan, chunks, sidecars; output: card, completion, finish, tables;
params: settings, repo; log: one file.
"""

from typing import TYPE_CHECKING

from dataforge.logs import run_logged

if TYPE_CHECKING:
    from snakemake.script import snakemake


def main() -> None:
    from dataforge.card import write_card

    write_card(snakemake.input, snakemake.output, snakemake.params.settings, snakemake.params.repo)


run_logged(snakemake.log[0], main)
