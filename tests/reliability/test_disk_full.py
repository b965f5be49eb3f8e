"""A disk that fills up while chunks are written: the chunks that do not fit fail with the
reason, no partial chunk file remains, the chunks written before stay, and
the rerun (with room again) completes every row exactly once."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import Workflow, base_config, check_rows_exactly_once
from harness import complete_chunks, temp_files, wait_no_leftovers

pytestmark = pytest.mark.e2e

CHUNKS, SIZE = 10, 100


def mount_tmpfs(path: Path, size: str) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)


@pytest.fixture
def small_disk(workflow: Workflow):
    """results/data on a tmpfs of its own (root and mount(8) needed)."""
    data = workflow.results / "data"
    data.mkdir(parents=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a size-limited file system for results/data needs root and mount(8)")
    try:
        mount_tmpfs(data, "4k")
    except subprocess.CalledProcessError as e:
        pytest.skip(f"cannot mount a tmpfs here: {e}")
    yield data
    subprocess.run(["umount", "-l", str(data)], check=False)


def test_a_full_disk_fails_the_chunks_that_do_not_fit_and_the_rerun_completes(
    workflow: Workflow, small_disk: Path
) -> None:
    wf = workflow
    # Incompressible prompts (hex of random bytes), so that each chunk file has a known size.
    path = wf.workdir / "in.parquet"
    n = CHUNKS * SIZE
    pq.write_table(
        pa.table(
            {
                "id": [f"r{i}" for i in range(n)],
                "prompt": [secrets.token_hex(1000) for _ in range(n)],
                "extra": list(range(n)),
            }
        ),
        path,
    )
    chunk_bytes = os.path.getsize(path) // CHUNKS
    # Room for about three chunk files.
    subprocess.run(["umount", str(small_disk)], check=True)
    mount_tmpfs(small_disk, str(3 * chunk_bytes + chunk_bytes // 2))
    wf.configure(
        base_config(path, chunks={"size": SIZE, "per_server": 2}, sampling={"max_tokens": 8})
    )
    proc = wf.run(check=False, timeout=240)
    assert proc.returncode != 0, "the run fails once the disk is full"
    logs = "".join(p.read_text() for p in (wf.workdir / "logs").rglob("*.log"))
    assert "No space left on device" in logs
    written = complete_chunks(wf, SIZE)  # what is there is whole
    assert 1 <= len(written) < CHUNKS, written
    assert temp_files(wf) == [], "no partial file remains"
    assert wait_no_leftovers(wf.workdir) == []
    kept = {p.name: p.stat().st_mtime_ns for p in wf.chunks()}

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    wf.run(timeout=240)
    check_rows_exactly_once(wf, n)
    assert {p.name: p.stat().st_mtime_ns for p in wf.chunks() if p.name in kept} == kept
    assert wf.stats()["rows_failed"] == 0
