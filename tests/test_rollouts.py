"""Custom rollouts (`rollout.function`): the examples under examples/rollouts/ run through the
real workflow on the dummy engine (a real HTTP server on 127.0.0.1) with their configs from
config/examples/, plus rollouts written into the working directory for the failure cases.
The chunked example on the real vLLM engine is in tests/test_vllm.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import REPO, Workflow, base_config, check_rows_exactly_once, write_prompts
from harness import pid_alive, wait_no_engines

from dataforge import workflow as dfw
from dataforge.config import load_schema, validate_config
from dataforge.errors import ConfigError
from dataforge.rollout import Generate, Rollouts, rollout_seed
from dataforge.settings import Config

pytestmark = pytest.mark.e2e


def typed(config: dict) -> Config:
    """The typed form of a partial config (validated, defaults filled)."""
    return Config.from_dict(validate_config(config, load_schema(REPO / "config" / "schema.yaml")))


def example_config(name: str, dataset: Path, **overrides: dict) -> dict:
    """config/examples/<name>.yaml under the tests' dummy-engine settings."""
    config = yaml.safe_load((REPO / "config" / "examples" / f"{name}.yaml").read_text())
    ours = base_config(dataset, **overrides)
    for key, value in ours.items():
        config[key] = {**config.get(key, {}), **value}
    return config


def run_example(wf: Workflow, name: str, rows: int) -> pa.Table:
    """Runs config/examples/<name>.yaml on `rows` prompts in chunks of 10; the output table."""
    dataset = write_prompts(wf.workdir / "in.parquet", rows)
    wf.configure(example_config(name, dataset, chunks={"size": 10}))
    wf.run()
    return check_rows_exactly_once(wf, rows)


def rollouts_of(wf: Workflow) -> list[Any]:
    return [json.loads(v) if v else None for v in wf.table().column("rollout").to_pylist()]


def echoed(prompt: str) -> str:
    """The start of the dummy engine's answer to a last message `prompt`."""
    return "Echo: " + " ".join(prompt.split()[:8]) + " |"


# -- the examples ------------------------------------------------------------------------------


def test_single_request_example(workflow: Workflow) -> None:
    wf = workflow
    table = run_example(wf, "single_request", 40)
    assert "generations" not in table.column_names
    assert table.column("error").to_pylist() == [None] * 40
    outs = rollouts_of(wf)
    prompts = table.column("prompt").to_pylist()
    for out, prompt in zip(outs, prompts, strict=True):
        assert out["text"].startswith(echoed(prompt)), (out, prompt)  # its own answer
        assert set(out) == {"text", "reasoning", "finish_reason", "prompt_tokens",
                            "completion_tokens"}  # fmt: skip
        # user words + 4, system prompt words + 4 (the dummy's count)
        assert out["prompt_tokens"] == len(prompt.split()) + 4 + 6 + 4
    stats = wf.stats()
    assert stats["requests"]["requests"] == 40 and stats["rollouts"] == 40
    assert stats["completion_tokens"]["total"] == sum(o["completion_tokens"] for o in outs)
    assert stats["provenance"]["rollout"]["function"] == "examples.rollouts.single_request:rollout"
    assert stats["provenance"]["prompt_kind"] == "rollout"
    card = (wf.results / "README.md").read_text()
    assert "rollout function `examples.rollouts.single_request:rollout`" in card
    assert "- `rollout` (string)" in card and "- `generations`" not in card
    # a rerun has nothing to do; a deleted chunk is made again, the same
    assert wf.job_counts() == {}
    before = pq.read_table(wf.chunks()[1])
    wf.chunks()[1].unlink()
    assert wf.job_counts() == {
        "generate_chunk": 1, "serve_model": 1, "aggregate_stats": 1, "write_dataset_card": 1,
        "all": 1,
    }  # fmt: skip
    wf.run()
    assert pq.read_table(wf.chunks()[1]).equals(before)


def test_critique_revise_example_keeps_every_step(workflow: Workflow) -> None:
    wf = workflow
    table = run_example(wf, "critique_revise", 30)
    from examples.rollouts.critique_revise import CRITIQUE, REVISE

    for out, prompt in zip(rollouts_of(wf), table.column("prompt").to_pylist(), strict=True):
        assert list(out) == ["answer", "critique", "revision"]
        assert out["answer"]["text"].startswith(echoed(prompt))
        assert out["critique"]["text"].startswith(echoed(CRITIQUE))
        assert out["revision"]["text"].startswith(echoed(REVISE))
    stats = wf.stats()
    assert stats["requests"]["requests"] == 90 and stats["rollouts"] == 90
    assert stats["prompt_tokens"]["n"] == 90 and stats["completion_tokens"]["n"] == 90


def write_documents(path: Path, words: list[int]) -> list[str]:
    texts = [" ".join(f"d{i}w{j}" for j in range(n)) for i, n in enumerate(words)]
    with open(path, "w", encoding="utf-8") as f:
        for i, text in enumerate(texts):
            f.write(json.dumps({"id": f"doc{i}", "text": text}) + "\n")
    return texts


def test_chunked_documents_example_splits_by_tokens_and_continues(workflow: Workflow) -> None:
    wf = workflow
    words = [30, 100, 41, 0, 250]  # the dummy engine's tokens are words; one empty document
    write_documents(wf.workdir / "docs.jsonl", words)
    from examples.rollouts.chunked_documents import INSTRUCTION

    config = example_config(
        "chunked_documents", wf.workdir / "docs.jsonl", sampling={"max_tokens": 16}
    )
    config["rollout"]["kwargs"]["part_tokens"] = 40
    wf.configure(config)
    wf.run()
    table = wf.table()
    outs = rollouts_of(wf)
    errors = table.column("error").to_pylist()
    assert errors[3] == "rollout_error: ValueError: column 'text' is empty" and outs[3] is None
    parts = 0
    for i, n in enumerate(words):
        if not n:
            continue
        out = outs[i]
        assert errors[i] is None
        assert out["parts"] == math.ceil(n / 40) and len(out["part_info"]) == out["parts"]
        assert [p["tokens"] for p in out["part_info"]] == [min(40, n - k) for k in range(0, n, 40)]
        assert out["text"].startswith(echoed(INSTRUCTION))
        # Each part after the first continues the previous answer, the last message of its
        # request: the dummy echoes that answer's start, one "Echo:" more per part.
        p = out["parts"]
        assert out["text"].count("Echo:") == p * (p + 1) // 2, out["text"]
        parts += p
    stats = wf.stats()
    assert stats["requests"]["requests"] == parts == 1 + 3 + 2 + 7
    assert stats["rows_failed_by_kind"] == {"rollout_error": 1}


def test_chunked_documents_needs_a_context_that_fits(workflow: Workflow) -> None:
    wf = workflow
    write_documents(wf.workdir / "docs.jsonl", [10, 20])
    config = example_config(
        "chunked_documents",
        wf.workdir / "docs.jsonl",
        model={"name": "dummy", "max_context": 1000},
        sampling={"max_tokens": 200},
    )
    wf.configure(config)  # part_tokens 512: 2 x 512 + 2 x 200 + 64 > 1000
    wf.run()
    errors = wf.table().column("error").to_pylist()
    assert all(e.startswith("rollout_error: ValueError: part_tokens=512 with") for e in errors)
    assert "needs 1488 tokens of context, model.max_context is 1000" in errors[0]
    assert wf.stats()["requests"] == {}  # nothing was sent


RECORDING_POOL = '''
"""The process-pool example's context, recording its life in context.log (tests only)."""
import contextlib, os
from examples.rollouts.process_pool import pool_context


@contextlib.contextmanager
def recorded():
    with open("context.log", "a") as log:
        log.write(f"open {os.getpid()}\\n")
    with pool_context() as context:
        try:
            yield context
        finally:
            workers = sorted(context["pool"]._processes or {})
            with open("context.log", "a") as log:
                log.write(f"close {os.getpid()} {' '.join(map(str, workers))}\\n")
'''


def pool_records(wf: Workflow) -> tuple[list[int], dict[int, list[int]]]:
    opened, closed = [], {}
    for line in (wf.workdir / "context.log").read_text().splitlines():
        kind, pid, *workers = line.split()
        if kind == "open":
            opened.append(int(pid))
        else:
            closed[int(pid)] = [int(w) for w in workers]
    return opened, closed


def process_pool_config(wf: Workflow, rows: int, **overrides: dict) -> None:
    (wf.workdir / "recording_pool.py").write_text(RECORDING_POOL)
    config = example_config(
        "process_pool", write_prompts(wf.workdir / "in.parquet", rows), **overrides
    )
    config["rollout"]["shared_context"] = "recording_pool:recorded"
    wf.configure(config)


def test_process_pool_example_builds_one_pool_per_server_and_closes_it(
    workflow: Workflow,
) -> None:
    wf = workflow
    # 4 chunks, 2 groups, one server: this machine's engine slot's, for both groups
    process_pool_config(wf, 40, chunks={"size": 10, "per_server": 2})
    wf.run()
    table = check_rows_exactly_once(wf, 40)
    from examples.rollouts.process_pool import analyse

    for out, prompt in zip(rollouts_of(wf), table.column("prompt").to_pylist(), strict=True):
        assert out["analysis"] == analyse(prompt)
        assert out["text"].startswith(echoed(prompt + "\n\n(Key terms:"))
    opened, closed = pool_records(wf)
    assert len(opened) == 1 and set(opened) == set(closed), (opened, closed)  # once per server
    workers = [w for ws in closed.values() for w in ws]
    assert workers and not set(workers) & set(opened)
    assert not [w for w in workers if pid_alive(w)], "no pool worker outlives its server"
    assert wf.stats()["requests"]["requests"] == 40


def test_process_pool_is_closed_when_the_run_is_interrupted(workflow: Workflow) -> None:
    wf = workflow
    process_pool_config(
        wf,
        200,
        chunks={"size": 100, "per_server": 2},
        engine={"max_concurrent_requests": 2, "dummy": {"latency_s": 0.5}},
    )
    proc = wf.start()
    deadline = time.monotonic() + 60
    log = wf.workdir / "context.log"
    while not (log.exists() and "open" in log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2)  # rows in flight
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=60)
    assert wait_no_engines() == []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(pool_records(wf)[1]) < 1:
        time.sleep(0.2)
    opened, closed = pool_records(wf)
    assert len(opened) == 1 and set(closed) == set(opened), log.read_text()
    workers = closed[opened[0]]
    # "close" is recorded as the pool's shutdown begins: give the workers a moment to exit
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(pid_alive(w) for w in workers):
        time.sleep(0.1)
    assert workers and not [w for w in workers if pid_alive(w)]
    assert not wf.chunks(), "nothing finished"


# -- failures ----------------------------------------------------------------------------------

FLAKY = '''
"""A rollout for the failure cases (tests only)."""
from dataforge.rollout import RequestFailed


async def rollout(row, generate, mode="raise"):
    n = row["extra"]
    result = await generate({"messages": [{"role": "user", "content": row["prompt"]}]})
    if n % 5 == 1:
        raise ValueError(f"row {n} is not wanted")
    if n % 5 == 2:
        return {"a set": {1, 2}}
    if n % 5 == 3:  # a request the engine refuses, not caught: the row fails with its error
        await generate({"messages": [{"role": "user", "content": "REJECT-ME"}]})
    if n % 5 == 4:
        try:
            await generate({"prompt": "REJECT-ME please", "max_tokens": 3})
        except RequestFailed as e:
            return {"text": result.text, "caught": e.kind}
    return {"text": result.text}
'''


def test_a_rollout_that_raises_fails_only_its_row(workflow: Workflow) -> None:
    wf = workflow
    (wf.workdir / "flaky.py").write_text(FLAKY)
    wf.configure(
        base_config(
            write_prompts(wf.workdir / "in.parquet", 20),
            chunks={"size": 10},
            engine={"max_retries": 0, "dummy": {"reject_marker": "REJECT-ME"}},
            rollout={"function": "flaky:rollout"},
        )
    )
    wf.run()
    table = check_rows_exactly_once(wf, 20)
    outs, errors = rollouts_of(wf), table.column("error").to_pylist()
    for n in range(20):
        kind = n % 5
        if kind == 0:
            assert errors[n] is None and outs[n]["text"].startswith("Echo: question")
        elif kind == 1:
            assert errors[n] == f"rollout_error: ValueError: row {n} is not wanted"
        elif kind == 2:
            assert errors[n].startswith("rollout_output: the rollout returned a value that is")
            assert "set is not JSON serializable" in errors[n]
        elif kind == 3:
            assert errors[n].startswith("http_400: HTTP 400:") and outs[n] is None
        else:
            assert errors[n] is None and outs[n]["caught"] == "http_400"
    stats = wf.stats()
    assert stats["rows_failed"] == 12
    assert stats["rows_failed_by_kind"] == {"rollout_error": 4, "rollout_output": 4, "http_400": 4}
    # every request counts: one per row, one more for rows 3 and 4 of each five
    assert stats["requests"]["requests"] == 28
    assert stats["rollouts"] == 20  # answers (refused requests have none)


BAD = """
import contextlib

def not_async(row, generate):
    return 1

async def no_generate(row):
    return 1

async def needs_pool(row, generate, pool):
    return 1

NOT_A_CONTEXT = 42
"""


@pytest.mark.parametrize(
    ("rollout", "message"),
    [
        ({"function": "nowhere:rollout"}, "rollout.function: cannot import module 'nowhere' "
         "(ModuleNotFoundError: No module named 'nowhere')"),
        ({"function": "bad:missing"}, "rollout.function: module 'bad' has no attribute 'missing'"),
        ({"function": "bad:not_async"}, "rollout.function: bad:not_async is not an async "
         "function (got a function); write `async def rollout(row, generate, **context)`"),
        ({"function": "bad:no_generate"}, "rollout.function: bad:no_generate cannot be called as "
         "rollout(row, generate): too many positional arguments"),
        ({"function": "bad:needs_pool"}, "rollout.function: bad:needs_pool cannot be called as "
         "rollout(row, generate): missing a required argument: 'pool'"),
        ({"function": "bad:needs_pool", "kwargs": {"pool": 1, "size": 2}},
         "rollout.function: bad:needs_pool cannot be called as rollout(row, generate, pool=…, "
         "size=…): got an unexpected keyword argument 'size'"),
        ({"function": "bad:needs_pool", "shared_context": "bad:NOT_A_CONTEXT"},
         "rollout.shared_context: bad:NOT_A_CONTEXT is an object of type int; expected a dict, "
         "a callable or a context manager"),
        ({"function": "no colon"}, "rollout.function must be 'module:name' (e.g. "
         "'my_rollouts:rollout'), got 'no colon'"),
        ({"shared_context": "bad:NOT_A_CONTEXT"}, "rollout.shared_context needs rollout.function"),
    ],
    ids=["no-module", "no-attr", "not-async", "signature", "missing-context", "extra-kwarg",
         "bad-context", "pattern", "context-alone"],
)  # fmt: skip
def test_bad_rollouts_are_refused_before_any_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rollout: dict, message: str
) -> None:
    (tmp_path / "bad.py").write_text(BAD)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = base_config(tmp_path / "in.parquet", rollout=rollout)
    with pytest.raises(ConfigError) as e:
        dfw.check_config(config, REPO)
    assert str(e.value).removeprefix("config: ") == message


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sampling": {"rollouts": 2}}, "sampling.rollouts must be 1 with rollout.function"),
        ({"prompt": {"system": "hi"}}, "prompt.system is not used with rollout.function"),
    ],
)
def test_settings_that_a_rollout_ignores_are_refused(changes: dict, message: str) -> None:
    config = base_config(
        Path("in.parquet"), rollout={"function": "examples.rollouts.single_request:rollout"}
    )
    for key, value in changes.items():
        config.setdefault(key, {}).update(value)
    with pytest.raises(ConfigError, match=message):
        dfw.check_config(config, REPO)


def test_a_bad_rollout_stops_snakemake_with_one_line_and_writes_nothing(
    workflow: Workflow,
) -> None:
    wf = workflow
    (wf.workdir / "bad.py").write_text(BAD)
    wf.configure(
        base_config(
            write_prompts(wf.workdir / "in.parquet", 10), rollout={"function": "bad:not_async"}
        )
    )
    proc = wf.run(check=False)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("dataforge:")]
    assert lines == [
        "dataforge: config: rollout.function: bad:not_async is not an async function (got a "
        "function); write `async def rollout(row, generate, **context)`"
    ], proc.stderr[-2000:]
    assert not wf.results.exists()


def test_a_failing_shared_context_fails_the_chunks_with_its_message(workflow: Workflow) -> None:
    wf = workflow
    (wf.workdir / "ctx.py").write_text(
        "def broken():\n    raise OSError('no scratch space')\n\n"
        "async def rollout(row, generate, **context):\n    return 1\n"
    )
    wf.configure(
        base_config(
            write_prompts(wf.workdir / "in.parquet", 10),
            rollout={"function": "ctx:rollout", "shared_context": "ctx:broken"},
        )
    )
    proc = wf.run(check=False)
    assert proc.returncode != 0 and not wf.chunks()
    log = (wf.workdir / "logs" / "generate_chunk" / "00000.log").read_text()
    assert "rollout.shared_context: ctx:broken raised OSError: no scratch space" in log


def test_a_rollout_input_needs_no_prompt_column_but_keeps_its_own_names(
    workflow: Workflow,
) -> None:
    wf = workflow
    (wf.workdir / "cols.py").write_text(
        "async def rollout(row, generate):\n    return sorted(row)\n"
    )
    path = wf.workdir / "in.parquet"
    pq.write_table(pa.table({"question": ["a", "b"], "generations": [1, 2]}), path)
    wf.configure(base_config(path, rollout={"function": "cols:rollout"}))
    wf.run()  # neither a `prompt` column nor the plain mode's `generations` name is needed
    assert rollouts_of(wf) == [["generations", "question"]] * 2
    other = Workflow(wf.workdir / "other")
    other.workdir.mkdir()
    (other.workdir / "cols.py").write_text((wf.workdir / "cols.py").read_text())
    pq.write_table(pa.table({"question": ["a"], "rollout": [1]}), other.workdir / "in.parquet")
    other.configure(base_config(other.workdir / "in.parquet", rollout={"function": "cols:rollout"}))
    proc = other.run(check=False)
    assert "dataforge: input.dataset: column 'rollout' is reserved for dataforge's output" in (
        proc.stderr
    )


# -- units: the generate function and the shared context ----------------------------------------


class RecordingClient:
    """Stands in for EngineClient below the rollout layer: records the bodies it gets."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict]] = []

    async def chat(self, payload: dict, counts: Counter, kind: str = "chat") -> Any:
        from dataforge.client import Generation

        self.sent.append((kind, payload))
        counts["requests"] += 1
        return Generation("ok", None, "stop", 1, 1)


def generate_for(client: RecordingClient, row: int, seed: int | None = 7) -> Generate:
    generation = {
        "model": "m",
        "sampling": {"max_tokens": 32, "temperature": 0.5, "top_p": None, "top_k": None,
                     "seed": seed, "rollouts": 1, "response_format": None},
    }  # fmt: skip
    return Generate(client, generation, row, Counter(), "http://x", 4096)


def test_generate_fills_model_sampling_and_reproducible_seeds() -> None:
    client = RecordingClient()

    async def go() -> None:
        g = generate_for(client, row=3)
        same = {"messages": [{"role": "user", "content": "hi"}]}
        await asyncio.gather(g(same), g(same))
        await g({"prompt": "hi", "max_tokens": 5, "seed": 11})
        with pytest.raises(TypeError, match="either 'messages' or 'prompt'"):
            await g({"messages": [], "prompt": "x"})
        assert len(g.generations) == 3

    asyncio.run(go())
    (k1, a), (k2, b), (k3, c) = client.sent
    assert (k1, k2, k3) == ("chat", "chat", "completions")
    assert a["model"] == "m" and a["max_tokens"] == 32 and a["temperature"] == 0.5
    assert "top_p" not in a and a["seed"] != b["seed"]  # identical payloads, distinct seeds
    assert c["max_tokens"] == 5 and c["seed"] == 11  # the payload's own values win
    body = {k: v for k, v in a.items() if k != "seed"}
    assert {a["seed"], b["seed"]} == {rollout_seed(7, 3, body, 0), rollout_seed(7, 3, body, 1)}
    assert rollout_seed(7, 4, body, 0) != rollout_seed(7, 3, body, 0)
    client.sent.clear()

    async def unseeded() -> None:
        await generate_for(client, 0, seed=None)({"messages": []})

    asyncio.run(unseeded())
    assert "seed" not in client.sent[0][1]


CONTEXTS = """
import contextlib

events = []
DICT = {"pool": "a dict"}

def factory():
    events.append("factory")
    return {"pool": "from a factory"}

@contextlib.contextmanager
def managed():
    events.append("enter")
    try:
        yield {"pool": "managed"}
    finally:
        events.append("exit")

@contextlib.asynccontextmanager
async def async_managed():
    events.append("aenter")
    yield {"pool": "async"}
    events.append("aexit")

class Managed:
    def __enter__(self):
        events.append("class enter")
        return {"pool": "class"}
    def __exit__(self, *exc):
        events.append("class exit")

def gives_a_list():
    return ["pool"]

async def rollout(row, generate, pool, size=1):
    return [pool, size]
"""


@pytest.mark.parametrize(
    ("name", "pool", "events"),
    [
        ("DICT", "a dict", []),
        ("factory", "from a factory", ["factory"]),
        ("managed", "managed", ["enter", "exit"]),
        ("async_managed", "async", ["aenter", "aexit"]),
        ("Managed", "class", ["class enter", "class exit"]),
    ],
)
def test_each_kind_of_shared_context_is_built_once_and_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, pool: str, events: list[str]
) -> None:
    (tmp_path / "contexts_mod.py").write_text(CONTEXTS)
    rollout = {"function": "contexts_mod:rollout", "shared_context": f"contexts_mod:{name}"}
    config = {"rollout": {**rollout, "kwargs": {"size": 2}}}
    rollouts = Rollouts(typed(config), [tmp_path])
    import contexts_mod

    monkeypatch.setattr(contexts_mod, "events", [])

    async def go() -> list:
        outs = await asyncio.gather(*(rollouts.run({"i": i}, None) for i in range(5)))
        assert contexts_mod.events == events[:1]  # built once for all rows
        await rollouts.aclose()
        return outs

    outs = asyncio.run(go())
    assert outs == [(json.dumps([pool, 2]), None)] * 5
    assert contexts_mod.events == events


def test_a_shared_context_that_is_no_dict_or_clashes_is_refused(tmp_path: Path) -> None:
    (tmp_path / "contexts_mod2.py").write_text(CONTEXTS)

    def run(shared: str, kwargs: dict) -> str:
        config = {"rollout": {"function": "contexts_mod2:rollout", "shared_context": shared,
                              "kwargs": kwargs}}  # fmt: skip
        rollouts = Rollouts(typed(config), [tmp_path])
        with pytest.raises(ConfigError) as e:
            asyncio.run(rollouts.run({}, None))
        with contextlib.suppress(Exception):
            asyncio.run(rollouts.aclose())
        return str(e.value)

    assert run("contexts_mod2:gives_a_list", {}) == (
        "rollout.shared_context: contexts_mod2:gives_a_list gave a list, not a dict"
    )
    assert run("contexts_mod2:DICT", {"pool": 1}) == (
        "rollout.kwargs and rollout.shared_context both set pool"
    )


def test_example_configs_are_valid_and_documented() -> None:
    """Every example config passes the config check as is, and names an existing example."""
    folder = REPO / "config" / "examples"
    rollouts = {p.stem: yaml.safe_load(p.read_text()) for p in folder.glob("*.yaml")}
    names = sorted(n for n, config in rollouts.items() if "rollout" in config and n != "lint")
    assert names == [
        "chunked_documents", "critique_revise", "multinode", "process_pool", "single_request"
    ]  # fmt: skip
    readme = (REPO / "README.md").read_text()
    for name in names:
        config = yaml.safe_load((folder / f"{name}.yaml").read_text())
        dfw.check_config(config, REPO)
        assert f"config/examples/{name}.yaml" in readme, name
        module = config["rollout"]["function"].split(":")[0]
        assert (REPO / (module.replace(".", "/") + ".py")).is_file()
