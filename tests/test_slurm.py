"""dataforge through `--profile profiles/slurm`.

- What is submitted (no cluster needed): a stand-in `sbatch` records the command that the real
  executor plugin builds for each group, for several parallelism settings.
- A real single-node Slurm cluster (tests/slurm/start_cluster.sh: slurmctld, slurmd, slurmdbd
  and MariaDB, 8 CPUs and 2 fake GPUs advertised) with the dummy engine: one Slurm job per
  chunk group, `scancel` mid-run, an engine crash retried by the profile.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, Workflow, base_config, check_rows_exactly_once, write_prompts
from harness import processes

PROFILE = REPO / "profiles" / "slurm" / "config.yaml"


def site_profile(folder: Path, serve_runtime: int = 10, **changes: object) -> Path:
    """A copy of profiles/slurm edited the way a site would: here, for the small test node
    (1 CPU and 1 GB per GPU, 10-minute jobs) and short status polling."""
    profile = yaml.safe_load(PROFILE.read_text())
    profile["set-resources"]["serve_model"].update(
        cpus_per_gpu=1, mem_mb_per_cpu=1000, runtime=serve_runtime
    )
    profile["default-resources"]["runtime"] = 10
    profile["slurm-init-seconds-before-status-checks"] = 2
    profile["seconds-between-status-checks"] = 2
    profile["latency-wait"] = 5
    profile.update(changes)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(profile))
    return folder


# -- what is submitted (a stand-in sbatch; no cluster) -----------------------------------------

FAKE_SBATCH = """#!/bin/sh
printf '%s\\n' "$*" >> "$SBATCH_RECORD"
echo "sbatch: error: recorded by the dataforge test, not submitted" >&2
exit 1
"""
# The plugin also asks sacct (for an account), squeue and scancel: on a machine without
# Slurm these answer with nothing.
FAKE_QUIET = "#!/bin/sh\nexit 0\n"


def submitted(wf: Workflow, tmp_path: Path, engine: dict, **overrides: dict) -> list[str]:
    """The sbatch command lines the real plugin builds for a 4-chunk run (2 per server);
    `overrides` are further config sections."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in ("sbatch", "sacct", "squeue", "scancel"):
        (bin_dir / name).write_text(FAKE_SBATCH if name == "sbatch" else FAKE_QUIET)
        (bin_dir / name).chmod(0o755)
    # a site big enough for every request here: two nodes of 64 CPUs, 512 GB and 8 GPUs
    (bin_dir / "sinfo").write_text(
        "#!/bin/sh\ncase \"$*\" in *%P*) echo 'gpu*' ;;\n"
        "*) echo '64|512000|gpu:8|infinite'; echo '64|512000|gpu:8|infinite' ;; esac\n"
    )
    (bin_dir / "sinfo").chmod(0o755)
    record = tmp_path / "sbatch.txt"
    record.unlink(missing_ok=True)
    config = base_config(
        write_prompts(wf.workdir / "in.parquet", 40),
        **overrides,
        chunks={"size": 10, "per_server": 2},
        engine=engine,
    )
    wf.configure(config)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SBATCH_RECORD": str(record)}
    proc = subprocess.run(
        wf.command(
            "--profile",
            str(PROFILE.parent),
            "--retries",
            "0",
            # Snakemake leaves only after the current status-poll sleep (20 s in the profile)
            "--seconds-between-status-checks",
            "1",
            "--slurm-init-seconds-before-status-checks",
            "1",
        ),
        cwd=wf.workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0, "the stand-in sbatch refuses every job"
    assert record.exists(), proc.stderr[-3000:]
    return record.read_text().splitlines()


@pytest.mark.parametrize(
    ("engine", "expected", "absent"),
    [
        ({}, ["--gpus=1", "--cpus-per-gpu=8", "--nodes=1"], ["--gres"]),
        ({"tensor_parallel_size": 2, "pipeline_parallel_size": 2}, ["--gpus=4"], ["--gres"]),
        ({"tensor_parallel_size": 2, "data_parallel_size": 4}, ["--gpus=8"], ["--gres"]),
        (
            {"tensor_parallel_size": 8, "pipeline_parallel_size": 2, "nodes": 2},
            ["--gres=gpu:8", "--nodes=2", "--cpus-per-gpu=8"],
            ["--gpus"],
        ),
        (
            {"kind": "endpoint", "url": "http://127.0.0.1:9/v1"},
            ["--cpus-per-task=1", "--nodes=1"],
            ["--gpus", "--gres", "--cpus-per-gpu"],
        ),
    ],
    ids=["1gpu", "tp2-pp2", "tp2-dp4", "tp8-pp2-2nodes", "endpoint"],
)
def test_each_group_is_one_sbatch_with_the_engines_gpus(
    workflow: Workflow, tmp_path: Path, engine: dict, expected: list[str], absent: list[str]
) -> None:
    if shutil.which("which") is None:
        pytest.skip("the Slurm executor plugin needs the `which` command")
    lines = submitted(workflow, tmp_path, {"kind": "dummy", **engine})
    assert len(lines) == 2, lines  # 4 chunks, 2 per server: one job per group, no arrays
    for line in lines:
        flags = line.split(" --wrap=")[0].split()
        for flag in expected:
            assert flag in flags, (flag, line)
        for prefix in absent:
            assert not any(f.startswith(prefix) for f in flags), (prefix, line)
        # memory per CPU (grows with GPUs); the chunk jobs' 100 MB are not added to it
        assert "--mem-per-cpu" in flags and "--mem" not in flags, line
        assert flags[flags.index("-t") + 1] == "720"
        assert "--array" not in line
        # one job holds the server and its two chunks
        assert line.count("'generate_chunk:chunk=") == 2 and "'serve_model:server=" in line


def test_multinode_example_asks_for_two_nodes_of_eight_gpus(
    workflow: Workflow, tmp_path: Path
) -> None:
    """config/examples/multinode.yaml as submitted: its engine, model and rollout settings
    (the dummy engine in place of vLLM; the request is built from the same keys)."""
    if shutil.which("which") is None:
        pytest.skip("the Slurm executor plugin needs the `which` command")
    example = yaml.safe_load((REPO / "config" / "examples" / "multinode.yaml").read_text())
    engine = {**example["engine"], "kind": "dummy"}
    lines = submitted(
        workflow, tmp_path, engine, model=example["model"], rollout=example["rollout"]
    )
    assert len(lines) == 2, lines
    for line in lines:
        flags = line.split(" --wrap=")[0].split()
        assert {"--nodes=2", "--gres=gpu:8", "--cpus-per-gpu=8"} <= set(flags), line
        assert not any(f.startswith("--gpus") for f in flags), line


def test_dry_run_lists_the_remaining_chunks_without_slurm(
    workflow: Workflow, tmp_path: Path
) -> None:
    workflow.configure(
        base_config(write_prompts(workflow.workdir / "in.parquet", 60), chunks={"size": 10})
    )
    workflow.run()  # locally: 6 chunks
    (workflow.results / "data" / "chunk-00004.parquet").unlink()
    env_path = tmp_path / "bin"
    env_path.mkdir()
    os.symlink(shutil.which("which") or "/usr/bin/which", env_path / "which")
    # Only the venv and `which` on PATH: no Slurm command is reachable.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{env_path}"}
    counts = workflow.job_counts("--profile", str(PROFILE.parent), env=env)
    assert counts == {
        "generate_chunk": 1,
        "serve_model": 1,
        "aggregate_stats": 1,
        "write_dataset_card": 1,
        "all": 1,
    }


# -- a real cluster -----------------------------------------------------------------------------


def sacct_jobs(workdir: Path) -> list[dict[str, str]]:
    """This run directory's Slurm jobs, oldest first."""
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-S", "now-1hours", "-o", "JobID,State,AllocTRES,WorkDir"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    jobs = []
    for line in out.splitlines():
        job_id, state, tres, work = line.split("|")
        if work == str(workdir):
            jobs.append({"id": job_id, "state": state, "tres": tres})
    return jobs


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            queue = subprocess.run(
                ["squeue", "-a", "-o", "%i %T %R %b %Z"], capture_output=True, text=True
            ).stdout
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what}; squeue:\n{queue}"
            )
        time.sleep(0.2)


def slurm_run(wf: Workflow, profile: Path, *args: str) -> subprocess.Popen:
    """Start `snakemake --profile <site copy>` in the background (output in run.log)."""
    return wf.start("--profile", str(profile), *args, log=wf.workdir / "run.log")


def finish(proc: subprocess.Popen, timeout: float) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        # SIGINT, not SIGTERM: Snakemake cancels its Slurm jobs only on SIGINT.
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=200)
        raise


def engine_starts(wf: Workflow) -> dict[str, int]:
    return {
        log.stem: log.read_text().count("starting engine")
        for log in sorted((wf.workdir / "logs" / "serve_model").glob("?????.log"))
    }


def slow_groups_config(wf: Workflow, **engine: object) -> None:
    """6 chunks of 20 rows, 3 per server; each chunk's requests take `latency_s` and the
    concurrency admits one chunk at a time, so a group finishes its chunks one by one."""
    wf.configure(
        base_config(
            write_prompts(wf.workdir / "in.parquet", 120),
            chunks={"size": 20, "per_server": 3},
            engine={"max_concurrent_requests": 20, **engine},
        )
    )


@pytest.mark.slow
def test_slurm_run_is_one_gpu_job_per_group(slurm_cluster, workflow: Workflow, tmp_path) -> None:
    profile = site_profile(tmp_path / "site")
    slow_groups_config(workflow, dummy={"latency_s": 0.1})
    started = time.monotonic()
    assert finish(slurm_run(workflow, profile, "--verbose"), timeout=300) == 0, (
        workflow.workdir / "run.log"
    ).read_text()[-5000:]
    elapsed = time.monotonic() - started
    check_rows_exactly_once(workflow, 120)
    jobs = sacct_jobs(workflow.workdir)
    assert [j["state"] for j in jobs] == ["COMPLETED", "COMPLETED"], jobs
    assert all("gres/gpu=1" in j["tres"] for j in jobs), jobs
    assert engine_starts(workflow) == {"00000": 1, "00001": 1}
    calls = [
        line
        for line in (workflow.workdir / "run.log").read_text().splitlines()
        if line.startswith("sbatch call:")
    ]
    assert len(calls) == 2 and all("--gpus=1 " in c for c in calls), calls
    # the site needs no account: the plugin's failed guess of one is not shown
    log = (workflow.workdir / "run.log").read_text()
    assert "trying to guess" not in log and "invalid option" not in log
    # each job's engine ran on exactly the GPU of its allocation (CUDA_VISIBLE_DEVICES, set by
    # Slurm for the job step), and the card has the GPU figures
    engines = workflow.stats()["engines"]
    assert [len(e["devices"]) for e in engines] == [1, 1], engines
    assert sorted(e["servers"][0] for e in engines) == ["00000", "00001"]
    gpu = workflow.stats()["gpu"]
    assert gpu["model_loads"] == 2 and 0 < gpu["efficiency"] <= 1
    assert "GPU efficiency" in (workflow.results / "README.md").read_text()
    print(f"slurm run of 2 groups: {elapsed:.1f} s")


@pytest.mark.slow
def test_scancel_is_detected_and_the_rerun_finishes_only_that_group(
    slurm_cluster, workflow: Workflow, tmp_path
) -> None:
    profile = site_profile(tmp_path / "site")
    slow_groups_config(workflow, dummy={"latency_s": 6})
    data = workflow.results / "data"
    proc = slurm_run(workflow, profile, "--retries", "0", "--keep-going")
    try:
        # Cancel group 1 once it finished one chunk (the other two are still in progress).
        group1 = [data / f"chunk-0000{i}.parquet" for i in (3, 4, 5)]
        wait_for(lambda: any(p.exists() for p in group1), 120, "a chunk of group 1")
        service = json.loads((workflow.results / ".serve" / "server-00001.json").read_text())
        assert service["slurm_job_id"], service
        subprocess.run(["scancel", service["slurm_job_id"]], check=True)
        cancelled = time.monotonic()
        done_before = [p.name for p in group1 if p.exists()]
        code = finish(proc, timeout=120)
        detected = time.monotonic() - cancelled
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
    assert code != 0
    assert detected < 60, f"cancel noticed after {detected:.0f} s"
    assert len(done_before) == 1, done_before
    names = sorted(p.name for p in data.glob("chunk-*.parquet"))
    # group 0 finished; group 1's finished chunk was kept though its job was cancelled
    assert names == sorted([f"chunk-0000{i}.parquet" for i in range(3)] + done_before), names
    # Slurm stopped the group's processes (server, engine, chunk clients)
    wait_for(lambda: not processes(workdir=workflow.workdir), 20, "the group's processes to end")
    assert workflow.job_counts("--profile", str(profile)) == {
        "generate_chunk": 2,
        "serve_model": 1,
        "aggregate_stats": 1,
        "write_dataset_card": 1,
        "all": 1,
    }
    before = {j["id"] for j in sacct_jobs(workflow.workdir)}
    assert finish(slurm_run(workflow, profile), timeout=300) == 0
    new = [j for j in sacct_jobs(workflow.workdir) if j["id"] not in before]
    assert [j["state"] for j in new] == ["COMPLETED"], new
    check_rows_exactly_once(workflow, 120)


@pytest.mark.slow
def test_an_engine_crash_is_retried_by_the_profile(
    slurm_cluster, workflow: Workflow, tmp_path
) -> None:
    profile = site_profile(tmp_path / "site")
    slow_groups_config(workflow, dummy={"latency_s": 4})
    data = workflow.results / "data"
    proc = slurm_run(workflow, profile)
    try:
        group0 = [data / f"chunk-0000{i}.parquet" for i in (0, 1, 2)]
        wait_for(lambda: any(p.exists() for p in group0), 120, "a chunk of group 0")
        kept = next(p.stem.removeprefix("chunk-") for p in group0 if p.exists())
        engine_log = workflow.workdir / "logs" / "serve_model" / "00000.log"
        port = _engine_port(engine_log.read_text())
        subprocess.run(["pkill", "-KILL", "-f", f"dataforge.dummy --port {port}"], check=True)
        code = finish(proc, timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
    log = (workflow.workdir / "run.log").read_text()
    assert code == 0, log[-5000:]
    states = [j["state"] for j in sacct_jobs(workflow.workdir)]
    assert sorted(states) == ["COMPLETED", "COMPLETED", "FAILED"], states
    check_rows_exactly_once(workflow, 120)
    # The retry resubmitted group 0 whole; the chunk it had finished was kept, not redone.
    retry_log = (workflow.workdir / "logs" / "serve_model" / "00000.log").read_text()
    assert f"chunk {kept}: already complete, kept" in retry_log, retry_log
    assert retry_log.count(": 20 rows (0 failed)") == 2, retry_log


def _engine_port(serve_log: str) -> str:
    for line in serve_log.splitlines():
        if "starting engine" in line and "--port" in line:
            return line.split("--port ", 1)[1].split()[0]
    raise AssertionError(f"no engine start in the serve log:\n{serve_log}")


def test_a_site_that_needs_an_account_stops_the_run_before_anything_runs(
    workflow: Workflow, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fakes = {
        "scontrol": "echo 'AccountingStorageEnforce = associations,limits'\necho 'MinJobAge = 1'",
        "sinfo": "echo 'gpu*'",
        "sbatch": 'echo called >> "$SBATCH_RECORD"; exit 1',
        **{name: "exit 0" for name in ("sacct", "squeue", "scancel")},
    }
    for name, body in fakes.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    record = tmp_path / "sbatch.txt"
    workflow.configure(base_config(write_prompts(workflow.workdir / "in.parquet", 20)))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SBATCH_RECORD": str(record)}
    proc = workflow.run("--profile", str(PROFILE.parent), check=False, env=env)
    assert proc.returncode != 0
    assert (
        "dataforge: Slurm: this cluster requires an account (AccountingStorageEnforce = "
        "associations,limits) and slurm_account is not set" in proc.stderr
    ), proc.stderr[-3000:]
    assert not record.exists() and not (workflow.results / "plan.json").exists()


def test_site_problems_name_what_to_set() -> None:
    from dataforge.slurm import site_problem

    ok = {"scontrol_config": "AccountingStorageEnforce = none", "partitions": "debug*\ngpu"}
    assert site_problem(account_set=False, partition_set=False, **ok) is None
    no_default = {"scontrol_config": "", "partitions": "gpu\ncpu"}
    message = site_problem(account_set=True, partition_set=False, **no_default)
    assert "no default partition and slurm_partition is not set (partitions: gpu, cpu)" in message
    assert site_problem(account_set=True, partition_set=True, **no_default) is None


def test_a_serve_job_too_big_for_the_nodes_names_the_profile_key() -> None:
    from dataforge.slurm import _minutes, fit_problem, serve_request

    assert [_minutes(t) for t in ("infinite", "30", "2:00:00", "1-00:00:00", "45:30")] == [
        None, 30, 120, 1440, 45.5
    ]  # fmt: skip
    shipped = {"cpus_per_gpu": 8, "mem_mb_per_cpu": 8000, "runtime": 720, "mem_mb": 1000}
    one_gpu = serve_request(shipped, gpus=1, nodes=1)
    assert (one_gpu["cpus"], one_gpu["mem_mb"]) == (8, 64000)
    small = "8|19284|gpu:2|infinite\n"  # the test cluster's node
    assert fit_problem(one_gpu, "debug", small) == (
        "Slurm: a serve_model job asks 64,000 MB per node (mem_mb_per_cpu 8000 x 8 CPUs); the "
        "nodes of partition debug have at most 19,284 MB: lower `set-resources: serve_model: "
        "mem_mb_per_cpu` in your Slurm profile (profiles/slurm/config.yaml)"
    )
    four = serve_request(shipped, gpus=4, nodes=1)
    big = "64|512000|gpu:a100:8(S:0-1)|2-00:00:00\n32|256000|gpu:4|1:00:00\n"
    assert fit_problem(four, "gpu", big) is None
    assert "`set-resources: serve_model: cpus_per_gpu`" in fit_problem(
        serve_request(shipped, gpus=9, nodes=1), "gpu", "64|999999|gpu:16|infinite\n"
    )
    assert "asks 16 GPUs per node" in fit_problem(serve_request({}, gpus=16, nodes=1), "gpu", big)
    assert "asks 3 nodes" in fit_problem(serve_request(shipped, gpus=4, nodes=3), "gpu", big)
    late = serve_request({**shipped, "runtime": 4000}, gpus=4, nodes=1)
    assert "asks a runtime of 4000 minutes; partition gpu allows 2880" in fit_problem(
        late, "gpu", big
    )
    assert fit_problem(one_gpu, "debug", "") is None  # sinfo said nothing: Slurm decides


def test_the_shipped_profile_on_a_small_node_stops_in_one_line(
    slurm_cluster, workflow: Workflow
) -> None:
    """The test node has 8 CPUs and 19 GB: the shipped profile's 8 CPUs x 8,000 MB per GPU
    cannot run there, and sbatch would reject every group with nothing in its logs."""
    workflow.configure(base_config(write_prompts(workflow.workdir / "in.parquet", 20)))
    t0 = time.monotonic()
    proc = workflow.run("--profile", str(PROFILE.parent), check=False, timeout=60)
    assert proc.returncode != 0 and time.monotonic() - t0 < 60
    lines = [line for line in proc.stderr.splitlines() if line.startswith("dataforge: ")]
    assert len(lines) == 1 and "set-resources: serve_model: mem_mb_per_cpu" in lines[0], lines
    assert "Traceback" not in proc.stderr and not (workflow.results / "plan.json").exists()


def test_an_sbatch_refusal_reaches_the_terminal_in_one_line(
    slurm_cluster, workflow: Workflow, tmp_path: Path
) -> None:
    """What the checks before the run cannot know (here a node list that sbatch refuses, added by a
    wrapper) is shown as sbatch says it, once, instead of only "Error in group …"."""
    wrapper = tmp_path / "bin" / "sbatch"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\nexec {shutil.which("sbatch")} --nodelist=no-such-node "$@"\n')
    wrapper.chmod(0o755)
    workflow.configure(base_config(write_prompts(workflow.workdir / "in.parquet", 20)))
    env = {**os.environ, "PATH": f"{wrapper.parent}:{os.environ['PATH']}"}
    proc = workflow.run("--profile", str(site_profile(tmp_path / "site")), check=False, env=env)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.startswith("dataforge: ")]
    assert len(lines) == 1 and lines[0].startswith("dataforge: Slurm refused a serve job: "), lines
    assert "invalid node name" in lines[0].lower()
    assert "Error in group" not in proc.stderr and "Traceback" not in proc.stderr
    # and a partition the cluster does not have is named before any job
    profile = site_profile(tmp_path / "site2") / "config.yaml"
    config = yaml.safe_load(profile.read_text())
    config["set-resources"]["serve_model"]["slurm_partition"] = "nope"
    profile.write_text(yaml.safe_dump(config))
    proc = workflow.run("--profile", str(profile.parent), check=False)
    assert "dataforge: Slurm: slurm_partition 'nope' is not a partition of this cluster" in (
        proc.stderr
    )


def test_missing_slurm_commands_are_named(tmp_path: Path, monkeypatch) -> None:
    """Without Slurm's client commands the plugin would hang; dataforge names them instead."""
    from dataforge.errors import ConfigError
    from dataforge.slurm import check_site

    (tmp_path / "sbatch").write_text("#!/bin/sh\n")
    (tmp_path / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match=r"Slurm: squeue, sacct, scancel not found on PATH"):
        check_site(account_set=True, partition_set=True)


@pytest.mark.slow
def test_ctrl_c_cancels_the_slurm_jobs(slurm_cluster, workflow: Workflow, tmp_path) -> None:
    profile = site_profile(tmp_path / "site")
    slow_groups_config(workflow, dummy={"latency_s": 30})
    proc = slurm_run(workflow, profile)
    try:
        wait_for(
            lambda: (
                time.sleep(1)
                or [j["state"] for j in sacct_jobs(workflow.workdir)] == ["RUNNING"] * 2
            ),
            120,
            "both groups running",
        )
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert code != 0
    wait_for(
        lambda: all(j["state"].startswith("CANCELLED") for j in sacct_jobs(workflow.workdir)),
        30,
        "the jobs to be cancelled",
    )
    wait_for(lambda: not processes(workdir=workflow.workdir), 20, "the groups' processes to end")


@pytest.mark.slow
def test_a_group_past_its_time_limit_keeps_its_finished_chunks(
    slurm_cluster, workflow: Workflow, tmp_path
) -> None:
    """3 chunks of ~25 s each in a job limited to 1 minute: Slurm stops it (TIMEOUT) after
    about two chunks, and the profile's retry generates only the rest."""
    profile = site_profile(tmp_path / "site", serve_runtime=1)
    config = base_config(
        write_prompts(workflow.workdir / "in.parquet", 60),
        chunks={"size": 20, "per_server": 3},
        engine={"max_concurrent_requests": 20, "dummy": {"latency_s": 25}},
    )
    workflow.configure(config)
    proc = slurm_run(workflow, profile)
    assert finish(proc, timeout=400) == 0, (workflow.workdir / "run.log").read_text()[-5000:]
    states = [j["state"] for j in sacct_jobs(workflow.workdir)]
    assert states == ["TIMEOUT", "COMPLETED"], states
    check_rows_exactly_once(workflow, 60)
    retry_log = (workflow.workdir / "logs" / "serve_model" / "00000.log").read_text()
    kept = retry_log.count("already complete, kept")
    assert kept >= 1 and kept + retry_log.count("20 rows (0 failed)") == 3, retry_log


def test_leftover_group_jobs_of_the_directory_are_cancelled(slurm_cluster, tmp_path) -> None:
    """The onerror safety net: after Ctrl-C or an error, dataforge cancels this directory's
    group jobs that the plugin missed, and nothing else."""
    from dataforge.slurm import cancel_leftover_jobs

    def submit(comment: str) -> str:
        return subprocess.run(
            ["sbatch", "--parsable", "-D", str(tmp_path), "--comment", comment, "-o", "/dev/null",
             "--wrap", "sleep 120"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip

    ours = submit("rule_abc_generate_chunk_serve_model")
    other = submit("rule_something_else")
    try:
        assert cancel_leftover_jobs(tmp_path) == [ours]

        def state(job: str) -> str:
            return subprocess.run(
                ["sacct", "-X", "-n", "-P", "-j", job, "-o", "State"],
                capture_output=True, text=True,
            ).stdout.strip()  # fmt: skip

        wait_for(lambda: state(ours).startswith("CANCELLED"), 30, "the group job to be cancelled")
        assert not state(other).startswith("CANCELLED")
    finally:
        subprocess.run(["scancel", ours, other], capture_output=True)
