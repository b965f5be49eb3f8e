# Helpers only (no rules): configuration check, checkpoint readers and input functions.
# Everything here runs at parse or DAG time, so it stays offline and cheap; the logic lives in
# the dataforge package.
import json
import os
import sys
from pathlib import Path

from snakemake.io import IOFile

from dataforge import plan as planlib
from dataforge import workflow as dfw
from dataforge.errors import DataforgeError
from dataforge.logs import job_log  # the body of every run: rule


def stop_with(error):
    """Stop the run with dataforge's one-line message (before any job, or at DAG time)."""
    print(f"dataforge: {error}", file=sys.stderr)
    sys.exit(1)


try:
    dfw.check_config(config, workflow.basedir)
except DataforgeError as e:
    stop_with(e)

# The interpreter running Snakemake (the workflow's venv) runs the serve jobs too.
os.environ.setdefault("DATAFORGE_PYTHON", sys.executable)

PLAN = "results/plan.json"
# GPUs and nodes of one server, from the engine config (None: not asked for).
SERVE_RESOURCES = dfw.serve_resources(config)
SERVE_CONFIG = (
    "results/.serve/config.json"  # read by the serve jobs, see rules/serve.smk
)


def get_plan():
    """The plan written by the plan_chunks checkpoint (re-evaluates the DAG once it exists)."""
    plan = planlib.load_plan(checkpoints.plan_chunks.get().output.plan)
    try:
        dfw.check_plan_against_config(plan, config)
    except DataforgeError as e:
        stop_with(e)
    return plan


def service_file(server):
    """The service() file through which server `server` publishes its address."""
    return f"results/.serve/server-{server}.json"


def get_chunk_files(pattern):
    """Input function factory: `pattern` expanded for every chunk of the plan."""

    def inner(wildcards):
        return expand(pattern, chunk=planlib.chunk_ids(get_plan()))

    return inner


_prepared_services = set()


def get_service_file(wildcards):
    """The chunk's server's service file, as ancient() input of the chunk job.

    ancient() keeps a rerun of one chunk from rerunning its whole group, but Snakemake honours
    it only for files that exist when the DAG is built: hence an empty placeholder (the serve
    job overwrites it). The service's metadata record is dropped so that no params or code
    change can schedule a server without chunks, which would never be stopped. Main process
    only; see the README's "How it works". The serve config is written here only when it is
    missing (`--no-hooks`): a run refused by another run's lock builds its DAG first and must
    not change the settings of that run's servers (write_serve_config, from onstart).
    """
    path = service_file(dfw.server_of(wildcards.chunk, config))
    if workflow.is_main_process and path not in _prepared_services:
        if not _prepared_services and not os.path.exists(SERVE_CONFIG):
            write_serve_config()
        _prepared_services.add(path)
        dfw.ensure_placeholders([path])
        workflow.persistence.cleanup_metadata(IOFile(path))
    return ancient(path)


def write_serve_config():
    """Write the validated config that the serve jobs read (onstart: this run holds the lock)."""
    dfw.write_serve_config(SERVE_CONFIG, config, workflow.basedir)


def get_chunk_spec(wildcards):
    """What the chunk contains, as JSON: its rows and the generation settings (a change is a
    params change, so Snakemake reruns exactly the chunks it affects).

    The plan file is read directly when it exists (the checkpoint only when it does not, so
    that Snakemake plans first): see rules/generate.smk for why chunk jobs do not depend on
    the checkpoint.
    """
    plan = planlib.load_plan(PLAN) if os.path.exists(PLAN) else get_plan()
    return json.dumps(
        dfw.chunk_spec(plan, int(wildcards.chunk), config), sort_keys=True
    )


def get_run_settings(wildcards):
    """Settings recorded in stats.json and the card."""
    return dfw.run_settings(config, workflow.basedir)


def on_slurm():
    """Whether this run submits its jobs through the Slurm executor (known from onstart on)."""
    plugin = workflow.executor_plugin
    return plugin is not None and plugin.name == "slurm"


def check_slurm_site():
    """With the Slurm executor: stop before anything runs when the site needs an account or
    partition that the profile does not set (see dataforge/slurm.py)."""
    if not on_slurm():
        return
    settings = workflow.resource_settings
    given = set(settings.default_resources or {})
    given.update(settings.overwrite_resources.get("serve_model", {}))
    try:
        from dataforge.slurm import check_site

        check_site(
            account_set="slurm_account" in given,
            partition_set="slurm_partition" in given,
        )
    except DataforgeError as e:
        stop_with(e)


def cancel_leftover_slurm_jobs():
    """After an error or Ctrl-C with the Slurm executor: cancel group jobs still running."""
    if not on_slurm():
        return
    from dataforge.slurm import cancel_leftover_jobs

    cancelled = cancel_leftover_jobs(os.getcwd())
    if cancelled:
        print(
            f"dataforge: cancelled Slurm jobs still running: {' '.join(cancelled)}",
            file=sys.stderr,
        )


def defer_sigterm():
    """SIGTERM handled without the deadlock of Snakemake's own handler (dataforge.workflow)."""
    dfw.defer_sigterm(workflow.scheduler)


def exit_promptly():
    """After the run: cancel Snakemake's last scheduler timer, which would hold the process
    up to a second before it exits (see dataforge.workflow.cancel_pending_timers)."""
    dfw.cancel_pending_timers()


def check_hub_output():
    """With output.repo set: check the token can write there (creating the repo) before any
    job runs, so that a Hub problem shows now and not after the GPU work."""
    if not config["output"]["repo"]:
        return None
    from dataforge.hub import check_output_repo

    try:
        repo_id = check_output_repo(
            config["output"]["repo"], config["output"]["private"]
        )
    except DataforgeError as e:
        stop_with(e)
    every = config["output"]["publish_every_chunks"]
    if every:
        from dataforge.hub import PartialPublisher

        PartialPublisher(Path("results"), repo_id, every).start()
    return repo_id


def start_monitor(repo_id):
    """Progress lines in the terminal and, with an output repo, a progress card on the Hub
    (dataforge/monitor.py), from a thread of this process; it reads only results/."""
    from dataforge.monitor import Monitor

    progress = config["monitor"]["progress"]
    if not (progress or repo_id):
        return
    stream = sys.stderr if progress else open(os.devnull, "w")
    Monitor(Path.cwd(), repo_id, config["monitor"]["interval_s"], stream=stream).start()


def record_invocation():
    """Write the command line of this run to results/.invocation.json (the card shows it)."""
    import time

    from dataforge.atomic import write_json_atomic

    write_json_atomic(
        "results/.invocation.json",
        {"argv": sys.argv, "cwd": os.getcwd(), "time": time.time()},
    )
