"""The serve job's process: one engine and the generation loop for every chunk of its group.

The serve job starts the engine (in a guarded process group) and a small HTTP service on
127.0.0.1, and writes the service's address into its Snakemake `service()` file at once. Each
chunk job of the group is a thin client that asks this process to generate its chunk and waits.
So the heavy state (engine, HTTP connection pool, input file handles) is set up once per group,
all chunks of a group share one concurrency limit and are in flight together (the engine stays
fed across chunk boundaries), and a chunk job costs little more than starting Python.

Endpoints: `GET /health` (state and identity token), `POST /chunk` (a JSON chunk request; the
response streams NDJSON progress lines and ends with a result line).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pyarrow as pa
from aiohttp import web

from dataforge import plan as planlib
from dataforge.atomic import write_json_atomic
from dataforge.client import EngineClient, EngineDead, RequestFailed
from dataforge.config import DOCUMENT_MARKER
from dataforge.engines import EngineSpec, engine_settings, engine_spec, server_gpus
from dataforge.errors import DataforgeError
from dataforge.output import (
    build_chunk_table,
    chunk_stats,
    finished_chunk,
    spec_digest,
    write_chunk,
)
from dataforge.prompts import PromptError, build_messages, build_payload, request_seed
from dataforge.rollout import Generate, Rollouts
from dataforge.source import RowReader

log = logging.getLogger("dataforge.serve")
PROGRESS_EVERY_S = 2.0
PROBE_ATTEMPTS = 3  # health checks, 1 s apart, before an engine counts as unreachable
PROBE_CACHE_S = 2.0  # requests failing together share one probe's answer for this long
PARENT_CHECK_S = 0.5  # how often the server checks that the Snakemake process that runs it lives
# Tokens kept free when truncating: re-tokenizing cut text can merge differently at the cut.
TRUNCATION_MARGIN = 8
# Engines that serve vLLM's /tokenize and /detokenize (prompts are fitted to the context).
TOKENIZING_KINDS = frozenset({"vllm", "dummy"})


class ChunkFailed(Exception):
    """The chunk could not be generated; the message is reported to the chunk job."""


class Driver:
    """State of one serve job: engine process, client, readers, chunks in progress."""

    def __init__(
        self,
        config: dict[str, Any],
        server_id: str,
        sock: socket.socket,
        token: str,
        engine_log: str,
        basedir: Path,
        parent: int | None = None,
    ) -> None:
        self.config = config
        self.basedir = basedir
        self.server_id = server_id
        self.sock = sock
        self.engine_log = engine_log
        self.token = token
        self.state = "starting"
        self.error: str | None = None
        self.ready = asyncio.Event()
        self.stop = asyncio.Event()
        self.spec: EngineSpec | None = None
        self.guard: subprocess.Popen | None = None
        self.client: EngineClient | None = None
        self.readers: dict[str, RowReader] = {}
        self._overheads: dict[tuple, asyncio.Future] = {}
        self.read_lock = threading.Lock()
        self.chunks_done = 0
        self.chunks_active: set[str] = set()
        self.started = time.time()
        self.engine_ready: float | None = None  # when the engine answered (time.time())
        self.engine_version: str | None = None  # vLLM's GET /version, where it has one
        self.rollouts: Rollouts | None = None  # rollout.function, its shared context
        self._probe: asyncio.Future | None = None  # the engine_reachable() check in progress
        self._probe_at = 0.0
        # The Snakemake process that started this job (read first thing by serve_job).
        self.parent = os.getppid() if parent is None else parent

    @property
    def gpus(self) -> int:
        """GPUs this server holds (for gpu_hours in stats.json): none for an endpoint; the
        dummy engine asks for what vLLM would."""
        return 0 if self.config["engine"]["kind"] == "endpoint" else server_gpus(self.config)

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
        log.info("server %s: service on %s:%d (pid %d)", self.server_id, host, port, os.getpid())
        orphan_watch = asyncio.create_task(self.watch_parent())
        code = 0
        try:
            if self.config["rollout"]["function"]:  # imported before the engine starts
                self.rollouts = Rollouts(self.config, [Path.cwd(), self.basedir])
            self.spec = engine_spec(self.config, self.basedir)
            if self.spec.command:
                self.start_engine(self.spec)
            starter = asyncio.create_task(self.wait_engine_ready())
            stopper = asyncio.create_task(self.stop.wait())
            await asyncio.wait({starter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if starter.done() and starter.exception() is None and self.state == "ready":
                watcher = asyncio.create_task(self.watch_engine())
                await asyncio.wait({watcher, stopper}, return_when=asyncio.FIRST_COMPLETED)
                watcher.cancel()
            elif starter.done():
                code = 1
            for task in (starter, stopper):
                task.cancel()
            if self.state == "failed":
                code = 1
                # Give chunk jobs a moment to read the failure before the port closes.
                await asyncio.sleep(1.0)
        except DataforgeError as e:
            self.fail(str(e))
            code = 1
        finally:
            orphan_watch.cancel()
            usage = resource.getrusage(resource.RUSAGE_SELF)
            log.info(
                "server %s: stopping after %d chunks (%.1f s, %.2f s CPU, peak RSS %.0f MB)",
                self.server_id,
                self.chunks_done,
                time.time() - self.started,
                usage.ru_utime + usage.ru_stime,
                usage.ru_maxrss / 1024,
            )
            if self.rollouts is not None:  # e.g. a process pool from the shared context
                try:
                    await self.rollouts.aclose()
                except Exception:
                    log.exception("server %s: closing rollout.shared_context", self.server_id)
            if self.client is not None:
                await self.client.__aexit__(None, None, None)
            await runner.cleanup()
            await asyncio.to_thread(self.stop_engine)
        return code

    def fail(self, message: str) -> None:
        if self.state != "failed":
            log.error("server %s: %s", self.server_id, message)
        self.state = "failed"
        self.error = message
        self.ready.set()  # wake waiters so they see the failure

    def start_engine(self, spec: EngineSpec) -> None:
        Path(self.engine_log).parent.mkdir(parents=True, exist_ok=True)
        out = open(self.engine_log, "ab")  # noqa: SIM115 - owned by the child
        cmd = [sys.executable, "-m", "dataforge.guard", "--", *spec.command]
        log.info("server %s: starting engine: %s", self.server_id, " ".join(spec.command))
        self.guard = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **spec.env},
        )
        out.close()

    def see_engine_log(self, lines: int = 12) -> str:
        """ "see <engine log>" and its last lines, to end an error message with."""
        try:
            with open(self.engine_log, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 16384))
                tail = f.read().decode("utf-8", "replace").splitlines()[-lines:]
        except OSError:
            tail = []
        return f"see {self.engine_log}" + "\n  | ".join(["", *tail])

    def engine_alive(self) -> bool:
        return self.guard is None or self.guard.poll() is None

    def stop_engine(self) -> None:
        """Close the guard's pipe (it then stops the engine's process group) and wait."""
        if self.guard is None:
            return
        with contextlib.suppress(OSError):
            self.guard.stdin.close()  # type: ignore[union-attr]
        try:
            self.guard.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.guard.kill()
        log.info("server %s: engine stopped (exit %s)", self.server_id, self.guard.returncode)

    async def wait_engine_ready(self) -> None:
        assert self.spec is not None
        engine = self.config["engine"]
        deadline = time.monotonic() + engine["startup_timeout_s"]
        headers = self.spec.auth_headers
        last = "no answer yet"
        async with aiohttp.ClientSession(headers=headers) as session:
            while time.monotonic() < deadline and not self.stop.is_set():
                if not self.engine_alive():
                    self.fail(
                        f"engine exited with code {self.guard.returncode} during start-up; "
                        f"{self.see_engine_log()}"
                    )
                    return
                try:
                    async with session.get(
                        self.spec.health_url, timeout=aiohttp.ClientTimeout(total=5)
                    ) as resp:
                        if resp.status == 200 and await self.model_served(session):
                            break
                        last = f"HTTP {resp.status}"
                except (aiohttp.ClientError, TimeoutError) as e:
                    last = type(e).__name__
                await asyncio.sleep(0.2)
            else:
                if not self.stop.is_set():
                    self.fail(
                        f"engine not ready after {engine['startup_timeout_s']:g} s "
                        f"({self.spec.health_url}: {last}); {self.see_engine_log()}"
                    )
                return
        self.client = EngineClient(
            self.spec.base_url,
            max_concurrent=engine["max_concurrent_requests"],
            timeout_s=engine["request_timeout_s"],
            max_retries=engine["max_retries"],
            api_key=self.spec.api_key,
            alive=self.engine_alive,
            probe=self.engine_reachable,
        )
        await self.client.__aenter__()
        self.engine_version = await self.ask_version(headers)
        self.engine_ready = time.time()
        self.state = "ready"
        self.ready.set()
        log.info("server %s: engine ready after %.1f s", self.server_id, time.time() - self.started)

    async def engine_reachable(self) -> bool:
        """Whether the engine answers HTTP at all (any status), after a connection error.

        An endpoint server that went away, or an engine process that lives but stopped
        listening, fails the chunk (EngineDead) instead of turning its rows into error rows.
        Requests that fail together share one check.
        """
        now = time.monotonic()
        if self._probe is None or (self._probe.done() and now - self._probe_at > PROBE_CACHE_S):
            self._probe_at = now
            self._probe = asyncio.ensure_future(self._probe_engine())
        return await asyncio.shield(self._probe)

    async def _probe_engine(self) -> bool:
        headers = self.spec.auth_headers
        async with aiohttp.ClientSession(headers=headers) as session:
            for attempt in range(PROBE_ATTEMPTS):
                try:
                    async with session.get(
                        self.spec.health_url, timeout=aiohttp.ClientTimeout(total=5)
                    ):
                        return True
                except (aiohttp.ClientError, TimeoutError):
                    if attempt + 1 < PROBE_ATTEMPTS:
                        await asyncio.sleep(1.0)
        log.error(
            "server %s: the engine at %s answers no request", self.server_id, self.spec.base_url
        )
        return False

    async def ask_version(self, headers: dict[str, str]) -> str | None:
        """The engine's version from vLLM's `GET /version` (recorded in stats.json); None
        for engines without it."""
        if self.spec.kind != "vllm":
            return None
        url = self.spec.base_url.removesuffix("/v1") + "/version"
        try:
            async with (
                aiohttp.ClientSession(headers=headers) as session,
                session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as resp,
            ):
                return (await resp.json()).get("version") if resp.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    async def model_served(self, session: aiohttp.ClientSession) -> bool:
        """Check once that a vLLM server serves the configured model name."""
        if self.spec.kind != "vllm":
            return True
        name = self.config["model"]["name"]
        async with session.get(self.spec.base_url + "/models") as resp:
            served = [m.get("id") for m in (await resp.json()).get("data", [])]
        if name not in served:
            raise DataforgeError(f"the engine serves {served}, not model.name {name!r}")
        return True

    async def watch_parent(self) -> None:
        """Stop when the Snakemake process that started this job is gone (kill -9 of that
        process alone, the OOM killer): no one would ever send the service its SIGTERM, and
        the engine would hold its GPUs for good. Chunks in flight are redone by the rerun."""
        while os.getppid() == self.parent:
            await asyncio.sleep(PARENT_CHECK_S)
        log.error(
            "server %s: the Snakemake process %d that started it is gone; stopping",
            self.server_id,
            self.parent,
        )
        self.stop.set()

    async def watch_engine(self) -> None:
        while self.engine_alive():
            await asyncio.sleep(0.2)
        self.fail(f"engine exited with code {self.guard.returncode}; {self.see_engine_log()}")

    # -- HTTP handlers -------------------------------------------------------------------------

    async def handle_health(self, _: web.Request) -> web.Response:
        return web.json_response(
            {"token": self.token, "state": self.state, "error": self.error, "pid": os.getpid()}
        )

    async def handle_chunk(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        chunk = body["spec"]["chunk"]
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        progress = {"done": 0, "rows": 0}

        async def report() -> None:
            while True:
                await asyncio.sleep(PROGRESS_EVERY_S)
                await response.write(json.dumps(progress).encode() + b"\n")

        reporter = asyncio.create_task(report())
        self.chunks_active.add(chunk)
        try:
            result = {"ok": True, **await self.generate_chunk(body, progress)}
            self.chunks_done += 1
        except EngineDead as e:
            result = {"ok": False, "error": f"{e}; {self.see_engine_log()}"}
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
            self.chunks_active.discard(chunk)
        await response.write(json.dumps(result).encode() + b"\n")
        await response.write_eof()
        return response

    # -- generation ----------------------------------------------------------------------------

    async def tokenizer_call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """vLLM's `/tokenize` or `/detokenize` (served beside `/v1`, not under it)."""
        return await self.client.post_json(self.spec.base_url.removesuffix("/v1") + path, body)

    async def prompt_overhead(self, gen: dict[str, Any]) -> int:
        """Tokens of the chat template, system prompt and template text around the document.

        Asked once per (system, template): the rows that start together share one request.
        """
        key = (gen["model"], gen["system"], gen["template"])
        if key not in self._overheads:
            template = gen["template"] or DOCUMENT_MARKER
            messages = [{"role": "system", "content": gen["system"]}] if gen["system"] else []
            messages.append({"role": "user", "content": template.replace(DOCUMENT_MARKER, "")})
            self._overheads[key] = asyncio.ensure_future(
                self.tokenizer_call(
                    "/tokenize",
                    {"model": gen["model"], "messages": messages, "add_generation_prompt": True},
                )
            )
        asked = self._overheads[key]
        try:
            return (await asyncio.shield(asked))["count"]
        except RequestFailed:
            if self._overheads.get(key) is asked:
                del self._overheads[key]  # ask again for the next row
            raise

    async def fit_to_context(self, text: str, gen: dict[str, Any]) -> tuple[str, bool]:
        """Cut the prompt's text by tokens so that the request fits the context.

        The budget is `model.max_context - sampling.max_tokens`; the template text around
        `[[DOCUMENT]]`, the system prompt and the chat template are kept whole. A prompt whose
        UTF-8 length already fits (a token covers at least one byte) is not tokenized.

        Raises:
            PromptError: when even an empty document does not fit, or when the prompt does not
                fit and `prompt.too_long` is `error`.
        """
        budget = self.config["model"]["max_context"] - gen["sampling"]["max_tokens"]
        overhead = await self.prompt_overhead(gen)
        if len(text.encode()) + overhead <= budget:
            return text, False
        answer = await self.tokenizer_call(
            "/tokenize", {"model": gen["model"], "prompt": text, "add_special_tokens": False}
        )
        tokens = answer["tokens"]
        if len(tokens) + overhead <= budget:
            return text, False
        if gen.get("too_long") == "error":
            raise PromptError(
                "prompt_too_long",
                f"{len(tokens) + overhead} prompt tokens with the template and chat template; "
                f"{budget} fit (model.max_context - sampling.max_tokens)",
            )
        room = budget - overhead - TRUNCATION_MARGIN
        if room <= 0:
            raise PromptError(
                "prompt_too_long",
                f"the template, system prompt and chat template alone take {overhead} of the "
                f"{budget} tokens left for the prompt",
            )
        answer = await self.tokenizer_call(
            "/detokenize", {"model": gen["model"], "tokens": tokens[:room]}
        )
        return answer["prompt"], True

    def read_rows(self, plan: dict[str, Any], start: int, end: int) -> pa.Table:
        """Rows [start, end) of the plan's input (runs in a worker thread).

        One reader per input, opened once per server; reads are serialised because pyarrow's
        ParquetFile is not safe to iterate from several threads at once (seen to crash).
        """
        with self.read_lock:
            key = plan["fingerprint"]
            if key not in self.readers:
                reader = RowReader(plan["source"])
                reader.check_unchanged()
                self.readers[key] = reader
            return self.readers[key].read(start, end)

    async def generate_chunk(self, body: dict[str, Any], progress: dict[str, int]) -> dict:
        """Generate one chunk and write its Parquet file and stats sidecar atomically."""
        spec, outputs = body["spec"], body["outputs"]
        await self.ready.wait()
        if self.state != "ready":
            raise ChunkFailed(f"server {self.server_id} failed: {self.error}")
        started = time.time()
        plan = planlib.load_plan(body["plan"])
        index = int(spec["chunk"])
        start, end = planlib.chunk_range(plan, index)
        if (start, end) != (spec["start"], spec["end"]) or plan["fingerprint"] != spec["plan"]:
            raise ChunkFailed(
                f"chunk {spec['chunk']}: rows {spec['start']}-{spec['end']} disagree with "
                f"{body['plan']} (rows {start}-{end}); the plan changed during the run"
            )
        if await asyncio.to_thread(finished_chunk, outputs["parquet"], outputs["stats"], spec):
            # Snakemake resubmits a failed group whole; the chunks it finished stay as they are.
            log.info("chunk %s: already complete, kept", spec["chunk"])
            done = json.loads(Path(outputs["stats"]).read_text(encoding="utf-8"))
            return {k: done[k] for k in ("rows", "rows_failed", "seconds")}
        rows = await asyncio.to_thread(self.read_rows, plan, start, end)
        progress["rows"] = rows.num_rows
        gen = spec["generation"]
        generations: list[list[dict[str, Any]]] = [[] for _ in range(rows.num_rows)]
        errors: list[str | None] = [None] * rows.num_rows
        truncated: list[bool] = [False] * rows.num_rows
        rollout_json: list[str | None] | None = None  # the rollout column (rollout.function)
        counts: Counter[str] = Counter()

        async def one_rollout(i: int, row: dict[str, Any]) -> None:
            generate = Generate(
                self.client, gen, start + i, counts, self.spec.base_url,
                self.config["model"]["max_context"],
            )  # fmt: skip
            try:
                rollout_json[i], errors[i] = await self.rollouts.run(row, generate)
            finally:  # failed rows' requests count in the statistics too
                generations[i] = [g.as_dict() for g in generate.generations]
            progress["done"] += 1

        async def one_row(i: int) -> None:
            try:
                prompt = prompts[i]
                if self.spec.kind in TOKENIZING_KINDS and plan["prompt_kind"] == "text" and prompt:
                    prompt, cut = await self.fit_to_context(str(prompt), gen)
                    truncated[i] = cut
                messages = build_messages(
                    prompt, plan["prompt_kind"], gen["system"], gen["template"]
                )
            except (PromptError, RequestFailed) as e:
                errors[i] = str(e)
                progress["done"] += 1
                return
            sampling = gen["sampling"]
            rollouts = sampling["rollouts"]
            requests = [
                self.client.chat(
                    build_payload(
                        messages,
                        gen["model"],
                        sampling,
                        request_seed(sampling["seed"], start + i, r, rollouts),
                    ),
                    counts,
                )
                for r in range(rollouts)
            ]
            if rollouts == 1:  # the common case, without a task per request
                try:
                    results = [await requests[0]]
                except RequestFailed as e:
                    results = [e]
            else:
                results = await asyncio.gather(*requests, return_exceptions=True)
            for res in results:
                if isinstance(res, EngineDead):
                    raise res
                if isinstance(res, RequestFailed):
                    errors[i] = errors[i] or str(res)
                elif isinstance(res, BaseException):
                    raise res
                else:
                    generations[i].append(res.as_dict())
            progress["done"] += 1

        if self.rollouts is not None:
            rollout_json = [None] * rows.num_rows
            await self.rollouts.context()  # a broken shared context fails the chunk, once
            tasks = [
                asyncio.ensure_future(one_rollout(i, row)) for i, row in enumerate(rows.to_pylist())
            ]
        else:
            prompts = rows.column(plan["input"]["prompt_column"]).to_pylist()
            tasks = [asyncio.ensure_future(one_row(i)) for i in range(len(prompts))]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            raise
        if not self.engine_alive():
            raise EngineDead(f"engine exited during chunk {spec['chunk']}")
        record = {**planlib.chunk_metadata(plan, index), "spec": spec_digest(spec)}
        stats = chunk_stats(generations, errors, counts)
        stats["rows_prompt_truncated"] = sum(truncated)
        finished = time.time()
        stats.update(
            chunk=spec["chunk"],
            start=start,
            end=end,
            server=self.server_id,
            server_started=self.started,
            engine_ready=self.engine_ready,
            engine_version=self.engine_version,
            engine=engine_settings(self.config),
            gpus=self.gpus,
            host=socket.gethostname(),
            started=started,
            finished=finished,
            seconds=finished - started,
        )

        def write() -> None:
            table = build_chunk_table(rows, start, generations, errors, record, rollout_json)
            # Sidecar first, Parquet last: the Parquet file is what marks the chunk as done.
            write_json_atomic(outputs["stats"], stats)
            try:
                write_chunk(table, outputs["parquet"])
            except BaseException:  # e.g. a full disk: no sidecar of a chunk that is not there
                Path(outputs["stats"]).unlink(missing_ok=True)
                raise

        await asyncio.to_thread(write)
        log.info(
            "chunk %s: %d rows (%d failed) in %.2f s",
            spec["chunk"],
            stats["rows"],
            stats["rows_failed"],
            stats["seconds"],
        )
        return {k: stats[k] for k in ("rows", "rows_failed", "seconds")}
