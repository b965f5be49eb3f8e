"""Rule plan_chunks: resolve the input and write the plan.

output: plan (results/plan.json); params: input, chunk_size, search_dirs, rollout
(rollout.function); log: one file.
"""

from pathlib import Path
from typing import TYPE_CHECKING

from dataforge.logs import run_logged

if TYPE_CHECKING:
    from snakemake.script import snakemake


def main() -> None:
    from dataforge import plan as planlib
    from dataforge.atomic import write_json_atomic

    results = Path(snakemake.output.plan).parent
    inp = snakemake.params.input
    plan = planlib.make_plan(
        **inp,
        chunk_size=snakemake.params.chunk_size,
        search_dirs=[Path(d) for d in snakemake.params.search_dirs],
        prepared_dir=results / ".prepared",
        rollout=bool(snakemake.params.rollout),
    )
    planlib.check_existing_chunks(plan, results / "data")
    write_json_atomic(snakemake.output.plan, plan)


run_logged(snakemake.log[0], main)
