"""Helpers behind `rules/common.smk`: small, pure and unit-tested.

They run at parse or DAG time in every Snakemake process (the main one, `-n`, `--lint`, and
each Slurm job), so they touch no network, model or dataset.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from dataforge import plan as planlib
from dataforge.config import generation_settings, load_schema, validate_config
from dataforge.errors import ConfigError


def check_config(config: dict[str, Any], basedir: str | Path) -> dict[str, Any]:
    """Validate the config in place against the schema (defaults filled), then the engine."""
    basedir = Path(basedir)
    validate_config(config, load_schema(basedir / "config" / "schema.yaml"))
    if any(config["rollout"].values()):  # (dataforge.rollout imports aiohttp: not for nothing)
        from dataforge.rollout import check_rollout_config

        check_rollout_config(config, [Path.cwd(), basedir])
    if config["engine"]["kind"] == "vllm":
        check_parallelism(config, basedir)
    return config


def check_parallelism(config: dict[str, Any], basedir: Path) -> None:
    """GPUs per node must be whole, and the model's heads divisible by the tensor parallelism
    (checked when the model is a local folder; a Hub id is not fetched at parse time)."""
    import json

    from dataforge.engines import resolve_model, server_gpus

    e = config["engine"]
    total = server_gpus(config)
    if total % e["nodes"]:
        raise ConfigError(
            f"config: engine.nodes ({e['nodes']}) must divide tensor x pipeline x data parallel "
            f"size ({total}): each node runs the same number of GPUs"
        )
    path = Path(resolve_model(config["model"]["name"], [Path.cwd(), basedir]))
    if not (path / "config.json").is_file():
        return
    model_config = json.loads((path / "config.json").read_text())
    heads = model_config.get("num_attention_heads") or (model_config.get("text_config") or {}).get(
        "num_attention_heads"
    )
    tp = e["tensor_parallel_size"]
    if heads and heads % tp:
        raise ConfigError(
            f"config: engine.tensor_parallel_size ({tp}) must divide the model's "
            f"{heads} attention heads"
        )


def check_plan_against_config(plan: dict[str, Any], config: dict[str, Any]) -> None:
    """Checks that need both the plan and the config (run once the plan exists)."""
    if plan["prompt_kind"] == "messages" and config["prompt"]["template"]:
        raise ConfigError(
            "config: prompt.template cannot be used with message-list prompts (column "
            f"{plan['input']['prompt_column']!r} holds chat messages)"
        )


def server_of(chunk: str | int, config: dict[str, Any]) -> str:
    """Server id of a chunk."""
    return planlib.server_of(chunk, config["chunks"]["per_server"])


def server_ids(plan: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """Ids of all server groups of the plan."""
    return planlib.server_ids(plan, config["chunks"]["per_server"])


def ensure_placeholders(paths: list[str]) -> None:
    """Create empty files for those of `paths` that do not exist."""
    for p in map(Path, paths):
        if not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            p.touch()


def chunk_spec(plan: dict[str, Any], index: int, config: dict[str, Any]) -> dict[str, Any]:
    """Everything that decides a chunk's content; a change makes Snakemake rerun the chunk."""
    start, end = planlib.chunk_range(plan, index)
    return {
        "chunk": planlib.chunk_name(index),
        "start": start,
        "end": end,
        "plan": plan["fingerprint"],
        "generation": generation_settings(config),
    }


def run_settings(config: dict[str, Any], basedir: str | Path) -> dict[str, Any]:
    """The settings recorded in stats.json and the dataset card (no secrets), with the sampling
    values the engine actually uses (`sampling`) beside the configured ones."""
    from dataforge.engines import effective_sampling, resolve_model

    e = config["engine"]
    name = config["model"]["name"]
    try:
        local = resolve_model(name, [Path.cwd(), Path(basedir)]) != name
    except ConfigError:
        local = True
    return {
        **generation_settings(config),
        "model_source": "local" if local else "hub",
        "sampling_configured": dict(config["sampling"]),
        "sampling": effective_sampling(config, Path(basedir)),
        "engine_kind": e["kind"],
        "max_context": config["model"]["max_context"],
        "per_server": config["chunks"]["per_server"],
    }


def serve_resources(config: dict[str, Any]) -> dict[str, Any]:
    """The serve rule's GPU and node resources (the Slurm executor maps them to sbatch).

    One node: `gpu` (`--gpus=N`, which the plugin also gives the job step). Several nodes:
    `gres: gpu:N` with `nodes` (`--gres` counts per node, while `--gpus` is a total that Slurm
    may spread unevenly). `endpoint` servers use no GPU; the `dummy` engine asks for what
    vLLM would, so that tests exercise the same requests. None leaves a resource unset.
    """
    from dataforge.engines import gpus_per_node

    e = config["engine"]
    gpus = gpus_per_node(config) if e["kind"] != "endpoint" else 0
    multi = e["nodes"] > 1
    return {
        "gpu": gpus if gpus and not multi else None,
        "gres": f"gpu:{gpus}" if gpus and multi else None,
        "nodes": e["nodes"],
    }


def write_serve_config(path: str | Path, config: dict[str, Any], basedir: str | Path) -> None:
    """Write the validated config for the serve jobs (only when it changed), with the
    workflow's folder, where the engine environment and relative model paths are found."""
    import json

    from dataforge.atomic import write_text_atomic

    data = {"config": config, "basedir": str(basedir)}
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    path = Path(path)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        write_text_atomic(path, text)


def cancel_pending_timers() -> int:
    """Cancel the `threading.Timer`s still waiting in this process (the run is over); return
    how many there were.

    Snakemake's job scheduler arms a Timer in every scheduling round that had jobs ready, so
    that its job rate limit (`max-jobs-per-timespan`, 100 per second by default) gets
    re-evaluated a timespan later; the last round, for rule `all`, arms one too. A Timer is not
    a daemon thread: the interpreter waits for it before it exits, which added up to a second
    to every run. Called from the onsuccess and onerror handlers, once the scheduler has
    returned and there is nothing left to re-evaluate. dataforge itself starts no Timer.
    """
    timers = [t for t in threading.enumerate() if isinstance(t, threading.Timer)]
    for timer in timers:
        timer.cancel()
    return len(timers)


def defer_sigterm(scheduler: Any) -> bool:
    """Make Snakemake's SIGTERM handling safe from deadlock; return whether it was needed.

    Snakemake 9.27's scheduler handles SIGTERM ("finish the running jobs, then stop") with a
    method that takes its `threading.Lock`. Python runs signal handlers in the main thread,
    which holds that same lock while it selects and finishes jobs: a SIGTERM arriving then
    (`kill PID`, a job scheduler stopping the run) blocked the run for good. The handler is
    replaced by one that runs Snakemake's own method in a new thread, which waits for the lock
    instead of the main thread. Called from onstart, once the scheduler exists.
    """
    import signal

    handler = getattr(scheduler, "exit_gracefully", None)
    if handler is None or signal.getsignal(signal.SIGTERM) != handler:
        return False

    def deferred(signum: int, frame: object) -> None:
        threading.Thread(target=handler, name="dataforge-sigterm", daemon=True).start()

    signal.signal(signal.SIGTERM, deferred)
    return True
