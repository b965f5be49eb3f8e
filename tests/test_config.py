"""The configuration schema, its validation messages, and the README's reference table."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from dataforge import multinode
from dataforge.config import iter_leaves, load_schema, validate_config
from dataforge.docs import (
    NOTHING,
    REGENERATES,
    config_reference,
    generated_readme,
    readme_with_reference,
    rerun_effects,
    rerun_table,
)
from dataforge.engines import effective_sampling, vllm_spec
from dataforge.errors import ConfigError
from dataforge.settings import Config, leaf_keys
from dataforge.workflow import check_config, serve_resources

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
    validate_config(copy.deepcopy(shipped), SCHEMA)  # the shipped default is valid
    # one truth: every value config/config.yaml sets is the schema's default (what the README
    # documents is what a run gets)
    differ = []

    def walk(given: dict, default: dict, path: str) -> None:
        for name, value in given.items():
            key = f"{path}{name}"
            if isinstance(value, dict) and isinstance(default[name], dict) and value:
                walk(value, default[name], key + ".")
            elif value != default[name]:
                differ.append(f"{key}: config.yaml {value!r}, schema {default[name]!r}")

    walk(shipped, config, "")
    assert differ == []


def test_the_typed_config_has_exactly_the_schemas_keys() -> None:
    assert leaf_keys() == [key for key, _ in iter_leaves(SCHEMA)]
    typed = Config.from_dict(defaults())
    assert typed.as_dict() == defaults()
    assert typed.engine.gpus == 1 and typed.sampling.seed == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        typed.chunks.size = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        typed.engine.env["X"] = "1"  # type: ignore[index]


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


def test_readme_rerun_table_follows_the_content_settings() -> None:
    readme = (REPO / "README.md").read_text()
    table = rerun_table(SCHEMA)
    assert generated_readme(readme, SCHEMA) == readme, (
        "README's rerun table is stale: run `.venv/bin/python -m dataforge.docs`"
    )
    effects = rerun_effects(SCHEMA)
    assert set(effects) == {key for key, _ in iter_leaves(SCHEMA)}  # every key, once
    assert all(table.count(f"`{key}`") == 1 for key in effects)
    # derived from what a chunk's footer records (dataforge.chunkfile.content_settings)
    for key in ("sampling.temperature", "model.name", "prompt.template", "engine.kind",
                "rollout.kwargs", "engine.dummy.completion_tokens"):  # fmt: skip
        assert effects[key] == REGENERATES, key
    assert effects["input.prompt_column"].endswith(REGENERATES)
    how = ("chunks.per_server", "engine.max_concurrent_requests", "engine.request_timeout_s",
           "engine.max_retries", "monitor.interval_s", "engine.tensor_parallel_size")  # fmt: skip
    for key in how:
        assert effects[key] == NOTHING, key


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
    assert serve_resources(config) == {"gpu": None, "gres": "gpu:4", "nodes": 2}
    one_node = check_config({"engine": {"kind": "dummy", "tensor_parallel_size": 2}}, REPO)
    assert serve_resources(one_node) == {"gpu": 2, "gres": None, "nodes": 1}
    endpoint = {"kind": "endpoint", "url": "http://h:1/v1"}
    assert serve_resources(check_config({"engine": endpoint}, REPO))["gpu"] is None


def test_unset_sampling_falls_back_to_the_models_generation_config(tmp_path: Path) -> None:
    model = fake_model(tmp_path / "m", heads=2, generation={"temperature": 0.6, "top_p": 0.95})
    config = check_config({"model": {"name": str(model)}, "sampling": {"temperature": 0.2}}, REPO)
    used = effective_sampling(config, REPO)
    assert used["temperature"] == 0.2  # configured wins
    assert used["top_p"] == 0.95  # from the model
    assert used["top_k"] is None  # neither: the server's default
    assert config.sampling.top_p is None  # the config itself is untouched


def test_vllm_command_for_parallel_and_multi_node_servers(tmp_path: Path, monkeypatch) -> None:
    model = fake_model(tmp_path / "m", heads=16, generation={})
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.touch()

    def command(**engine: object) -> list[str]:
        config = check_config(
            {"model": {"name": str(model)}, "engine": {"python": str(python), **engine}}, REPO
        )
        return vllm_spec(config, REPO).command

    one = command(tensor_parallel_size=2, pipeline_parallel_size=2)
    assert one[:3] == [str(python), "-m", "vllm.entrypoints.openai.api_server"]
    assert " --tensor-parallel-size 2 --pipeline-parallel-size 2 " in " ".join(one)
    assert "--distributed-executor-backend" not in one

    two = command(tensor_parallel_size=8, pipeline_parallel_size=2, data_parallel_size=2, nodes=2)
    launcher, engine = two[: two.index("--")], two[two.index("--") + 1 :]
    assert launcher[1:] == ["-m", "dataforge.multinode", "--nodes", "2", "--gpus-per-node", "16",
                            "--ray", str(python.parent / "ray")]  # fmt: skip
    joined = " ".join(engine)
    assert engine[0] == str(python)
    assert "--distributed-executor-backend ray" in joined
    assert "--data-parallel-backend ray" in joined

    # the Ray workers go to the job's other nodes, inside the same Slurm job
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    workers = multinode.workers_command("ray", "10.0.0.1", 6379, nodes=4, gpus=8)
    assert workers[:6] == ["srun", "--jobid=42", "--overlap", "--nodes=3", "--ntasks=3",
                           "--ntasks-per-node=1"]  # fmt: skip
    assert workers[-3:] == ["--block", "--address=10.0.0.1:6379", "--num-gpus=8"]
    monkeypatch.delenv("SLURM_JOB_ID")
    with pytest.raises(SystemExit):
        multinode.main(["--nodes", "2", "--gpus-per-node", "8", "--ray", "ray", "--", "vllm"])
