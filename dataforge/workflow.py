"""Helpers behind `rules/common.smk`: small, pure and unit-tested.

They run at parse or DAG time in every Snakemake process (the main one, `-n`, `--lint`, and
each Slurm job), so they touch no network, model or dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dataforge import plan as planlib
from dataforge.config import generation_settings, load_schema, validate_config
from dataforge.errors import ConfigError


def check_config(config: dict[str, Any], schema_path: str | Path) -> dict[str, Any]:
    """Validate the config in place against the schema (defaults filled)."""
    validate_config(config, load_schema(schema_path))
    if config["engine"]["kind"] == "vllm":
        raise ConfigError(
            "config: engine.kind 'vllm' is not available in this version yet; use 'dummy', or "
            "'endpoint' with engine.url pointing at a running vLLM server"
        )
    return config


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


def run_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The settings recorded in stats.json and the dataset card (no secrets)."""
    return {
        **generation_settings(config),
        "engine_kind": config["engine"]["kind"],
        "max_context": config["model"]["max_context"],
        "per_server": config["chunks"]["per_server"],
    }


def write_serve_config(path: str | Path, config: dict[str, Any]) -> None:
    """Write the validated config for the serve jobs (only when it changed)."""
    import json

    from dataforge.atomic import write_text_atomic

    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    path = Path(path)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        write_text_atomic(path, text)
