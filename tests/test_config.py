"""The configuration schema, its validation messages, and the README's reference table."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from dataforge.config import iter_leaves, load_schema, validate_config
from dataforge.docs import config_reference, readme_with_reference
from dataforge.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
SCHEMA = load_schema(REPO / "config" / "schema.yaml")


def defaults() -> dict:
    return validate_config({}, SCHEMA)


def test_every_leaf_has_type_description_and_default() -> None:
    leaves = list(iter_leaves(SCHEMA))
    assert len(leaves) > 30
    for key, sub in leaves:
        assert sub.get("type"), key
        assert len(sub.get("description", "")) > 10, key
        assert "default" in sub, key


def test_every_object_rejects_unknown_keys() -> None:
    def walk(node: dict, path: str) -> None:
        if node.get("type") == "object":
            # False, or a schema for free-form maps such as engine.env
            assert node.get("additionalProperties") not in (None, True), path or "top level"
            for name, sub in node.get("properties", {}).items():
                walk(sub, f"{path}.{name}".strip("."))

    walk(SCHEMA, "")


def test_defaults_fill_an_empty_config_and_match_config_yaml() -> None:
    config = defaults()
    assert config["chunks"]["size"] == 500
    assert config["engine"]["dummy"]["faults"]["http_500"] == 0
    shipped = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    validate_config(shipped, SCHEMA)  # the shipped default is valid


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"sampling": {"temprature": 1}}, "unknown key sampling.temprature"),
        ({"bogus": 1}, "unknown key bogus"),
        ({"sampling": {"temperature": "hot"}}, "sampling.temperature: 'hot' is not of type"),
        ({"chunks": {"size": 0}}, "chunks.size: 0 is less than the minimum of 1"),
        ({"prompt": {"template": "no marker"}}, "prompt.template must contain [[DOCUMENT]]"),
        ({"engine": {"kind": "endpoint"}}, "engine.url is required"),
        ({"engine": {"kind": "endpoint", "url": "http://x:1/api"}}, "must be an http(s) base URL"),
        ({"engine": {"kind": "nope"}}, "engine.kind: 'nope' is not one of"),
        ({"sampling": {"max_tokens": 5000}}, "sampling.max_tokens (5000) must be smaller"),
    ],
)
def test_errors_are_one_line_naming_the_key(patch: dict, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        validate_config(copy.deepcopy(patch), SCHEMA)
    text = str(e.value)
    assert "\n" not in text
    assert message in text


def test_command_line_strings_are_coerced() -> None:
    config = validate_config({"engine": {"max_retries": "3"}, "sampling": {"seed": "7"}}, SCHEMA)
    assert config["engine"]["max_retries"] == 3
    assert config["sampling"]["seed"] == 7
    config = validate_config({"model": {"name": "123"}}, SCHEMA)
    assert config["model"]["name"] == "123"  # strings stay strings


def test_readme_configuration_reference_is_in_sync_with_the_schema() -> None:
    readme = (REPO / "README.md").read_text()
    assert readme_with_reference(readme, config_reference(SCHEMA)) == readme, (
        "README's configuration reference is stale: run `.venv/bin/python -m dataforge.docs`"
    )
    for key, _ in iter_leaves(SCHEMA):
        assert f"`{key}`" in readme
