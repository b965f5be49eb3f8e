# The chunk job is a thin client of its group's server (see dataforge/driver.py): `shell:`
# with `exec` starts one lean Python process (standard library only) instead of a `script:`
# job, so a chunk costs tens of milliseconds beyond its own rows.
rule generate_chunk:
    """Generate one chunk file (and its stats sidecar) through the group's server."""
    input:
        # Not the plan: a file input from the checkpoint makes Snakemake rebuild this job
        # inside a Slurm group job and drop it (9.27.1). The spec carries the plan's fingerprint.
        service=get_service_file,
    output:
        # update(): Snakemake leaves an existing file in place (instead of deleting it before
        # the job) and restores it if the job fails. The server keeps a file that already holds
        # this exact chunk (a failed Slurm group is resubmitted whole by the profile's
        # retries) and otherwise replaces it atomically.
        parquet=update("results/data/chunk-{chunk}.parquet"),
        stats=update("results/chunk_stats/chunk-{chunk}.json"),
    log:
        "logs/generate_chunk/{chunk}.log",
    threads: 1
    resources:
        # The job only waits for its server, which does the work: count no core for it, so a
        # group needs one core whatever its number of chunks.
        _cores=0,
    params:
        spec=get_chunk_spec,
        plan=PLAN,
    shell:
        "exec $DATAFORGE_PYTHON -m dataforge.chunk_client --parent $PPID --spec {params.spec:q}"
        " --service-file {input.service:q} --plan {params.plan:q}"
        " --parquet {output.parquet:q} --stats {output.stats:q} --log {log:q}"
