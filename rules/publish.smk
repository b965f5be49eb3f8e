rule publish:
    """Upload the chunk files, stats.json and the card to output.repo on the Hub."""
    input:
        chunks=get_chunk_files(CHUNK_FILE),
        stats="results/stats.json",
        card="results/README.md",
        figures=[
            "results/plots/completion_tokens.png",
            "results/plots/finish_reasons.png",
        ],
    output:
        record="results/.published.json",
    log:
        "logs/publish.log",
    localrule: True
    params:
        repo=lookup(dpath="output/repo", within=config),
        private=lookup(dpath="output/private", within=config),
    script:
        "../scripts/publish.py"
