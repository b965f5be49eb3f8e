"""What the benchmark scripts share: running and measuring a command, the peers' environments,
the OpenAI-compatible loopback server, and writing results."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RESULTS = REPO / "bench" / "results"

# datatrove as the baseline, in its own environment (its pins are not ours); the
# inference extra would pull vLLM and SGLang, so only what InferenceRunner imports is installed
DATATROVE = "datatrove[io]==0.10.1"
DATATROVE_EXTRAS = ["aiofiles", "httpx", "aiosqlite", "pyyaml", "pandas"]
DATATROVE_VENV = REPO / "bench" / ".venv-datatrove"


def datatrove_python() -> Path:
    """The datatrove environment's Python, built on first use (about 30 s from PyPI)."""
    python = DATATROVE_VENV / "bin" / "python"
    stamp = DATATROVE_VENV / ".installed"
    if not stamp.exists() or stamp.read_text() != DATATROVE:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(DATATROVE_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", DATATROVE, *DATATROVE_EXTRAS],
            check=True,
        )
        stamp.write_text(DATATROVE)
    return python


def datatrove_command(inputs: Path, out: Path, url: str, *flags: str) -> list[str]:
    """bench/peers/datatrove_run.py in datatrove's environment, reading the Parquet files in
    `inputs`, writing under `out`, against the OpenAI-compatible server at `url` (…/v1)."""
    script = REPO / "bench" / "peers" / "datatrove_run.py"
    return [str(datatrove_python()), str(script), str(inputs), str(out),
            url.removesuffix("/v1"), *flags]  # fmt: skip


@contextlib.contextmanager
def loopback_server(latency_s: float = 0.0) -> Iterator[str]:
    """bench/loopback.py on a free port of 127.0.0.1 for the block; yields its base URL
    (without /v1)."""
    from dataforge.engines import free_port

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, str(REPO / "bench" / "loopback.py"), str(port), str(latency_s)],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_http(f"{base}/v1/models")
        yield base
    finally:
        server.terminate()
        server.wait()


def measure(cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> dict:
    """Run `cmd` to its end; its wall time, the CPU time of its process tree and the largest
    peak RSS of any process in it. Measured from a fresh child Python: ru_maxrss of children is
    a running maximum, so an earlier, larger process of this run would show in a later one."""
    out = subprocess.run(
        [sys.executable, __file__, "__measure__", json.dumps([list(map(str, cmd)),
                                                              str(cwd or ""), env])],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout)


def _adopt_orphans() -> None:
    """Make this process the reaper of its descendants' orphans (Linux PR_SET_CHILD_SUBREAPER),
    so that a process the run detaches (a local run's engine slot servers) counts in the CPU
    time and peak memory measured, as a child of this process."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)


def _reap_orphans(timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.05)


def _measure(cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> dict:
    _adopt_orphans()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.run(
            cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err, timeout=1800
        )
        if proc.returncode:
            err.seek(0)
            raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{err.read()[-3000:]}")
    wall = time.perf_counter() - t0
    _reap_orphans()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": after.ru_maxrss / 1024}


def _same_memory(pid: int, other: int) -> bool:
    """Whether two processes share one address space (kcmp KCMP_VM, x86-64 Linux): a child
    between vfork and exec, which subprocess uses to start every job, reports its parent's
    whole memory as its own."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    return libc.syscall(312, pid, other, 1, 0, 0) == 0  # SYS_kcmp, KCMP_VM


def _run_processes(root: str) -> dict[int, tuple[int, float, str]]:
    """The processes whose working directory is inside `root`: pid -> (parent pid, PSS in MB,
    command line). PSS, not RSS: a process just forked shares all its parent's pages until it
    execs, and RSS would count them twice; a vfork child (one address space with its parent)
    is left out for the same reason."""
    found: dict[int, tuple[int, float, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            if not (cwd == root or cwd.startswith(root + "/")):
                continue
            rollup = (entry / "smaps_rollup").read_text()
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            what = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
        except (OSError, IndexError, ValueError):
            continue
        pss = next((ln for ln in rollup.splitlines() if ln.startswith("Pss:")), None)
        if pss is not None:
            found[int(entry.name)] = (parent, int(pss.split()[1]) / 1024, what)
    return {pid: p for pid, p in found.items() if not (p[0] in found and _same_memory(pid, p[0]))}


def run_sampling_memory(
    cmd: list[str], workdir: Path, every_s: float = 0.1, env: dict[str, str] | None = None
) -> dict:
    """Run `cmd` in `workdir` and sample, every `every_s`, the summed memory (proportional set
    size) and the number of the processes whose working directory is inside `workdir`
    (Snakemake, servers, engines, chunk jobs: every process of the run); return their peaks
    and the wall time."""
    root = str(workdir.resolve())
    peak_mb = peak_n = 0.0
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    peak_top: list[tuple[float, str]] = []
    while proc.poll() is None:
        found = _run_processes(root)
        total = sum(pss for _, pss, _ in found.values())
        if total > peak_mb:  # which processes made the peak
            peak_top = sorted(((round(pss), what) for _, pss, what in found.values()), reverse=True)
            peak_top = peak_top[:5]
        peak_mb, peak_n = max(peak_mb, total), max(peak_n, len(found))
        time.sleep(every_s)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr.read().decode()[-3000:]}")
    return {
        "wall_s": time.perf_counter() - t0,
        "peak_sum_rss_mb": peak_mb,
        "peak_processes": peak_n,
        "peak_largest": peak_top,  # (MB, command line) of the five largest at the peak
    }


def snakemake_command(configfile: str, *extra: str) -> list[str]:
    """A dataforge run on 2 cores with `configfile` in the current directory (`extra`: targets,
    options)."""
    return [
        sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "2",
        *extra, "--configfile", configfile, "--quiet",
    ]  # fmt: skip


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def write_prompt_parquet(path: Path, rows: int, row_group: int = 10_000) -> Path:
    """`rows` short prompts with an id column, the input every client benchmark shares."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(path, pa.schema([("id", pa.string()), ("prompt", pa.string())])) as w:
        for start in range(0, rows, row_group):
            ids = range(start, min(rows, start + row_group))
            w.write_table(
                pa.table(
                    {
                        "id": [f"r{i}" for i in ids],
                        "prompt": [f"question {i} about things" for i in ids],
                    }
                )
            )
    return path


def write_results(name: str, data: dict, out: Path | None) -> Path:
    """Write `data` with the date and machine to `out` (default bench/results/<name>.json)."""
    out = out or RESULTS / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    stamp = {"date": time.strftime("%Y-%m-%d"), "machine": machine()}
    out.write_text(json.dumps({**stamp, **data}, indent=2) + "\n")
    shown = out.relative_to(REPO) if out.is_relative_to(REPO) else out
    print(f"wrote {shown}")
    return out


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """A plain-text table: columns are (key, header, format); the first is left-aligned."""
    grid = [[h for _, h, _ in columns]]
    for r in rows:
        grid.append([format(r[k], f) if r.get(k) is not None else "-" for k, _, f in columns])
    widths = [max(len(line[i]) for line in grid) for i in range(len(columns))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in grid
    )


if __name__ == "__main__" and sys.argv[1:2] == ["__measure__"]:
    cmd, cwd, env = json.loads(sys.argv[2])
    print(json.dumps(_measure(cmd, cwd=Path(cwd) if cwd else None, env=env)))
