"""Checks of a Slurm site before anything is submitted (run from the workflow's onstart).

A site that enforces accounts rejects every job without one, and a cluster without a default
partition rejects jobs without `-p`; the Slurm executor plugin then reports only "Error in
group …" per job. dataforge says what to set instead, before the plan or any GPU job runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from dataforge.errors import ConfigError

PROFILE_HINT = (
    "set it under default-resources in your Slurm profile (see profiles/slurm/config.yaml)"
)


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


def check_site(*, account_set: bool, partition_set: bool) -> None:
    """Raise ConfigError when the Slurm client commands are missing, or when the site needs
    an account or partition that is not set. Where the Slurm commands do not answer, the
    plugin's own errors follow instead."""
    missing = [cmd for cmd in SLURM_COMMANDS if shutil.which(cmd) is None]
    if missing:
        raise ConfigError(
            f"Slurm: {', '.join(missing)} not found on PATH: run the Slurm profile on a "
            "machine with Slurm's client commands (a login node), or run without it"
        )

    def run(*cmd: str) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            return ""

    problem = site_problem(
        account_set=account_set,
        partition_set=partition_set,
        scontrol_config=run("scontrol", "show", "config"),
        partitions=run("sinfo", "-h", "-o", "%P"),
    )
    if problem:
        raise ConfigError(problem)


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
