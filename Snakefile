from snakemake.utils import min_version

min_version("9.27")


configfile: workflow.source_path("config/config.yaml")


# `snakemake --report report.html`: the card's figures and the stats tables (rules/aggregate.smk)
report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/plan.smk"
include: "rules/serve.smk"
include: "rules/generate.smk"
include: "rules/aggregate.smk"
include: "rules/publish.smk"


wildcard_constraints:
    chunk=r"\d{5}",
    server=r"\d{5}",


rule all:
    """The synthetic dataset: chunk files, stats.json and the dataset card."""
    default_target: True
    input:
        # The chunk files are listed here too: a deleted chunk then reruns even though the
        # files made from it (stats, card) still exist.
        get_chunk_files(CHUNK_FILE),
        "results/stats.json",
        "results/README.md",
        # Published to output.repo when one is set.
        branch(
            lookup(dpath="output/repo", within=config), then="results/.published.json"
        ),


onstart:
    handle_interrupts()
    check_slurm_site()
    write_serve_config(plan_engine_slots())
    record_invocation()
    preload_card_libraries()
    repo_id = check_hub_output()
    start_partial_publisher(repo_id)
    start_monitor(repo_id)


onsuccess:
    finish_monitor()
    stop_engines()
    exit_promptly()


onerror:
    cancel_leftover_slurm_jobs()
    stop_engines()
    report_interrupt()
    exit_promptly()
