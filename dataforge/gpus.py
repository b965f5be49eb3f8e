"""The GPUs of this machine and the engine slots they make, for local runs.

GPUs are those `CUDA_VISIBLE_DEVICES` names when it is set, else those `nvidia-smi -L` lists
(none: the CPU build). A slot is the GPUs of one engine (tensor x pipeline x data parallel
size of them, on one node): slot k holds GPUs [k*n, (k+1)*n). A local run starts at most one
engine per slot at a time, pinned to the slot's GPUs (`CUDA_VISIBLE_DEVICES`), and keeps it for
the groups that follow, so the model is loaded once per slot.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping

from dataforge.errors import ConfigError
from dataforge.settings import Config

NVIDIA_SMI_TIMEOUT_S = 20.0


def detect_gpus(env: Mapping[str, str] | None = None) -> list[str]:
    """The GPUs visible to this process, by the names CUDA uses for them."""
    env = os.environ if env is None else env
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        names = [d.strip() for d in visible.split(",") if d.strip()]
        # CUDA stops at the first invalid entry; "-1" or "" hides every GPU
        valid = []
        for name in names:
            if name.startswith("-"):
                break
            valid.append(name)
        return valid
    try:
        out = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:
        return []
    return [m.group(1) for m in re.finditer(r"^GPU (\d+):", out.stdout, re.MULTILINE)]


def local_slots(config: Config, gpus: list[str]) -> list[list[str]]:
    """The engine slots of a local run: each slot's GPUs (an empty list for an engine on the
    CPU, or one that uses no GPU).

    Raises:
        ConfigError: the GPUs are too few for one server, or `engine.local_servers` asks for
            more engines than they hold.
    """
    from dataforge.engines import kind_of

    per_server = config.engine.gpus
    wanted = config.engine.local_servers
    if not (kind_of(config).uses_gpus and gpus):
        return [[] for _ in range(wanted or 1)]
    if config.engine.nodes > 1:
        raise ConfigError(
            f"config: engine.nodes is {config.engine.nodes}: a server on several nodes runs "
            "on Slurm (`--profile profiles/slurm`), not on one machine"
        )
    fit = len(gpus) // per_server
    if fit == 0:
        raise ConfigError(
            f"config: a server needs {per_server} GPUs (engine tensor x pipeline x data "
            f"parallel size), this machine has {len(gpus)} ({', '.join(gpus)})"
        )
    if wanted is not None and wanted > fit:
        raise ConfigError(
            f"config: engine.local_servers is {wanted}, but {len(gpus)} GPUs hold {fit} "
            f"servers of {per_server} GPUs; two engines must not share a GPU"
        )
    count = wanted or fit
    return [gpus[k * per_server : (k + 1) * per_server] for k in range(count)]
