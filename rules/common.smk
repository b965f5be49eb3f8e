# Helpers only (no rules): configuration check, checkpoint readers and input functions.
# Everything here runs at parse or DAG time, so it stays offline and cheap; the logic lives in
# the dataforge package (dataforge.snakemake_compat holds every use of Snakemake internals).
import math
import os
import sys
from pathlib import Path

from dataforge import chunkfile, layout, resume
from dataforge import plan as planlib
from dataforge import snakemake_compat as compat
from dataforge import workflow as dfw
from dataforge.errors import DataforgeError
from dataforge.logs import job_log  # the body of every run: rule


def stop_with(error):
    """Stop the run with dataforge's one-line message (before any job, or at DAG time)."""
    print(f"dataforge: {error}", file=sys.stderr)
    sys.exit(1)


try:
    # `config` stays the validated dict (for lookup() in the rules); CONFIG is its typed form.
    CONFIG = dfw.check_config(config, workflow.basedir)
    if workflow.is_main_process:
        # A local input exists, is readable and has the columns the prompt needs (-n too).
        from dataforge.source import check_local_input

        check_local_input(
            CONFIG.input.dataset,
            CONFIG.input.prompt_column,
            CONFIG.prompt.template,
            bool(CONFIG.rollout.function),
            [Path.cwd(), Path(workflow.basedir)],
        )
except DataforgeError as e:
    stop_with(e)

if workflow.is_main_process:
    compat.quiet_service_file_notes()

# The interpreter running Snakemake (the workflow's venv) runs the serve jobs too.
os.environ.setdefault("DATAFORGE_PYTHON", sys.executable)

PLAN = str(layout.PLAN)
CHUNK_FILE = layout.CHUNK_PATTERN
SERVICE_FILE = layout.SERVICE_PATTERN
# GPUs and nodes of one server, from the engine config (None: not asked for).
SERVE_RESOURCES = dfw.serve_resources(CONFIG)
# What every chunk file must hold (its footer's key): a chunk that holds anything else is
# generated again (see get_chunk_inputs).
CONTENT = chunkfile.content_settings(CONFIG)
_run = {}  # this process's resume check, the monitor


def check_resume():
    """Before any job (DAG time, main process, also with -n): refuse a config that the files
    in results/ cannot continue, and find out whether plan.json must be made again
    (dataforge/resume.py). Once per process."""
    if "resume" not in _run:
        _run["resume"] = resume.PlanState()
        if workflow.is_main_process:
            try:
                _run["resume"] = resume.check_existing(CONFIG, workflow.basedir)
            except DataforgeError as e:
                stop_with(e)
    return _run["resume"]


def mark_if_stale(name, target, why):
    """The marker input that makes Snakemake redo `target` when `why` lists differences
    (written by the main process only; see dataforge/resume.py)."""
    if not why:
        if workflow.is_main_process and not workflow.dryrun:
            resume.clear_stale(name)
        return {}
    if workflow.is_main_process:
        return {"stale": resume.mark_stale(name, target, why)}
    return {"stale": str(layout.stale_marker(name))}


def get_plan_inputs(wildcards):
    """A marker when plan.json no longer describes the config's input (a key changed, the run
    directory moved): the plan is made again, and the chunks that stay valid are kept.
    """
    return mark_if_stale("plan", PLAN, check_resume().stale)


def note_unplanned():
    """-n before the first plan lists no chunk job (the plan makes them): say so once, after
    Snakemake's summary, with the command that makes the plan alone (it runs locally).
    """
    if _run.get("unplanned") or not workflow.is_main_process:
        return
    _run["unplanned"] = True
    import atexit

    atexit.register(
        print,
        f"dataforge: no plan yet, so -n lists no chunk job: `snakemake {PLAN} <your options>`"
        " reads the input and writes the plan alone (no engine starts); -n then lists every chunk",
        file=sys.stderr,
    )


def get_plan():
    """The plan written by the plan_chunks checkpoint (re-evaluates the DAG once it exists)."""
    check_resume()
    if workflow.dryrun and not Path(PLAN).exists():
        note_unplanned()
    plan = planlib.load_plan(checkpoints.plan_chunks.get().output.plan)
    try:
        dfw.check_plan_against_config(plan, CONFIG)
    except DataforgeError as e:
        stop_with(e)
    return plan


def get_chunk_files(pattern):
    """Input function factory: `pattern` expanded for every chunk of the plan."""

    def inner(wildcards):
        return expand(pattern, chunk=planlib.chunk_ids(get_plan()))

    return inner


_prepared_services = set()


def engine_slots():
    """A local run's engine slots: the GPUs of each (dataforge/gpus.py), found once, before
    any job (a machine with too few GPUs stops the run here); None for a Slurm run, where
    each group is a job with its own GPUs."""
    if "slots" not in _run:
        _run["slots"] = None
        if workflow.is_main_process and compat.local_execution(workflow):
            from dataforge.gpus import detect_gpus, local_slots

            try:
                _run["slots"] = local_slots(CONFIG, detect_gpus())
            except DataforgeError as e:
                stop_with(e)
    return _run["slots"]


def chunks_per_group(plan):
    """Chunks per group (serve job): chunks.per_server, and in a local run no more than
    spreads the chunks over every engine slot, so that no GPU idles for want of a group.
    """
    per_server = CONFIG.chunks.per_server
    slots = engine_slots()
    if not slots:
        return per_server
    return max(1, min(per_server, math.ceil(plan["chunks"] / len(slots))))


def get_service_file(wildcards, plan):
    """The chunk's server's service file, as ancient() input of the chunk job, prepared for
    that once per run by the main process (a placeholder, no metadata: see
    dataforge/snakemake_compat/). The serve config is written here only when it is missing
    (`--no-hooks`): a run refused by another run's lock builds its DAG first and must not
    change the settings of that run's servers (write_serve_config, from onstart).
    """
    group = planlib.server_of(wildcards.chunk, chunks_per_group(plan))
    path = layout.service_file(group)
    if workflow.is_main_process and path not in _prepared_services:
        if not _prepared_services and not layout.SERVE_CONFIG.exists():
            write_serve_config()
        _prepared_services.add(path)
        compat.prepare_service_file(workflow, path)
    return ancient(path)


def get_serve_cores(wildcards):
    """Cores a serve job counts: none in a local run (engine slots bound the serve jobs), one
    in a Slurm job."""
    return 0 if compat.local_execution(workflow) else 1


def get_chunk_inputs(wildcards):
    """The chunk job's inputs: its server's service file, and a marker when the chunk file
    holds other rows or settings than the plan and the config ask for (its footer says what
    it holds; Snakemake's own records may be gone), so that it is generated again.

    The plan file is read directly when it exists (the checkpoint only when it does not, so
    that Snakemake plans first): see rules/generate.smk for why chunk jobs do not depend on
    the checkpoint.
    """
    plan = planlib.load_plan(PLAN) if os.path.exists(PLAN) else get_plan()
    index = int(wildcards.chunk)
    why = resume.chunk_staleness(plan, index, CONTENT)
    name = layout.chunk_file(index).name
    return {
        "service": get_service_file(wildcards, plan),
        **mark_if_stale(name, layout.chunk_file(index), why),
    }


def write_serve_config(slots=None):
    """Write the validated config that the serve jobs read (onstart: this run holds the lock),
    with a local run's engine slots."""
    dfw.write_serve_config(layout.SERVE_CONFIG, CONFIG, workflow.basedir, slots)


def plan_engine_slots():
    """A local run: at most two serve jobs per engine slot at once (dataforge/slots.py),
    whatever --cores is (a scheduler resource), each with the threads its group needs;
    returns the slots (None for a Slurm run)."""
    slots = engine_slots()
    if slots is None:
        return None
    from dataforge.slots import SEATS  # the group generating on a slot and the next one

    compat.limit_resource(workflow.scheduler, "dataforge_slot", SEATS * len(slots))
    compat.widen_local_pool(
        workflow.scheduler, SEATS * len(slots) * (CONFIG.chunks.per_server + 2)
    )
    compat.wait_for_groups_without_polling()
    gpus = [g for slot in slots for g in slot]
    if gpus:
        print(
            f"dataforge: {len(slots)} engine slot(s) on GPUs {', '.join(gpus)}; each loads "
            "its model once",
            file=sys.stderr,
        )
    return slots


def check_slurm_site():
    """With the Slurm executor: stop before anything runs when the site needs an account or
    partition that the profile does not set, or when no node of the partition can run a
    serve job as the profile sizes it (see dataforge/slurm.py)."""
    if not compat.on_slurm(workflow):
        return
    settings = workflow.resource_settings
    # The serve job's profile resources: set-resources over default-resources.
    given = {}
    for mapping in (
        settings.default_resources or {},
        settings.overwrite_resources.get("serve_model", {}),
    ):
        given.update({k: getattr(v, "raw", v) for k, v in mapping.items()})
    try:
        from dataforge.engines import gpus_per_node
        from dataforge.slurm import check_fit, check_site, serve_request

        partitions = check_site(
            account_set="slurm_account" in given,
            partition_set="slurm_partition" in given,
        )
        if "slurm_account" not in given:  # and the site needs none (check_site)
            compat.quiet_account_guess()
        on_gpus = SERVE_RESOURCES["gpu"] or SERVE_RESOURCES["gres"]
        gpus = gpus_per_node(CONFIG) if on_gpus else 0
        request = serve_request(given, gpus, CONFIG.engine.nodes)
        check_fit(request, given.get("slurm_partition"), partitions)
    except DataforgeError as e:
        stop_with(e)


def cancel_leftover_slurm_jobs():
    """After an error or Ctrl-C with the Slurm executor: cancel group jobs still running."""
    if not compat.on_slurm(workflow):
        return
    from dataforge.slurm import cancel_leftover_jobs

    cancelled = cancel_leftover_jobs(os.getcwd())
    if cancelled:
        print(
            f"dataforge: cancelled Slurm jobs still running: {' '.join(cancelled)}",
            file=sys.stderr,
        )


def handle_interrupts():
    """Ctrl-C, SIGINT or SIGTERM: a local run stops its jobs at once (finished chunks stay);
    a Slurm run keeps Snakemake's own handling (Ctrl-C cancels the jobs), with its SIGTERM
    made safe from a deadlock (dataforge/snakemake_compat/). A job that failed with a
    `dataforge:` line gets no Snakemake error report under it."""
    compat.quiet_reported_failures()
    if compat.local_execution(workflow):

        def on_interrupt(name):
            monitor = _run.get("monitor")
            if monitor is not None:
                monitor.stop(timeout=0)
            print(
                f"dataforge: {name}: stopping the running jobs (finished chunks are kept)",
                file=sys.stderr,
                flush=True,
            )

        _run["interrupt"] = compat.StopOnInterrupt(
            workflow.scheduler, on_interrupt
        ).install()
    else:
        compat.defer_sigterm(workflow.scheduler)
        compat.report_sbatch_refusals(workflow.scheduler)


def stop_engines():
    """Before Snakemake exits: the engines of this local run are gone. The engine slots'
    servers are stopped now (they outlive each serve job, see dataforge/slots.py); a server
    that was killed leaves its guard stopping its engine on its own, which is waited for too,
    so that no engine outlives the run."""
    if not compat.local_execution(workflow):
        return  # a Slurm job's engines end with the job
    from dataforge.guard import wait_for_guards
    from dataforge.slots import stop_servers

    stop_servers()
    left = wait_for_guards(Path.cwd())
    if left:
        print(f"dataforge: engine guards still running: {left}", file=sys.stderr)


def report_interrupt():
    """After an interrupted local run: what is done, and how to finish."""
    handler = _run.get("interrupt")
    if handler is None or handler.signal_name is None:
        return
    from dataforge.status import collect

    # A chunk made with other settings is not done: the rerun generates it.
    p = collect(Path.cwd(), settings=CONTENT)
    done = (
        f"{p['chunks_done']:,} of {p['chunks']:,} chunks"
        if p["planned"]
        else "no chunk"
    )
    print(
        f"dataforge: stopped {handler.elapsed():.1f} s after {handler.signal_name}; "
        f"{done} done; run the same command again to generate the rest",
        file=sys.stderr,
    )


def exit_promptly():
    """After the run: cancel Snakemake's last scheduler timer, which would hold the process
    up to a second before it exits (see dataforge.snakemake_compat.cancel_pending_timers).
    """
    compat.cancel_pending_timers()


def check_hub_output():
    """With output.repo set: check the token can write there (creating the repo) before any
    job runs, so that a Hub problem shows now and not after the GPU work."""
    if not CONFIG.output.repo:
        return None
    from dataforge.hub import check_output_repo

    try:
        return check_output_repo(CONFIG.output.repo, CONFIG.output.private)
    except DataforgeError as e:
        stop_with(e)


def start_partial_publisher(repo_id):
    """With output.publish_every_chunks: publish finished chunks during the run, from a
    thread of this process (dataforge/hub.py)."""
    every = CONFIG.output.publish_every_chunks
    if repo_id and every:
        from dataforge.hub import PartialPublisher

        PartialPublisher(Path.cwd(), repo_id, every).start()


def finish_monitor():
    """After a successful run: the progress line says done (dataforge/monitor.py)."""
    monitor = _run.get("monitor")
    if monitor is not None:
        monitor.finish()


def start_monitor(repo_id):
    """Progress lines in the terminal and, with an output repo, a progress card on the Hub
    (dataforge/monitor.py), from a thread of this process; it reads only results/."""
    from dataforge.monitor import Monitor

    progress = CONFIG.monitor.progress
    if not (progress or repo_id):
        return
    stream = sys.stderr if progress else open(os.devnull, "w")
    _run["monitor"] = Monitor(
        Path.cwd(), repo_id, CONFIG.monitor.interval_s, stream=stream, settings=CONTENT
    ).start()


def preload_card_libraries():
    """Import what the card needs (matplotlib) in a background thread while the chunks are
    generated: the card job runs in this process (force-use-threads) at the end, when every
    second of waiting is a second of the run."""
    import threading

    from dataforge import plots

    threading.Thread(
        target=plots.preload, name="dataforge-preload", daemon=True
    ).start()


def record_invocation():
    """Write the command line of this run to results/.invocation.json (the card shows it)."""
    import time

    from dataforge.atomic import write_json_atomic

    write_json_atomic(
        layout.INVOCATION,
        {
            "argv": sys.argv,
            "cwd": workflow.rundir,  # where it was started (the working directory may differ)
            "workdir": os.getcwd(),
            "snakefile": str(workflow.main_snakefile),
            "time": time.time(),
        },
    )
