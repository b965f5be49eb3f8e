"""The chunk job: ask the group's serve process to generate one chunk, and wait for it.

Standard library only, so the job starts in a few tens of milliseconds. The service file may
still be Snakemake's empty placeholder, or a leftover of a killed run, when the job starts; the
client waits until it names a live serve process of this run that answers `/health` with the
token from the file, then asks for its chunk. The server decides what the chunk must hold (from
the plan and the config) and starts its engine if the chunk needs generating. The client fails
fast when the server dies, and when the engine fails.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import socket
import time
import urllib.parse
from pathlib import Path
from typing import Any

from dataforge.errors import ChunkJobError

log = logging.getLogger("dataforge.chunk")
FILE_TIMEOUT_S = 600.0  # how long to wait for the serve job to publish its address


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_service(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text(encoding="utf-8")
        info = json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and "url" in info else None


def _open(url: str, method: str, path: str, body: bytes = b"", timeout: float | None = None):
    """Send an HTTP/1.0 request; return (status, file positioned at the body).

    HTTP/1.0 keeps the server from using chunked encoding: the body is the raw stream up to
    the end of the connection. A raw socket instead of `http.client` saves ~20 ms of imports
    in a job that does little else.
    """
    parts = urllib.parse.urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
    head = (
        f"{method} {path} HTTP/1.0\r\nHost: {parts.hostname}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    stream = sock.makefile("rb")
    sock.close()  # the file keeps the connection open
    status_line = stream.readline().split()
    if len(status_line) < 2:
        raise ConnectionError("empty response")
    while stream.readline() not in (b"\r\n", b"\n", b""):
        pass
    return int(status_line[1]), stream


def _get_json(url: str, timeout: float) -> dict[str, Any]:
    _, stream = _open(url, "GET", "/health", timeout=timeout)
    with stream:
        return json.loads(stream.read())


def wait_for_server(
    service_file: str | Path, file_timeout_s: float = FILE_TIMEOUT_S, parent: int | None = None
) -> str:
    """Wait until the serve process of this run accepts chunks; return its URL.

    The serve job writes its address within a second or two of starting (its engine starts
    later, when a chunk needs it). The wait ends when `parent`, the Snakemake process that
    started the job, is gone.

    Raises:
        ChunkJobError: if the server dies, fails, or does not appear in time.
    """
    service_file = Path(service_file)
    deadline = time.monotonic() + file_timeout_s
    last = "the service file is still empty"
    parent = os.getppid() if parent is None else parent
    while time.monotonic() < deadline:
        if os.getppid() != parent:
            raise ChunkJobError(f"the Snakemake process {parent} that started this job is gone")
        info = _read_service(service_file)
        if info is not None:
            same_host = info.get("host") == socket.gethostname()
            ours = info.get("ppid") == os.getppid()  # started by the same Snakemake process
            if same_host and not _pid_alive(info["pid"]):
                if ours:
                    raise ChunkJobError(
                        f"serve process {info['pid']} died; see logs/serve_model/"
                        f"{info.get('server')}.log"
                    )
                last = "the service file is a leftover of an earlier run"
            else:
                try:
                    health = _get_json(info["url"] + "/health", timeout=5)
                except (OSError, ValueError) as e:
                    last = f"{info['url']} not answering ({type(e).__name__})"
                else:
                    if health.get("token") != info.get("token"):
                        last = "a different server answers at that address"
                    elif health["state"] == "ready":
                        return info["url"]
                    elif health["state"] == "failed":
                        raise ChunkJobError(f"server failed: {health.get('error')}")
                    else:
                        last = "server still starting"
        time.sleep(0.05)
    raise ChunkJobError(f"server not ready in time: {last}")


def request_chunk(url: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST the chunk request and follow its progress lines until the result line."""
    try:
        status, stream = _open(url, "POST", "/chunk", json.dumps(body).encode())
        with stream:
            if status != 200:
                raise ChunkJobError(f"server answered HTTP {status}: {stream.read(300)!r}")
            last_log = time.monotonic()
            for line in stream:
                msg = json.loads(line)
                if "ok" in msg:
                    return msg
                if time.monotonic() - last_log > 10:
                    log.info("progress: %d/%d rows", msg["done"], msg["rows"])
                    last_log = time.monotonic()
    except (OSError, ValueError) as e:
        raise ChunkJobError(f"lost the server: {type(e).__name__}: {e}") from None
    raise ChunkJobError("the server closed the connection before the chunk finished")


def run_chunk(
    *, service_file: str, plan: str, chunk: str, output: str, parent: int | None = None
) -> dict[str, Any]:
    """Have the group's server make chunk `chunk`'s file `output`; returns its result line.

    Raises:
        ChunkJobError: with the reason the chunk failed.
    """
    url = wait_for_server(service_file, parent=parent)
    body = {"chunk": chunk, "plan": os.path.abspath(plan), "output": os.path.abspath(output)}
    result = request_chunk(url, body)
    if not result["ok"]:
        raise ChunkJobError(result["error"])
    return result


def main(argv: list[str] | None = None) -> None:
    """Entry point of the chunk job (rule generate_chunk)."""
    import argparse

    from dataforge.logs import run_logged

    parser = argparse.ArgumentParser(description="Generate one chunk through its server.")
    parser.add_argument(
        "--parent", type=int, help="PID of the Snakemake process (the shell's $PPID)"
    )
    parser.add_argument("--chunk", required=True, help="the chunk's 5-digit id")
    parser.add_argument("--service-file", required=True)
    parser.add_argument("--plan", required=True)
    parser.add_argument("--output", required=True, help="the chunk file")
    parser.add_argument("--log", required=True)
    args = parser.parse_args(argv)

    def run() -> None:
        result = run_chunk(
            service_file=args.service_file,
            plan=args.plan,
            chunk=args.chunk,
            output=args.output,
            parent=args.parent,
        )
        usage = resource.getrusage(resource.RUSAGE_SELF)
        log.info(
            "done: %d rows (%d failed); this job used %.3f s CPU",
            result["rows"],
            result["rows_failed"],
            usage.ru_utime + usage.ru_stime,
        )

    run_logged(args.log, run)


if __name__ == "__main__":
    main()
