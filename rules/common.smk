# Helpers only (no rules): configuration check, checkpoint readers and input functions.
# Everything here runs at parse or DAG time, so it stays offline and cheap; the logic lives in
# the dataforge package.
import os
import sys
from pathlib import Path

from dataforge import plan as planlib
from dataforge import workflow as dfw
from dataforge.errors import DataforgeError

try:
    dfw.check_config(config, Path(workflow.basedir) / "config" / "schema.yaml")
except DataforgeError as e:
    sys.exit(f"dataforge: {e}")

# The interpreter running Snakemake (the workflow's venv) runs the serve jobs too.
os.environ.setdefault("DATAFORGE_PYTHON", sys.executable)

PLAN = "results/plan.json"
SERVE_CONFIG = (
    "results/.serve/config.json"  # read by the serve jobs, see rules/serve.smk
)


def get_plan():
    """The plan written by the plan_chunks checkpoint (re-evaluates the DAG once it exists)."""
    plan = planlib.load_plan(checkpoints.plan_chunks.get().output.plan)
    try:
        dfw.check_plan_against_config(plan, config)
    except DataforgeError as e:
        sys.exit(f"dataforge: {e}")
    return plan


def service_file(server):
    """The service() file through which server `server` publishes its address."""
    return f"results/.serve/server-{server}.json"


def get_chunk_files(pattern):
    """Input function factory: `pattern` expanded for every chunk of the plan."""

    def inner(wildcards):
        plan = get_plan()
        if workflow.is_main_process:
            # The chunk jobs take their server's service file as ancient() input, which keeps
            # a rerun of one chunk from rerunning its whole group; Snakemake honours ancient()
            # only for files that exist when the DAG is built, hence these empty placeholders
            # (the serve job overwrites its own). See the README's "How it works".
            dfw.ensure_placeholders(
                [service_file(s) for s in dfw.server_ids(plan, config)]
            )
            dfw.write_serve_config(SERVE_CONFIG, config)
        return expand(pattern, chunk=planlib.chunk_ids(plan))

    return inner


def get_service_file(wildcards):
    """The chunk's server's service file, as ancient() (see get_chunk_files)."""
    return ancient(service_file(dfw.server_of(wildcards.chunk, config)))


def get_chunk_spec(wildcards):
    """What the chunk contains: its rows and the generation settings (rerun triggers)."""
    return dfw.chunk_spec(get_plan(), int(wildcards.chunk), config)


def get_run_settings(wildcards):
    """Settings recorded in stats.json and the card."""
    return dfw.run_settings(config)
