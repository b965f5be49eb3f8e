"""Every schema violation of every key stops the run before any job with one line naming the
key: checked for all of them at the level the Snakefile calls (`check_config`), and through
real `snakemake` runs for one key of each section. (Input errors: tests/test_e2e.py.)"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, Workflow, base_config, write_prompts

from dataforge.config import iter_leaves, load_schema
from dataforge.errors import DataforgeError
from dataforge.workflow import check_config

pytestmark = pytest.mark.e2e

SCHEMA = load_schema(REPO / "config" / "schema.yaml")


def violations(sub: dict[str, Any]) -> list[tuple[str, Any]]:
    """Values that break each constraint of one leaf's schema."""
    types = sub["type"] if isinstance(sub["type"], list) else [sub["type"]]
    found: list[tuple[str, Any]] = []
    found.append(("type", [1, 2] if "object" in types else {"oops": 1}))
    number = "number" in types or "integer" in types
    if number and "minimum" in sub:
        found.append(("minimum", sub["minimum"] - 1))
    if number and "exclusiveMinimum" in sub:
        found.append(("exclusiveMinimum", sub["exclusiveMinimum"]))
    if number and "maximum" in sub:
        found.append(("maximum", sub["maximum"] + 1))
    if "enum" in sub:
        found.append(("enum", "not-a-choice"))
    if "pattern" in sub:
        found.append(("pattern", "1 matches no pattern"))
    if sub.get("minLength"):
        found.append(("minLength", ""))
    extra = sub.get("additionalProperties")
    if isinstance(extra, dict) and extra.get("type") == "string":
        found.append(("additionalProperties", {"SOME_NAME": {"nested": True}}))
    return found


CASES = [
    (key, constraint, value)
    for key, sub in iter_leaves(SCHEMA)
    for constraint, value in violations(sub)
]


def with_value(key: str, value: Any) -> dict[str, Any]:
    config = copy.deepcopy(
        {"engine": {"kind": "dummy"}, "model": {"name": "dummy"}, "input": {"dataset": "x"}}
    )
    *parents, leaf = key.split(".")
    node = config
    for name in parents:
        node = node.setdefault(name, {})
    node[leaf] = value
    return config


def test_every_key_has_violations_to_check() -> None:
    keys = {key for key, _, _ in CASES}
    assert keys == {key for key, _ in iter_leaves(SCHEMA)}
    assert len(CASES) > 100


@pytest.mark.parametrize(("key", "constraint", "value"), CASES, ids=lambda v: str(v)[:30])
def test_each_violation_is_one_line_naming_the_key(key: str, constraint: str, value: Any) -> None:
    with pytest.raises(DataforgeError) as e:
        check_config(with_value(key, value), REPO)
    message = str(e.value)
    assert "\n" not in message, message
    assert key in message, (constraint, message)


# One key of each section, through the real workflow: the run stops before any job.
WORKFLOW_CASES = {
    "input.max_examples": 0,
    "prompt.too_long": "sometimes",
    "rollout.function": "no_colon",
    "model.max_context": "big",
    "engine.max_concurrent_requests": 0,
    "engine.dummy.faults.timeout": 2,
    "sampling.top_p": 0,
    "chunks.per_server": -1,
    "output.publish_every_chunks": 0,
    "monitor.interval_s": 0,
}


@pytest.mark.parametrize("key", sorted(WORKFLOW_CASES))
def test_the_workflow_stops_before_any_job(workflow: Workflow, key: str) -> None:
    config = base_config(write_prompts(workflow.workdir / "in.parquet", 20))
    *parents, leaf = key.split(".")
    node = config
    for name in parents:
        node = node.setdefault(name, {})
    node[leaf] = WORKFLOW_CASES[key]
    workflow.configure(config)
    proc = workflow.run(check=False)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("dataforge: ")]
    assert len(lines) == 1 and key in lines[0], proc.stderr[-2000:]
    assert not Path(workflow.results).exists(), "nothing was written"
