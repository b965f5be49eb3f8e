"""The serve job's process: a small HTTP service that generates the chunks of its group.

The serve job binds a socket on 127.0.0.1 and writes its address into its Snakemake `service()`
file at once; each chunk job of the group is a thin client that asks this process for its chunk
and waits. So the heavy state (engine, HTTP connection pool, input file handles) is set up once
per group, all chunks of a group share one concurrency limit and are in flight together (the
engine stays fed across chunk boundaries), and a chunk job costs little more than starting
Python.

The engine starts when the first chunk that needs generating arrives: a chunk whose file
already holds what the config asks for (its footer key, `dataforge.chunkfile`) is kept as it is
and needs no engine, so a group that has nothing to generate loads no model.

Endpoints: `GET /health` (state and identity token), `POST /chunk` (`{"chunk", "plan",
"output"}`; the response streams NDJSON progress lines and ends with a result line).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import resource
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from dataforge import chunkfile
from dataforge import plan as planlib
from dataforge.chunkstats import chunk_stats
from dataforge.client import EngineClient, EngineDead
from dataforge.engine_process import EngineFailed, EngineProcess
from dataforge.engines import (
    EngineSpec,
    effective_sampling,
    engine_settings,
    engine_spec,
    kind_of,
    model_source,
)
from dataforge.errors import DataforgeError
from dataforge.fitting import PromptFitter
from dataforge.generation import generate_rows
from dataforge.gpus import detect_gpus
from dataforge.guard import pid_alive
from dataforge.output import build_chunk_table
from dataforge.reader import RowReader
from dataforge.rollout import Rollouts
from dataforge.settings import Config

log = logging.getLogger("dataforge.serve")
PROGRESS_EVERY_S = 2.0
PARENT_CHECK_S = 0.5  # how often the server checks that the Snakemake process that runs it lives


class ChunkFailed(Exception):
    """The chunk could not be generated; the message is reported to the chunk job."""


class Driver:
    """State of one serve job: the engine (started on first need), client, readers."""

    def __init__(
        self,
        config: Config,
        server_id: str,
        sock: socket.socket,
        token: str,
        engine_log: str,
        basedir: Path,
        parent: int | None = None,
        devices: list[str] | None = None,
    ) -> None:
        self.config = config
        # The engine's GPUs: a local run's slot's; None: this machine's visible ones (a Slurm
        # job's allocation).
        self.devices = devices
        self.basedir = basedir
        self.server_id = server_id
        self.name = f"server {server_id}"
        self.sock = sock
        self.engine_log = engine_log
        self.token = token
        self.settings = chunkfile.content_settings(config)
        self.state = "starting"  # -> "ready" (accepting chunks) or "failed"
        self.error: str | None = None
        self.stop = asyncio.Event()
        self.spec: EngineSpec | None = None
        self.engine: EngineProcess | None = None
        self._engine_start: asyncio.Task | None = None
        # Chunks generated at once: enough to keep the engine fed across a chunk's tail, and
        # a bound on memory whatever chunks.per_server is (each waits its turn).
        c = config.engine.max_concurrent_requests
        self.admit = asyncio.Semaphore(max(2, math.ceil(2 * c / config.chunks.size)))
        self._watcher: asyncio.Task | None = None
        self.client: EngineClient | None = None
        self.fitter: PromptFitter | None = None
        self.rollouts: Rollouts | None = None  # rollout.function, its shared context
        self.readers: dict[str, RowReader] = {}
        self.read_lock = threading.Lock()
        self.chunks_done = 0
        self.started = time.time()
        # The Snakemake process that started this job (read first thing by serve_job).
        self.parent = os.getppid() if parent is None else parent

    # -- lifecycle -----------------------------------------------------------------------------

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT or engine failure; return the exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self.stop.set)
        app = web.Application(client_max_size=16 << 20)
        app.router.add_get("/health", self.handle_health)
        app.router.add_post("/chunk", self.handle_chunk)
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=2.0
        )
        await runner.setup()
        await web.SockSite(runner, self.sock).start()
        host, port = self.sock.getsockname()
        log.info("%s: service on %s:%d (pid %d)", self.name, host, port, os.getpid())
        orphan_watch = asyncio.create_task(self.watch_parent())
        code = 0
        try:
            if self.config.rollout.function:  # imported before any chunk arrives
                self.rollouts = Rollouts(self.config, [Path.cwd(), self.basedir])
            self.spec = engine_spec(self.config, self.basedir)
            self.state = "ready"
            await self.stop.wait()
            if self.state == "failed":
                code = 1
                # Give chunk jobs a moment to read the failure before the port closes.
                await asyncio.sleep(1.0)
        except DataforgeError as e:
            self.fail(str(e))
            code = 1
        finally:
            orphan_watch.cancel()
            for task in (self._engine_start, self._watcher):
                if task is not None:
                    task.cancel()
            usage = resource.getrusage(resource.RUSAGE_SELF)
            log.info(
                "%s: stopping after %d chunks (%.1f s, %.2f s CPU, peak RSS %.0f MB)",
                self.name,
                self.chunks_done,
                time.time() - self.started,
                usage.ru_utime + usage.ru_stime,
                usage.ru_maxrss / 1024,
            )
            if self.rollouts is not None:  # e.g. a process pool from the shared context
                try:
                    await self.rollouts.aclose()
                except Exception:
                    log.exception("%s: closing rollout.shared_context", self.name)
            if self.client is not None:
                await self.client.__aexit__(None, None, None)
            await runner.cleanup()
            if self.engine is not None:
                await asyncio.to_thread(self.engine.stop)
        return code

    def fail(self, message: str) -> None:
        """The server cannot generate anything more: report it and stop."""
        if self.state != "failed":
            log.error("%s: %s", self.name, message)
        self.state = "failed"
        self.error = message
        self.stop.set()

    async def ensure_engine(self) -> None:
        """Start the engine on first need; every chunk awaits the same start.

        Raises:
            ChunkFailed: the engine could not start (the server then stops).
        """
        if self._engine_start is None:
            self._engine_start = asyncio.create_task(self._start_engine())
        await asyncio.shield(self._engine_start)
        if self.state == "failed":
            raise ChunkFailed(f"{self.name} failed: {self.error}")

    async def _start_engine(self) -> None:
        assert self.spec is not None
        e = self.config.engine
        try:
            self.engine = await self._engine_process()
            await self.engine.start(self.settings["model"], e.startup_timeout_s, self.stop)
        except EngineFailed as err:
            self.fail(str(err))
            return
        self.client = EngineClient(
            self.engine.spec.base_url,
            max_concurrent=e.max_concurrent_requests,
            timeout_s=e.request_timeout_s,
            max_retries=e.max_retries,
            api_key=self.engine.spec.api_key,
            alive=self.engine.alive,
            probe=self.engine.reachable,
        )
        await self.client.__aenter__()
        if self.engine.spec.capabilities.tokenizes:
            self.fitter = PromptFitter(
                self.client, self.engine.spec.root_url, self.settings["max_context"]
            )
        self._watcher = asyncio.create_task(self._watch_engine())
        log.info("%s: engine ready after %.1f s", self.name, time.time() - self.started)

    async def _engine_process(self) -> EngineProcess:
        """This server's engine, on its GPUs (`CUDA_VISIBLE_DEVICES`)."""
        assert self.spec is not None
        devices = self.devices
        if devices is None:
            devices = detect_gpus() if kind_of(self.config).uses_gpus else []
        return EngineProcess(self.spec, self.engine_log, self.name, devices)

    async def _watch_engine(self) -> None:
        assert self.engine is not None
        self.fail(await self.engine.watch())

    async def watch_parent(self) -> None:
        """Stop when the Snakemake process of the run is gone (kill -9 of that process alone,
        the OOM killer): no one would ever send the server its SIGTERM, and the engine would
        hold its GPUs for good. Chunks in flight are redone by the rerun. (A serve job's parent
        is that process; a slot server's is the serve job that started it, which ends first.)"""
        while pid_alive(self.parent):
            await asyncio.sleep(PARENT_CHECK_S)
        log.error(
            "%s: the Snakemake process %d that started it is gone; stopping",
            self.name,
            self.parent,
        )
        self.stop.set()

    # -- HTTP handlers -------------------------------------------------------------------------

    async def handle_health(self, _: web.Request) -> web.Response:
        return web.json_response(
            {"token": self.token, "state": self.state, "error": self.error, "pid": os.getpid()}
        )

    async def handle_chunk(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        chunk = body["chunk"]
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        progress = {"done": 0, "rows": 0}

        async def report() -> None:
            while True:
                await asyncio.sleep(PROGRESS_EVERY_S)
                await response.write(json.dumps(progress).encode() + b"\n")

        reporter = asyncio.create_task(report())
        try:
            result = {"ok": True, **await self.generate_chunk(body, progress)}
        except EngineDead as e:
            tail = self.engine.log_tail() if self.engine else ""
            result = {"ok": False, "error": f"{e}; {tail}"}
            log.error("chunk %s failed: %s", chunk, result["error"])
        except (ChunkFailed, DataforgeError) as e:
            result = {"ok": False, "error": str(e)}
            log.error("chunk %s failed: %s", chunk, e)
        except asyncio.CancelledError:
            log.warning("chunk %s: the chunk job went away; cancelled", chunk)
            raise
        except Exception as e:
            log.exception("chunk %s: unexpected error", chunk)
            result = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        finally:
            reporter.cancel()
        await response.write(json.dumps(result).encode() + b"\n")
        await response.write_eof()
        return response

    # -- generation ----------------------------------------------------------------------------

    def read_rows(self, plan: dict[str, Any], start: int, end: int) -> Any:
        """Rows [start, end) of the plan's input (runs in a worker thread).

        One reader per input, opened once per server; reads are serialised because pyarrow's
        ParquetFile is not safe to iterate from several threads at once (seen to crash).
        """
        with self.read_lock:
            key = plan["fingerprint"]
            if key not in self.readers:
                reader = RowReader(plan["source"], Path.cwd(), self.basedir)
                reader.check_unchanged()
                self.readers[key] = reader
            return self.readers[key].read(start, end)

    def run_record(self) -> dict[str, Any]:
        """How this server makes its chunks (the `run` part of each chunk's record)."""
        assert self.engine is not None
        return {
            "server": self.server_id,
            "server_started": self.started,
            **self.engine.settings(),
            "engine": engine_settings(self.config),
            "gpus": len(self.engine.devices),
            "host": socket.gethostname(),
            "per_server": self.config.chunks.per_server,
            "model_source": model_source(self.config, self.basedir),
            "sampling_used": effective_sampling(self.config, self.basedir),
        }

    async def generate_chunk(self, body: dict[str, Any], progress: dict[str, int]) -> dict:
        """Generate one chunk and write its file atomically, unless it is complete already."""
        if self.state != "ready":
            raise ChunkFailed(f"{self.name} failed: {self.error}")
        plan = planlib.load_plan(body["plan"])
        index, output = int(body["chunk"]), body["output"]
        if index >= plan["chunks"]:
            raise ChunkFailed(f"chunk {body['chunk']} is not in {body['plan']} any more")
        want = chunkfile.expected_key(plan, index, self.settings)
        have = await asyncio.to_thread(chunkfile.read_key_or_none, output)
        if have is not None and have.digest == want.digest:
            # e.g. a chunk that a failed Slurm job finished before the profile's retry
            # resubmitted its whole group: it stays as it is, and no engine is needed for it.
            log.info("chunk %s: already complete, kept", body["chunk"])
            stats = chunkfile.read_record(output).stats
            return {k: stats[k] for k in ("rows", "rows_failed", "seconds")}
        await self.ensure_engine()
        async with self.admit:
            return await self._generate(body, plan, want, progress)

    async def _generate(
        self, body: dict[str, Any], plan: dict[str, Any], want: Any, progress: dict[str, int]
    ) -> dict:
        output = body["output"]
        started = time.time()
        rows = await asyncio.to_thread(self.read_rows, plan, want.start, want.end)
        progress["rows"] = rows.num_rows
        out = await generate_rows(
            rows,
            want.start,
            plan["input"]["prompt_column"],
            plan["prompt_kind"],
            self.settings,
            self.client,
            fitter=self.fitter,
            rollouts=self.rollouts,
            root_url=self.engine.spec.root_url,
            progress=progress,
        )
        if not self.engine.alive():
            raise EngineDead(f"engine exited during chunk {body['chunk']}")
        stats = chunk_stats(out, started, time.time())
        record = chunkfile.ChunkRecord(want, self.run_record(), stats)
        table = build_chunk_table(rows, want.start, out)
        await asyncio.to_thread(chunkfile.write_chunk, table, record, output)
        self.chunks_done += 1
        log.info(
            "chunk %s: %d rows (%d failed) in %.2f s",
            body["chunk"],
            stats["rows"],
            stats["rows_failed"],
            stats["seconds"],
        )
        return {k: stats[k] for k in ("rows", "rows_failed", "seconds")}
