"""The engine of one serve job: started on first use, watched, probed, stopped.

A managed engine (vLLM, the dummy) runs under `dataforge.guard` in a process group of its own,
pinned to its GPUs (`CUDA_VISIBLE_DEVICES`): it dies with the server that started it, however
that ends. An `endpoint` engine is a server the user runs; it is only reached. What an engine
kind can do (tokenize, report a version, check the served model) comes from its declaration in
`dataforge.engines.KINDS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from dataforge.engines import EngineSpec
from dataforge.errors import DataforgeError

log = logging.getLogger("dataforge.serve")
PROBE_ATTEMPTS = 3  # health checks, 1 s apart, before an engine counts as unreachable
PROBE_CACHE_S = 2.0  # requests failing together share one probe's answer for this long
STOP_WAIT_S = 30.0  # the guard's own grace is 15 s


class EngineFailed(DataforgeError):
    """The engine did not start, or stopped; the message ends with its log's last lines."""


class EngineProcess:
    """One engine, on `devices` (GPU names; none: the CPU, or no GPU at all): `await start()`
    once, then `alive()`, `reachable()`, `stop()`."""

    def __init__(
        self,
        spec: EngineSpec,
        log_path: str | Path,
        name: str,
        devices: list[str] | None = None,
    ) -> None:
        self.spec = spec
        self.log_path = str(log_path)
        self.name = name  # for log lines: "server 00001"
        self.devices = list(devices or [])
        if self.devices and spec.command:
            spec.env["CUDA_VISIBLE_DEVICES"] = ",".join(self.devices)
        self.guard: subprocess.Popen | None = None
        self.started_at: float | None = None  # time.time() when its process was started
        self.ready_at: float | None = None  # time.time() when it answered
        self.version: str | None = None
        self._probe: asyncio.Future | None = None
        self._probe_at = 0.0

    # -- start-up ---------------------------------------------------------------------------

    async def start(self, model: str, timeout_s: float, stop: asyncio.Event) -> None:
        """Start the engine (when dataforge manages it) and wait until it serves `model`.

        Raises:
            EngineFailed: it exited, or was not ready within `timeout_s`.
        """
        if self.spec.command:
            self._spawn()
        self.started_at = time.time()
        deadline = time.monotonic() + timeout_s
        last = "no answer yet"
        async with aiohttp.ClientSession(headers=self.spec.auth_headers) as session:
            while time.monotonic() < deadline and not stop.is_set():
                if not self.alive():
                    raise EngineFailed(
                        f"engine exited with code {self.guard.returncode} during start-up; "
                        f"{self.log_tail()}"
                    )
                try:
                    async with session.get(
                        self.spec.health_url, timeout=aiohttp.ClientTimeout(total=5)
                    ) as resp:
                        if resp.status == 200 and await self._serves(session, model):
                            break
                        last = f"HTTP {resp.status}"
                except (aiohttp.ClientError, TimeoutError) as e:
                    last = type(e).__name__
                await asyncio.sleep(0.2)
            else:
                if stop.is_set():
                    raise EngineFailed("the server was stopped during the engine's start-up")
                raise EngineFailed(
                    f"engine not ready after {timeout_s:g} s ({self.spec.health_url}: {last}); "
                    f"{self.log_tail()}"
                )
            self.version = await self._ask_version(session)
        self.ready_at = time.time()

    def _spawn(self) -> None:
        Path(self.log_path).parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        cmd = [sys.executable, "-m", "dataforge.guard", "--", *self.spec.command]
        where = f"GPUs {','.join(self.devices)}" if self.devices else "no GPU"
        log.info("%s: starting engine (%s): %s", self.name, where, " ".join(self.spec.command))
        self.guard = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **self.spec.env},
        )
        out.close()

    async def _serves(self, session: aiohttp.ClientSession, model: str) -> bool:
        """Check once that the engine serves `model` (kinds that list their models)."""
        if not self.spec.capabilities.loads_model:
            return True
        async with session.get(self.spec.base_url + "/models") as resp:
            served = [m.get("id") for m in (await resp.json()).get("data", [])]
        if model not in served:
            raise EngineFailed(f"the engine serves {served}, not model.name {model!r}")
        return True

    async def _ask_version(self, session: aiohttp.ClientSession) -> str | None:
        if not self.spec.capabilities.reports_version:
            return None
        try:
            async with session.get(
                self.spec.root_url + "/version", timeout=aiohttp.ClientTimeout(total=10)
            ) as resp:
                return (await resp.json()).get("version") if resp.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    # -- while it runs ----------------------------------------------------------------------

    def alive(self) -> bool:
        """False once a managed engine's process has exited."""
        return self.guard is None or self.guard.poll() is None

    async def watch(self) -> str:
        """Return (a message) when a managed engine exits."""
        while self.alive():
            await asyncio.sleep(0.2)
        return f"engine exited with code {self.guard.returncode}; {self.log_tail()}"

    async def reachable(self) -> bool:
        """Whether the engine answers HTTP at all (any status), after a connection error.

        An endpoint server that went away, or an engine process that lives but stopped
        listening, fails the chunk (EngineDead) instead of turning its rows into error rows.
        Requests that fail together share one check.
        """
        now = time.monotonic()
        if self._probe is None or (self._probe.done() and now - self._probe_at > PROBE_CACHE_S):
            self._probe_at = now
            self._probe = asyncio.ensure_future(self._probe_once())
        return await asyncio.shield(self._probe)

    async def _probe_once(self) -> bool:
        async with aiohttp.ClientSession(headers=self.spec.auth_headers) as session:
            for attempt in range(PROBE_ATTEMPTS):
                try:
                    async with session.get(
                        self.spec.health_url, timeout=aiohttp.ClientTimeout(total=5)
                    ):
                        return True
                except (aiohttp.ClientError, TimeoutError):
                    if attempt + 1 < PROBE_ATTEMPTS:
                        await asyncio.sleep(1.0)
        log.error("%s: the engine at %s answers no request", self.name, self.spec.base_url)
        return False

    def log_tail(self, lines: int = 12) -> str:
        """ "see <engine log>" and its last lines, to end an error message with."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 16384))
                tail = f.read().decode("utf-8", "replace").splitlines()[-lines:]
        except OSError:
            tail = []
        return f"see {self.log_path}" + "\n  | ".join(["", *tail])

    # -- stop -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Close the guard's pipe (it then stops the engine's process group) and wait."""
        if self.guard is None:
            return
        with contextlib.suppress(OSError):
            self.guard.stdin.close()  # type: ignore[union-attr]
        try:
            self.guard.wait(timeout=STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            self.guard.kill()
            self.guard.wait()
        log.info("%s: engine stopped (exit %s)", self.name, self.guard.returncode)

    def settings(self) -> dict[str, Any]:
        """What a chunk's record says of the engine that made it (stats.json sums it)."""
        return {
            "engine_id": f"{socket.gethostname()}:{os.getpid()}:{self.started_at}",
            "engine_started": self.started_at,
            "engine_ready": self.ready_at,
            "engine_version": self.version,
            "engine_managed": bool(self.spec.command),  # started by dataforge: a model load
            "devices": self.devices,
        }
