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
    """Render the dataset card results/README.md, its figures, and the stats tables of
    Snakemake's report."""
    input:
        stats="results/stats.json",
        plan=PLAN,
        chunks=get_chunk_files("results/data/chunk-{chunk}.parquet"),
        sidecars=get_chunk_files("results/chunk_stats/chunk-{chunk}.json"),
    output:
        card="results/README.md",
        completion=report(
            "results/plots/completion_tokens.png",
            caption="../report/completion_tokens.rst",
            category="Dataset card",
        ),
        finish=report(
            "results/plots/finish_reasons.png",
            caption="../report/finish_reasons.rst",
            category="Dataset card",
        ),
        tables=report(
            "results/plots/stats.html",
            caption="../report/stats_tables.rst",
            category="Run statistics",
        ),
    log:
        "logs/write_dataset_card.log",
    localrule: True
    params:
        settings=get_run_settings,
        repo=lookup(dpath="output/repo", within=config),
    script:
        "../scripts/write_dataset_card.py"
