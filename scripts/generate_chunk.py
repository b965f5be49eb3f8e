"""Rule generate_chunk: have the group's server generate this chunk, and wait.

input: plan, service; output: parquet, stats; params: spec; log: one file.
"""

from typing import TYPE_CHECKING

from dataforge.logs import run_logged

if TYPE_CHECKING:
    from snakemake.script import snakemake


def main() -> None:
    from dataforge.chunk_client import run_chunk

    run_chunk(
        service_file=snakemake.input.service,
        plan=snakemake.input.plan,
        spec=snakemake.params.spec,
        parquet=snakemake.output.parquet,
        stats=snakemake.output.stats,
    )


run_logged(snakemake.log[0], main)
