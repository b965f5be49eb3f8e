"""Rule aggregate_stats: sum the per-chunk sidecars into stats.json.

input: sidecars, plan; output: stats; params: settings; log: one file.
"""

from typing import TYPE_CHECKING

from dataforge.logs import run_logged

if TYPE_CHECKING:
    from snakemake.script import snakemake


def main() -> None:
    from dataforge.atomic import write_json_atomic
    from dataforge.plan import load_plan
    from dataforge.stats import aggregate

    stats = aggregate(
        snakemake.input.sidecars, load_plan(snakemake.input.plan), snakemake.params.settings
    )
    write_json_atomic(snakemake.output.stats, stats)


run_logged(snakemake.log[0], main)
