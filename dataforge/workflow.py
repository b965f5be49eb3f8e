"""Helpers behind `rules/common.smk`: the config check, the serve rule's resources and the
serve config file.

They run at parse or DAG time in every Snakemake process (the main one, `-n`, `--lint`, and
each Slurm job), so they touch no network, model or dataset. What reaches into Snakemake's
internals is in `dataforge.snakemake_compat`; what decides a rerun in `dataforge.resume`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dataforge.config import load_schema, validate_config
from dataforge.errors import ConfigError
from dataforge.settings import Config


def check_config(config: dict[str, Any], basedir: str | Path) -> Config:
    """Validate the config in place against the schema (defaults filled, as Snakemake keeps
    it), check the rollout and the engine, and return its typed form."""
    basedir = Path(basedir)
    validate_config(config, load_schema(basedir / "config" / "schema.yaml"))
    typed = Config.from_dict(config)
    if any(config["rollout"].values()):  # (dataforge.rollout imports aiohttp: not for nothing)
        from dataforge.rollout import check_rollout_config

        check_rollout_config(typed, [Path.cwd(), basedir])
    from dataforge.engines import kind_of

    if kind_of(typed).loads_model:  # vLLM: the model's heads and the parallel sizes
        check_parallelism(typed, basedir)
    return typed


def check_parallelism(config: Config, basedir: Path) -> None:
    """GPUs per node must be whole, and the model's heads divisible by the tensor parallelism
    (checked when the model is a local folder; a Hub id is not fetched at parse time)."""
    import json

    from dataforge.engines import resolve_model

    e = config.engine
    if e.gpus % e.nodes:
        raise ConfigError(
            f"config: engine.nodes ({e.nodes}) must divide tensor x pipeline x data parallel "
            f"size ({e.gpus}): each node runs the same number of GPUs"
        )
    path = Path(resolve_model(config.model.name, [Path.cwd(), basedir]))
    if not (path / "config.json").is_file():
        return
    model_config = json.loads((path / "config.json").read_text())
    heads = model_config.get("num_attention_heads") or (model_config.get("text_config") or {}).get(
        "num_attention_heads"
    )
    tp = e.tensor_parallel_size
    if heads and heads % tp:
        raise ConfigError(
            f"config: engine.tensor_parallel_size ({tp}) must divide the model's "
            f"{heads} attention heads"
        )


def check_plan_against_config(plan: dict[str, Any], config: Config) -> None:
    """Checks that need both the plan and the config (run once the plan exists)."""
    from dataforge.source import check_template

    check_template(
        plan["columns"], plan["prompt_kind"], plan["input"]["prompt_column"], config.prompt.template
    )


def serve_resources(config: Config) -> dict[str, Any]:
    """The serve rule's GPU and node resources (the Slurm executor maps them to sbatch).

    One node: `gpu` (`--gpus=N`, which the plugin also gives the job step). Several nodes:
    `gres: gpu:N` with `nodes` (`--gres` counts per node, while `--gpus` is a total that Slurm
    may spread unevenly). `endpoint` servers use no GPU; the `dummy` engine asks for what
    vLLM would, so that tests exercise the same requests. None leaves a resource unset.
    """
    from dataforge.engines import gpus_per_node, kind_of

    gpus = gpus_per_node(config) if kind_of(config).uses_gpus else 0
    multi = config.engine.nodes > 1
    return {
        "gpu": gpus if gpus and not multi else None,
        "gres": f"gpu:{gpus}" if gpus and multi else None,
        "nodes": config.engine.nodes,
    }


def write_serve_config(
    path: str | Path,
    config: Config,
    basedir: str | Path,
    slots: list[list[str]] | None = None,
) -> None:
    """Write the validated config for the serve jobs (only when it changed), with the
    workflow's folder, where the engine environment and relative model paths are found, and a
    local run's engine slots (their GPUs; None: each serve job has its own engine, as in a
    Slurm job)."""
    import json

    from dataforge.atomic import write_text_atomic

    data = {"config": config.as_dict(), "basedir": str(basedir), "slots": slots}
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    path = Path(path)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        write_text_atomic(path, text)
