"""The configuration schema, its validation messages, and the README's reference table."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from dataforge.config import iter_leaves, load_schema, validate_config
from dataforge.docs import config_reference, readme_with_reference
from dataforge.engines import effective_sampling
from dataforge.errors import ConfigError
from dataforge.workflow import check_config, serve_gpus

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


def fake_model(folder: Path, heads: int, generation: dict) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"num_attention_heads": heads}))
    (folder / "generation_config.json").write_text(json.dumps(generation))
    return folder


def test_parallelism_is_checked_against_nodes_and_the_model(tmp_path: Path) -> None:
    model = fake_model(tmp_path / "m", heads=6, generation={})
    base = {"model": {"name": str(model)}, "engine": {"kind": "vllm"}}
    check_config(
        copy.deepcopy(base) | {"engine": {"kind": "vllm", "tensor_parallel_size": 3}}, REPO
    )
    with pytest.raises(ConfigError, match=r"tensor_parallel_size \(4\) must divide the model's 6"):
        check_config(copy.deepcopy(base) | {"engine": {"tensor_parallel_size": 4}}, REPO)
    with pytest.raises(ConfigError, match=r"engine\.nodes \(2\) must divide"):
        check_config(
            copy.deepcopy(base) | {"engine": {"tensor_parallel_size": 3, "nodes": 2}}, REPO
        )
    config = check_config(
        copy.deepcopy(base)
        | {"engine": {"tensor_parallel_size": 2, "data_parallel_size": 4, "nodes": 2}},
        REPO,
    )
    assert serve_gpus(config) == 4
    assert serve_gpus(check_config({"engine": {"kind": "dummy"}}, REPO)) == 0


def test_unset_sampling_falls_back_to_the_models_generation_config(tmp_path: Path) -> None:
    model = fake_model(tmp_path / "m", heads=2, generation={"temperature": 0.6, "top_p": 0.95})
    config = check_config({"model": {"name": str(model)}, "sampling": {"temperature": 0.2}}, REPO)
    used = effective_sampling(config, REPO)
    assert used["temperature"] == 0.2  # configured wins
    assert used["top_p"] == 0.95  # from the model
    assert used["top_k"] is None  # neither: the server's default
    assert config["sampling"]["top_p"] is None  # the config itself is untouched
