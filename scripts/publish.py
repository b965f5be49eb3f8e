"""Rule publish: upload the result to the Hub dataset repo `output.repo`.

input: chunks, stats, card; output: record; params: repo, private; log: one file.
"""

from typing import TYPE_CHECKING

from dataforge.logs import run_logged

if TYPE_CHECKING:
    from snakemake.script import snakemake


def main() -> None:
    from pathlib import Path

    from dataforge.atomic import write_json_atomic
    from dataforge.hub import check_output_repo, publish

    repo_id = check_output_repo(snakemake.params.repo, snakemake.params.private)
    n = len(snakemake.input.chunks)
    record = publish(Path.cwd(), repo_id, f"dataforge: {n} chunks")
    write_json_atomic(snakemake.output.record, record)


run_logged(snakemake.log[0], main)
