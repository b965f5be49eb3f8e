# Both rules run in Snakemake's own process, like plan_chunks (see rules/plan.smk).
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
    run:
        from dataforge.stats import write_stats

        with job_log(log[0]):
            write_stats(input.sidecars, input.plan, params.settings, output.stats)


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
    run:
        from dataforge.card import write_card

        with job_log(log[0]):
            write_card(input, output, params.settings, params.repo)
