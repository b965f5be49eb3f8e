# The chunk job is a thin client of its group's server (see dataforge/driver.py): `shell:`
# with `exec` starts one lean Python process (standard library only) instead of a `script:`
# job, so a chunk costs tens of milliseconds beyond its own rows.
rule generate_chunk:
    """Generate one chunk file (and its stats sidecar) through the group's server."""
    input:
        plan=ancient(PLAN),
        service=get_service_file,
    output:
        parquet="results/data/chunk-{chunk}.parquet",
        stats="results/chunk_stats/chunk-{chunk}.json",
    log:
        "logs/generate_chunk/{chunk}.log",
    threads: 1
    resources:
        # The job only waits for its server, which does the work: count no core for it, so a
        # group needs one core whatever its number of chunks.
        _cores=0,
    params:
        spec=get_chunk_spec,
    shell:
        "exec $DATAFORGE_PYTHON -m dataforge.chunk_client --spec {params.spec:q}"
        " --service-file {input.service:q} --plan {input.plan:q}"
        " --parquet {output.parquet:q} --stats {output.stats:q} --log {log:q}"
