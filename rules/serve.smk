# A service: Snakemake runs it together with the chunk jobs that take its file as input (one
# Slurm job per group with the Slurm executor) and stops it with SIGTERM when they are all done.
# - `exec`, so that SIGTERM reaches the server itself and not a forked shell.
# - `--parent $PPID`: the Snakemake process, read by the shell as soon as it starts; the server
#   stops when that process is gone (dataforge/driver.py, watch_parent).
# - No params: a params change would schedule the service again without any consumer, and a
#   service nobody consumes is never stopped (the run hangs). The server reads the engine
#   settings from results/.serve/config.json, which the main process writes from the validated
#   config; they do not change what a chunk contains.
rule serve_model:
    """Start the engine for one group of chunks and generate them as they ask."""
    output:
        # update(): Snakemake keeps the existing file (the placeholder) instead of deleting
        # it before the job, so the chunk jobs start at once instead of polling for it.
        service=service(update(SERVICE_FILE)),
    log:
        main="logs/serve_model/{server}.log",
        engine="logs/serve_model/{server}.engine.log",
    threads: 1
    resources:
        # From the engine config; CPUs, memory and runtime come from the Slurm profile.
        gpu=SERVE_RESOURCES["gpu"],
        gres=SERVE_RESOURCES["gres"],
        nodes=SERVE_RESOURCES["nodes"],
        # A local run allows as many serve jobs at once as its GPUs make engine slots
        # (onstart sets the limit: plan_engine_slots), whatever --cores is: a serve job
        # counts no core there (its engine is on the GPUs), one in a Slurm job.
        dataforge_slot=1,
        _cores=get_serve_cores,
    shell:
        "exec $DATAFORGE_PYTHON -m dataforge.serve_job --parent $PPID --server {wildcards.server}"
        " --service-file {output.service:q} --log {log.main:q} --engine-log {log.engine:q}"
