"""Configuration: validation against `config/schema.yaml`, defaults and cross-key checks.

Snakemake's own `validate()` reports multi-line errors that do not always name the key; this
module reports the first problem as one line (`config: sampling.temperature: ...`) and fills the
schema's defaults in place. `dataforge.settings.Config` is the typed form the package uses.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from dataforge.errors import ConfigError

DOCUMENT_MARKER = "[[DOCUMENT]]"


def load_schema(path: str | Path) -> dict[str, Any]:
    """Read the YAML JSON-Schema."""
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path)


def _describe(error: jsonschema.ValidationError) -> str:
    """One line for one schema violation, naming the key."""
    key = _key_path(error)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        where = f"{key}." if key else ""
        return (
            f"unknown key {where}{extra[0]!s} (allowed under {key or 'the top level'}: "
            f"{', '.join(allowed)})"
        )
    if error.validator == "pattern" and key == "prompt.template":
        return (
            f"prompt.template must contain {DOCUMENT_MARKER} (the prompt column) or [[name]] "
            "(an input column)"
        )
    if error.validator == "pattern" and key.startswith("rollout."):
        return f"{key} must be 'module:name' (e.g. 'my_rollouts:rollout'), got {error.instance!r}"
    if error.validator == "pattern" and key == "engine.url":
        return f"engine.url must be an http(s) base URL ending in /v1, got {error.instance!r}"
    return f"{key or 'config'}: {error.message}"


def _fill_defaults(schema: dict[str, Any], instance: dict[str, Any]) -> None:
    for name, sub in schema.get("properties", {}).items():
        if name not in instance and "default" in sub:
            default = sub["default"]
            instance[name] = dict(default) if isinstance(default, dict) else default
        if sub.get("type") == "object" and isinstance(instance.get(name), dict):
            _fill_defaults(sub, instance[name])


def _coerce_strings(schema: dict[str, Any], instance: dict[str, Any]) -> None:
    """Turn command-line strings into the schema's scalar types.

    `--config engine='{max_retries: 3}'` reaches the workflow with "3" as a string.
    """
    for name, sub in schema.get("properties", {}).items():
        value = instance.get(name)
        types = sub.get("type")
        types = [types] if isinstance(types, str) else (types or [])
        if isinstance(value, dict) and "object" in types:
            _coerce_strings(sub, value)
        elif isinstance(value, str) and "string" not in types:
            parsed = yaml.safe_load(value)
            if not isinstance(parsed, (dict, list, str)):
                instance[name] = parsed


def validate_config(config: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Validate `config` in place, fill defaults, and run the checks the schema cannot express.

    Raises:
        ConfigError: with one line naming the offending key.
    """
    if not isinstance(config, dict):
        raise ConfigError("config: the configuration must be a mapping")
    _coerce_strings(schema, config)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), e.path))
    if errors:
        raise ConfigError(f"config: {_describe(errors[0])}")
    _fill_defaults(schema, config)
    _check_cross_keys(config)
    return config


def _check_cross_keys(config: dict[str, Any]) -> None:
    from dataforge.engines import KINDS

    engine = config["engine"]
    if KINDS[engine["kind"]].attaches and not engine["url"]:
        raise ConfigError(f"config: engine.url is required when engine.kind is {engine['kind']!r}")
    if config["sampling"]["max_tokens"] >= config["model"]["max_context"]:
        raise ConfigError(
            f"config: sampling.max_tokens ({config['sampling']['max_tokens']}) must be smaller "
            f"than model.max_context ({config['model']['max_context']})"
        )


def iter_leaves(schema: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (dotted key, schema) for every leaf setting, in schema order."""
    for name, sub in schema.get("properties", {}).items():
        key = f"{prefix}{name}"
        if sub.get("type") == "object" and "properties" in sub:
            yield from iter_leaves(sub, key + ".")
        else:
            yield key, sub
