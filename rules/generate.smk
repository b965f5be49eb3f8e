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
    script:
        "../scripts/generate_chunk.py"
