"""The validated configuration as typed, frozen objects: `Config.from_dict(config)`.

`dataforge.config.validate_config` checks a config against `config/schema.yaml` and fills its
defaults (Snakemake keeps that dict, for `lookup()` in the rules); the package works on the
`Config` made from it. A test keeps these classes and the schema's keys identical.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class InputSettings:
    dataset: str
    config: str | None
    split: str
    revision: str | None
    prompt_column: str
    max_examples: int | None


@dataclass(frozen=True)
class PromptSettings:
    system: str | None
    template: str | None
    too_long: str


@dataclass(frozen=True)
class RolloutSettings:
    function: str | None
    shared_context: str | None
    kwargs: Mapping[str, Any]


@dataclass(frozen=True)
class ModelSettings:
    name: str
    revision: str | None
    max_context: int
    trust_remote_code: bool


@dataclass(frozen=True)
class FaultSettings:
    http_500: float
    timeout: float
    reset: float
    malformed: float


@dataclass(frozen=True)
class DummySettings:
    latency_s: float
    completion_tokens: int | None
    reject_marker: str | None
    load_s: float
    tokens_per_s: float | None
    faults: FaultSettings


@dataclass(frozen=True)
class EngineSettings:
    kind: str
    python: str | None
    tensor_parallel_size: int
    pipeline_parallel_size: int
    data_parallel_size: int
    nodes: int
    gpu_memory_utilization: float
    max_num_seqs: int | None
    max_num_batched_tokens: int | None
    extra_args: tuple[str, ...]
    env: Mapping[str, str]
    url: str | None
    api_key_env: str
    max_concurrent_requests: int
    request_timeout_s: float
    max_retries: int
    startup_timeout_s: float
    local_servers: int | None
    dummy: DummySettings

    @property
    def gpus(self) -> int:
        """GPUs of one server over all its nodes: tensor x pipeline x data parallel size."""
        return self.tensor_parallel_size * self.pipeline_parallel_size * self.data_parallel_size


@dataclass(frozen=True)
class SamplingSettings:
    max_tokens: int
    temperature: float | None
    top_p: float | None
    top_k: int | None
    seed: int | None
    rollouts: int
    response_format: Mapping[str, Any] | None


@dataclass(frozen=True)
class ChunkSettings:
    size: int
    per_server: int


@dataclass(frozen=True)
class OutputSettings:
    repo: str | None
    private: bool
    publish_every_chunks: int | None


@dataclass(frozen=True)
class MonitorSettings:
    progress: bool
    interval_s: float


@dataclass(frozen=True)
class Config:
    """A validated dataforge configuration (every key of `config/schema.yaml`)."""

    input: InputSettings
    prompt: PromptSettings
    rollout: RolloutSettings
    model: ModelSettings
    engine: EngineSettings
    sampling: SamplingSettings
    chunks: ChunkSettings
    output: OutputSettings
    monitor: MonitorSettings

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> Config:
        """The typed, frozen form of a validated config dict (defaults filled)."""
        return _build(cls, config)

    def as_dict(self) -> dict[str, Any]:
        """The plain dict (JSON values), as the schema describes it."""
        return json.loads(json.dumps(_plain(self)))


def _build(cls: type, data: Mapping[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        hint, value = hints[f.name], data[f.name]
        if dataclasses.is_dataclass(hint):
            value = _build(hint, value)
        elif isinstance(value, list):
            value = tuple(value)
        elif isinstance(value, dict):
            value = _frozen(value)
        values[f.name] = value
    return cls(**values)


def _frozen(value: Any) -> Any:
    if isinstance(value, dict):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def plain(value: Any) -> Any:
    """A settings object or frozen mapping as plain dicts and lists (for JSON)."""
    return _plain(value)


def leaf_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """The dotted keys of every leaf setting (as `config.iter_leaves` lists the schema's)."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            keys += leaf_keys(hints[f.name], f"{prefix}{f.name}.")
        else:
            keys.append(f"{prefix}{f.name}")
    return keys
