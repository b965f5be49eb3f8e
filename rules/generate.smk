# The chunk job is a thin client of its group's server (see dataforge/driver.py): `shell:`
# with `exec` starts one lean Python process (standard library only) instead of a `script:`
# job, so a chunk costs tens of milliseconds beyond its own rows.
rule generate_chunk:
    """Generate one chunk file through the group's server."""
    input:
        # The service file, and a marker when the chunk file holds other rows or settings than
        # the config asks for. Not the plan: a file input from the checkpoint makes Snakemake
        # rebuild this job inside a Slurm group job and drop it (9.27.1).
        unpack(get_chunk_inputs),
    output:
        # update(): Snakemake leaves an existing file in place (instead of deleting it before
        # the job) and restores it if the job fails. The server keeps a file that already holds
        # this exact chunk (a failed Slurm group is resubmitted whole by the profile's
        # retries) and otherwise replaces it atomically.
        chunk=update(CHUNK_FILE),
    log:
        "logs/generate_chunk/{chunk}.log",
    threads: 1
    resources:
        # The job only waits for its server, which does the work: count no core for it, so a
        # group needs one core whatever its number of chunks.
        _cores=0,
    # No params from the config: what the chunk must hold is decided by the server from the
    # plan and the config, and recorded in the chunk file's footer. A settings change reruns
    # the chunks whose footers differ (get_chunk_inputs), whatever Snakemake remembers.
    params:
        plan=PLAN,
    shell:
        "exec $DATAFORGE_PYTHON -m dataforge.chunk_client --parent $PPID --chunk {wildcards.chunk}"
        " --service-file {input.service:q} --plan {params.plan:q} --output {output.chunk:q}"
        " --log {log:q}"
