# Local rules run in Snakemake's own process (`run:` with `force-use-threads`, see
# profiles/default): no new interpreter and no script preamble, about a second less per job.
checkpoint plan_chunks:
    """Resolve the input, check the prompt column, split the rows into chunks."""
    input:
        # A marker when plan.json no longer describes the config's input (dataforge/resume.py).
        unpack(get_plan_inputs),
    output:
        # update(): a plan that is refused (its input no longer matches the chunk files) leaves
        # the existing plan.json in place.
        plan=update(PLAN),
    log:
        "logs/plan_chunks.log",
    localrule: True
    params:
        input=lookup(dpath="input", within=config),
        chunk_size=lookup(dpath="chunks/size", within=config),
        # a rollout function reads whole rows: no prompt column needed
        rollout=lookup(dpath="rollout/function", within=config),
        basedir=workflow.basedir,
    run:
        from dataforge.plan import write_plan

        with job_log(log[0]):
            write_plan(
                output.plan,
                params.input,
                params.chunk_size,
                params.basedir,
                params.rollout,
            )
