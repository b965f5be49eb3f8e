"""How each `engine.kind` is started and reached.

An engine is described by the command that starts it (None when dataforge attaches to a
server it does not own) and the base URL its OpenAI-compatible API is served under.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from dataclasses import dataclass, field
from typing import Any

from dataforge.errors import ConfigError


@dataclass
class EngineSpec:
    """What the serve job needs to run and reach an engine."""

    kind: str
    base_url: str  # ends in /v1
    health_url: str
    command: list[str] | None = None  # None: attach to an existing server
    env: dict[str, str] = field(default_factory=dict)
    api_key: str | None = None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on `host`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def engine_spec(config: dict[str, Any]) -> EngineSpec:
    """The engine for a validated config."""
    engine = config["engine"]
    kind = engine["kind"]
    if kind == "endpoint":
        url = engine["url"].rstrip("/")
        return EngineSpec(
            kind=kind,
            base_url=url,
            health_url=url + "/models",
            api_key=os.environ.get(engine["api_key_env"]) or None,
        )
    if kind == "dummy":
        port = free_port()
        dummy = engine["dummy"]
        command = [
            sys.executable,
            "-m",
            "dataforge.dummy",
            "--port",
            str(port),
            "--latency-s",
            str(dummy["latency_s"]),
            "--faults",
            json.dumps(dummy["faults"]),
        ]
        if dummy["completion_tokens"]:
            command += ["--completion-tokens", str(dummy["completion_tokens"])]
        if dummy["reject_marker"]:
            command += ["--reject-marker", dummy["reject_marker"]]
        base = f"http://127.0.0.1:{port}"
        return EngineSpec(kind, base + "/v1", base + "/health", command)
    raise ConfigError(
        "config: engine.kind 'vllm' is not available yet in this version; use 'dummy' or "
        "'endpoint' (with engine.url)"
    )
