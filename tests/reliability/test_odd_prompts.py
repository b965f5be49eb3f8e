"""Huge, empty and malformed prompts: each row gets its defined outcome (README, "Reliability")
and no chunk fails for them; text that is not UTF-8 stops the plan with its file and line."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import Workflow, base_config

pytestmark = pytest.mark.e2e

CONTEXT, MAX_TOKENS = 512, 32
MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])


def words(n: int) -> str:
    return " ".join(f"w{i % 1000}" for i in range(n))


TEXT_PROMPTS = {
    "plain": "What is the capital of France?",
    "ten_contexts": words(10 * CONTEXT),
    "one_megabyte": words(250_000)[: 1 << 20],
    "control": "ctrl \x00 bell \x07 esc \x1b[31m red \u2028 sep \x7f end",
    "multibyte": "日本語のテキスト ✓ 🙂 émigré",
    "empty": "",
    "null": None,
    "blank": " \t\n ",
}


def run_text(wf: Workflow, **prompt: object) -> tuple[dict, pa.Table]:
    path = wf.workdir / "in.parquet"
    names = list(TEXT_PROMPTS)
    pq.write_table(pa.table({"id": names, "prompt": list(TEXT_PROMPTS.values())}), path)
    wf.configure(
        base_config(
            path,
            model={"max_context": CONTEXT},
            sampling={"max_tokens": MAX_TOKENS},
            prompt=prompt,
            chunks={"size": 3},
        )
    )
    wf.run(timeout=240)
    table = wf.table()
    rows = {name: row for name, row in zip(names, table.to_pylist(), strict=True)}
    return rows, table


def test_text_prompts_get_their_defined_outcome(workflow: Workflow) -> None:
    rows, table = run_text(workflow)
    # The input column comes back unchanged, byte for byte.
    assert table.column("prompt").to_pylist() == list(TEXT_PROMPTS.values())
    for name in ("plain", "ten_contexts", "one_megabyte", "control", "multibyte"):
        row = rows[name]
        assert row["error"] is None, (name, row["error"])
        (gen,) = row["generations"]
        first = TEXT_PROMPTS[name].split()[:3]
        assert gen["text"].startswith(" ".join(["Echo:", *first])), (name, gen["text"][:80])
        # what the engine got fits the context (the dummy counts a token per word)
        assert gen["prompt_tokens"] + MAX_TOKENS <= CONTEXT, name
    for name in ("empty", "null", "blank"):
        assert rows[name]["error"].startswith("empty_prompt:"), name
        assert rows[name]["generations"] == []
    stats = workflow.stats()
    assert stats["rows_prompt_truncated"] == 2  # ten_contexts, one_megabyte
    assert stats["rows_failed_by_kind"] == {"empty_prompt": 3}
    assert stats["requests"]["requests"] == 5


def test_too_long_prompts_can_be_errors_instead(workflow: Workflow) -> None:
    rows, _ = run_text(workflow, too_long="error")
    for name in ("ten_contexts", "one_megabyte"):
        assert rows[name]["error"].startswith("prompt_too_long:"), rows[name]["error"]
        assert f"{CONTEXT - MAX_TOKENS} fit" in rows[name]["error"]
    assert rows["plain"]["error"] is None and rows["control"]["error"] is None
    stats = workflow.stats()
    assert stats["rows_prompt_truncated"] == 0
    assert stats["rows_failed_by_kind"] == {"empty_prompt": 3, "prompt_too_long": 2}
    assert stats["requests"]["requests"] == 3  # nothing sent for the rows that do not fit


def test_message_lists_get_their_defined_outcome(workflow: Workflow) -> None:
    def user(text: str | None) -> dict:
        return {"role": "user", "content": text}

    prompts = {
        "valid": [user("hello"), {"role": "assistant", "content": "hi"}, user("and then?")],
        "wrong_role": [user("hello"), {"role": "robot", "content": "beep"}],
        "no_content": [user(None)],
        "empty_list": [],
        "null": None,
        "ten_contexts": [user(words(10 * CONTEXT))],
        "control": [user("nul \x00 esc \x1b[0m tab\tend")],
    }
    path = workflow.workdir / "in.parquet"
    pq.write_table(
        pa.table(
            {"id": list(prompts), "prompt": pa.array(list(prompts.values()), pa.list_(MESSAGE))}
        ),
        path,
    )
    workflow.configure(
        base_config(path, model={"max_context": CONTEXT}, sampling={"max_tokens": MAX_TOKENS})
    )
    workflow.run(timeout=240)
    rows = dict(zip(prompts, workflow.table().to_pylist(), strict=True))
    assert rows["valid"]["error"] is None
    assert rows["valid"]["generations"][0]["text"].startswith("Echo: and then?")
    assert rows["control"]["error"] is None
    assert rows["wrong_role"]["error"] == "invalid_messages: message 1 has invalid role 'robot'"
    assert rows["no_content"]["error"] == "invalid_messages: message 0 has no content"
    assert rows["empty_list"]["error"].startswith("empty_prompt:")
    assert rows["null"]["error"].startswith("empty_prompt:")
    # message lists are not cut: the engine refuses the request (as vLLM does), for good
    assert rows["ten_contexts"]["error"].startswith("http_400:")
    assert "maximum context length is 512 tokens" in rows["ten_contexts"]["error"]
    stats = workflow.stats()
    assert stats["rows_failed_by_kind"] == {
        "invalid_messages": 2,
        "empty_prompt": 2,
        "http_400": 1,
    }
    assert stats["requests"].get("retries", 0) == 0


@pytest.mark.parametrize(
    ("name", "content", "line"),
    [
        ("in.jsonl", b'{"prompt": "fine"}\n{"prompt": "bad \xff\xfe bytes"}\n', 2),
        ("in.csv", b'prompt,id\nfine,1\nstill fine,2\n"bad \xff bytes",3\n', 4),
    ],
)
def test_text_that_is_not_utf8_stops_the_plan(
    workflow: Workflow, name: str, content: bytes, line: int
) -> None:
    path = workflow.workdir / name
    path.write_bytes(content)
    workflow.configure(base_config(path))
    proc = workflow.run(check=False)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("dataforge: ")]
    assert lines, proc.stderr[-2000:]
    assert f"column 'prompt' of {path} line {line} is not valid UTF-8" in lines[0]
    assert not (workflow.results / "data").exists()
    assert "generate_chunk" not in proc.stderr + proc.stdout


def test_a_long_prompt_is_cut_around_other_template_columns(workflow: Workflow) -> None:
    """`[[DOCUMENT]]` is cut so that the request fits with the other columns kept whole."""
    path = workflow.workdir / "in.parquet"
    notes = [words(150), "short note", None]
    prompts = [words(10 * CONTEXT), words(10 * CONTEXT), "fits"]
    pq.write_table(pa.table({"prompt": prompts, "note": notes}), path)
    workflow.configure(
        base_config(
            path,
            model={"max_context": CONTEXT},
            sampling={"max_tokens": MAX_TOKENS},
            prompt={"template": "Note: [[note]] Text: [[DOCUMENT]]"},
        )
    )
    workflow.run(timeout=240)
    rows = workflow.table().to_pylist()
    for row, note in zip(rows, notes, strict=True):
        assert row["error"] is None, row["error"]
        (gen,) = row["generations"]
        assert gen["text"].startswith(" ".join(["Echo:", "Note:", *(note or "Text:").split()[:6]]))
        assert gen["prompt_tokens"] + MAX_TOKENS <= CONTEXT  # it fits with the note whole
    assert rows[0]["generations"][0]["prompt_tokens"] > CONTEXT - MAX_TOKENS - 20  # cut to fit
    assert workflow.stats()["rows_prompt_truncated"] == 2
