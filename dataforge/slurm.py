"""Checks of a Slurm site before anything is submitted (run from the workflow's onstart).

A site that enforces accounts rejects every job without one, and a cluster without a default
partition rejects jobs without `-p`; the Slurm executor plugin then reports only "Error in
group …" per job. dataforge says what to set instead, before the plan or any GPU job runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

from dataforge.errors import ConfigError

PROFILE_HINT = (
    "set it under default-resources in your Slurm profile (see profiles/slurm/config.yaml)"
)


def _output(*cmd: str) -> str:
    """A Slurm command's output; empty when it cannot run or does not answer in 30 s."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def site_problem(
    *, account_set: bool, partition_set: bool, scontrol_config: str, partitions: str
) -> str | None:
    """What a submission would lack on this site, given `scontrol show config` and
    `sinfo -h -o %P` output; None when nothing is missing."""
    enforce = ""
    for line in scontrol_config.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "AccountingStorageEnforce":
            enforce = value.strip()
    if not account_set and any(
        word in enforce for word in ("associations", "limits", "safe", "qos")
    ):
        return (
            f"Slurm: this cluster requires an account (AccountingStorageEnforce = {enforce}) "
            f"and slurm_account is not set: {PROFILE_HINT}"
        )
    names = partitions.split()
    if not partition_set and names and not any(n.endswith("*") for n in names):
        return (
            "Slurm: this cluster has no default partition and slurm_partition is not set "
            f"(partitions: {', '.join(names)}): {PROFILE_HINT}"
        )
    return None


# What the executor plugin runs: without one of them it stops submitting with an exception
# in its own thread, and Snakemake then waits forever instead of failing.
SLURM_COMMANDS = ("sbatch", "squeue", "sacct", "scancel")


def check_site(*, account_set: bool, partition_set: bool) -> str:
    """Raise ConfigError when the Slurm client commands are missing, or when the site needs
    an account or partition that is not set. Where the Slurm commands do not answer, the
    plugin's own errors follow instead. Returns the partitions (`sinfo -h -o %P`) for
    `check_fit`."""
    missing = [cmd for cmd in SLURM_COMMANDS if shutil.which(cmd) is None]
    if missing:
        raise ConfigError(
            f"Slurm: {', '.join(missing)} not found on PATH: run the Slurm profile on a "
            "machine with Slurm's client commands (a login node), or run without it"
        )

    partitions = _output("sinfo", "-h", "-o", "%P")
    problem = site_problem(
        account_set=account_set,
        partition_set=partition_set,
        scontrol_config=_output("scontrol", "show", "config"),
        partitions=partitions,
    )
    if problem:
        raise ConfigError(problem)
    return partitions


def cancel_leftover_jobs(workdir: str | os.PathLike) -> list[str]:
    """Cancel this working directory's dataforge group jobs that are still queued or running
    when the run ends with an error or Ctrl-C, and return their ids.

    The Slurm executor plugin cancels the jobs it knows as active on Ctrl-C, but while a status
    check is in progress that list is empty, and the jobs would run on. Snakemake's lock on
    the working directory means no other run of it owns them.
    """
    try:
        out = subprocess.run(
            ["squeue", "-h", "--me", "-o", "%i|%Z|%k"],
            capture_output=True, text=True, timeout=60,
        ).stdout  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return []
    here = os.path.realpath(workdir)
    ids = []
    for line in out.splitlines():
        job_id, folder, comment = [*line.split("|", 2), "", ""][:3]
        if os.path.realpath(folder) == here and "serve_model" in comment:
            ids.append(job_id)
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=60)
    return ids


PROFILE_FILE = "your Slurm profile (profiles/slurm/config.yaml)"


def _minutes(limit: str) -> float | None:
    """A Slurm time limit (`infinite`, `MM`, `HH:MM:SS`, `D-HH:MM:SS`) in minutes; None: none."""
    limit = limit.strip()
    if not limit or limit.lower() in ("infinite", "unlimited", "n/a"):
        return None
    days, _, clock = limit.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if len(parts) == 1:
        hours, minutes, seconds = 0, parts[0], 0
    elif len(parts) == 2:
        hours, minutes, seconds = 0, parts[0], parts[1]
    else:
        hours, minutes, seconds = parts[-3:]
    return (int(days or 0) * 24 + hours) * 60 + minutes + seconds / 60


def _gpus(gres: str) -> int:
    """GPUs in a node's `%G` field, e.g. `gpu:2`, `gpu:a100:4(S:0-1)`, `gpu:2,shard:8`."""
    total = 0
    for item in gres.split(","):
        fields = item.split("(")[0].split(":")
        if fields[0] == "gpu" and fields[-1].isdigit():
            total += int(fields[-1])
    return total


def fit_problem(request: dict[str, Any], partition: str, nodes_text: str) -> str | None:
    """Why a serve job's `request` cannot run on `partition`, given `sinfo -h -N -p <partition>
    -o '%c|%m|%G|%l'` output (CPUs, memory MB, generic resources, time limit per node); None
    when enough nodes fit it or the output says nothing. `request` holds per node: `cpus`,
    `mem_mb`, `gpus`, and `nodes`, `runtime` (minutes) and `why` (how cpus and memory were
    computed, naming the profile keys)."""
    rows = []
    for line in nodes_text.splitlines():
        fields = line.split("|")
        if len(fields) >= 4 and fields[0].strip().isdigit():
            memory = fields[1].strip().rstrip("+")
            rows.append(
                (int(fields[0]), int(memory) if memory.isdigit() else 0, fields[2], fields[3])
            )
    if not rows:
        return None
    where = f"partition {partition}"
    key = "set-resources: serve_model:"
    cpus, mem, gpus = request["cpus"], request["mem_mb"], request["gpus"]
    most_cpus = max(r[0] for r in rows)
    if cpus > most_cpus:
        return (
            f"Slurm: a serve_model job asks {cpus} CPUs per node ({request['why']['cpus']}); "
            f"the nodes of {where} have at most {most_cpus}: lower `{key} "
            f"{request['keys']['cpus']}` in {PROFILE_FILE}"
        )
    most_mem = max(r[1] for r in rows)
    if mem and mem > most_mem:
        return (
            f"Slurm: a serve_model job asks {mem:,} MB per node ({request['why']['mem_mb']}); "
            f"the nodes of {where} have at most {most_mem:,} MB: lower `{key} "
            f"{request['keys']['mem_mb']}` in {PROFILE_FILE}"
        )
    most_gpus = max(_gpus(r[2]) for r in rows)
    if gpus > most_gpus:
        return (
            f"Slurm: a serve_model job asks {gpus} GPUs per node (engine tensor x pipeline x "
            f"data parallel size / engine.nodes); the nodes of {where} have at most "
            f"{most_gpus}: lower the parallel sizes or raise engine.nodes in the config"
        )
    fitting = [r for r in rows if r[0] >= cpus and r[1] >= mem and _gpus(r[2]) >= gpus]
    if len(fitting) < request["nodes"]:
        return (
            f"Slurm: a serve_model job asks {request['nodes']} nodes with {cpus} CPUs, "
            f"{mem:,} MB and {gpus} GPUs each; {len(fitting)} nodes of {where} have that: "
            "lower engine.nodes in the config or the per-node request in the profile"
        )
    limits = [_minutes(r[3]) for r in fitting]
    longest = None if any(m is None for m in limits) else max(limits)
    if longest is not None and request["runtime"] and request["runtime"] > longest:
        return (
            f"Slurm: a serve_model job asks a runtime of {request['runtime']:g} minutes; "
            f"{where} allows {longest:g}: lower `{key} runtime` in {PROFILE_FILE} (and "
            "chunks.per_server with it, so that a group still finishes in time)"
        )
    return None


def serve_request(resources: dict[str, Any], gpus: int, nodes: int) -> dict[str, Any]:
    """A serve job's request per node from its profile resources (`set-resources` over
    `default-resources`, raw values) and the engine's GPUs per node and nodes."""

    def number(name: str) -> float | None:
        value = resources.get(name)
        try:
            return float(value) if value is not None else None
        except (TypeError, ValueError):
            return None

    per_gpu = number("cpus_per_gpu")
    if per_gpu and gpus:
        cpus = int(per_gpu * gpus)
        why_cpus, cpu_key = f"cpus_per_gpu {per_gpu:g} x {gpus} GPUs", "cpus_per_gpu"
    else:
        cpus = int(number("cpus_per_task") or 1)
        why_cpus, cpu_key = f"cpus_per_task {cpus}", "cpus_per_task"
    per_cpu = number("mem_mb_per_cpu")
    if per_cpu:
        mem = int(per_cpu * cpus)
        why_mem, mem_key = f"mem_mb_per_cpu {per_cpu:g} x {cpus} CPUs", "mem_mb_per_cpu"
    else:
        mem = int(number("mem_mb") or 0)
        why_mem, mem_key = f"mem_mb {mem}", "mem_mb"
    return {
        "cpus": cpus,
        "mem_mb": mem,
        "gpus": gpus,
        "nodes": nodes,
        "runtime": number("runtime"),
        "why": {"cpus": why_cpus, "mem_mb": why_mem},
        "keys": {"cpus": cpu_key, "mem_mb": mem_key},
    }


def check_fit(request: dict[str, Any], partition: str | None, partitions: str) -> None:
    """Raise ConfigError when no node of the partition (the given one, else the default) can
    run a serve job (`serve_request`): sbatch would reject every group, and the plugin would
    report only "Error in group …" with empty logs. `partitions`: from `check_site`."""
    names = partitions.split()
    known = [n.rstrip("*") for n in names]
    if partition and known and partition not in known:
        raise ConfigError(
            f"Slurm: slurm_partition {partition!r} is not a partition of this cluster "
            f"(partitions: {', '.join(known)}): set another in {PROFILE_FILE}"
        )
    if not partition:
        partition = next((n.rstrip("*") for n in names if n.endswith("*")), None)
        if partition is None:
            return
    nodes = _output("sinfo", "-h", "-N", "-p", partition, "-o", "%c|%m|%G|%l")
    problem = fit_problem(request, partition, nodes)
    if problem:
        raise ConfigError(problem)
