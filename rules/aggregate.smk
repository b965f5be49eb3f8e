# Both rules run in Snakemake's own process, like plan_chunks (see rules/plan.smk). They read
# what each chunk file's footer records (its settings, how it was made, its statistics), so
# stats.json and the card describe the chunks as they are.
rule aggregate_stats:
    """Sum the chunk files' statistics into stats.json."""
    input:
        chunks=get_chunk_files(CHUNK_FILE),
        plan=PLAN,
    output:
        stats="results/stats.json",
    log:
        "logs/aggregate_stats.log",
    localrule: True
    run:
        from dataforge.stats import write_stats

        with job_log(log[0]):
            write_stats(input.chunks, input.plan, output.stats)


rule write_dataset_card:
    """Render the dataset card results/README.md, its figures, and the stats tables of
    Snakemake's report."""
    input:
        stats="results/stats.json",
        plan=PLAN,
        chunks=get_chunk_files(CHUNK_FILE),
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
        repo=lookup(dpath="output/repo", within=config),
    run:
        from dataforge.card import write_card

        with job_log(log[0]):
            write_card(input, output, params.repo)
