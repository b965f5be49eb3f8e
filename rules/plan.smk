checkpoint plan_chunks:
    """Resolve the input, check the prompt column, split the rows into chunks."""
    output:
        plan=PLAN,
    log:
        "logs/plan_chunks.log",
    localrule: True
    params:
        input=lookup(dpath="input", within=config),
        chunk_size=lookup(dpath="chunks/size", within=config),
        # a rollout function reads whole rows: no prompt column needed
        rollout=lookup(dpath="rollout/function", within=config),
        search_dirs=[".", workflow.basedir],
    script:
        "../scripts/plan_chunks.py"
