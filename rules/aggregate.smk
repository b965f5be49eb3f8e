rule aggregate_stats:
    """Sum the per-chunk statistics into stats.json."""
    input:
        sidecars=get_chunk_files("results/chunk_stats/chunk-{chunk}.json"),
        plan=PLAN,
    output:
        stats="results/stats.json",
    log:
        "logs/aggregate_stats.log",
    localrule: True
    params:
        settings=get_run_settings,
    script:
        "../scripts/aggregate_stats.py"


rule write_dataset_card:
    """Render the dataset card results/README.md."""
    input:
        stats="results/stats.json",
        plan=PLAN,
        chunks=get_chunk_files("results/data/chunk-{chunk}.parquet"),
    output:
        card="results/README.md",
    log:
        "logs/write_dataset_card.log",
    localrule: True
    params:
        settings=get_run_settings,
    script:
        "../scripts/write_dataset_card.py"
