"""stats.json, the dataset card with its figures, and Snakemake's report, on one dummy-engine run
with known token counts."""

from __future__ import annotations

import base64
import json
import os
import random
import re
from pathlib import Path

import pytest
import yaml
from conftest import Workflow, base_config, check_rows_exactly_once, write_prompts

from dataforge.stats import aggregate

pytestmark = pytest.mark.e2e

ROWS, SIZE, COMPLETION = 60, 20, 10


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Workflow:
    """60 rows in 3 chunks on one server; every completion is 10 tokens, 2 rollouts per row,
    and the row whose prompt holds "number 3" is refused (HTTP 400)."""
    wf = Workflow(tmp_path_factory.mktemp("card"))
    config = base_config(
        write_prompts(wf.workdir / "in.parquet", ROWS),
        chunks={"size": SIZE, "per_server": 3},
        engine={
            "dummy": {"completion_tokens": COMPLETION, "reject_marker": "question 17 "},
            "env": {"MY_API_TOKEN": "sekrit-value", "OMP_NUM_THREADS": "2"},
        },
        sampling={"rollouts": 2, "temperature": 0.5},
        prompt={"system": "Answer briefly.", "template": "Q: [[DOCUMENT]]"},
    )
    wf.configure(config)
    wf.run("--cores", "2")
    return wf


def test_stats_hold_the_exact_counts(run: Workflow) -> None:
    check_rows_exactly_once(run, ROWS)
    s = run.stats()
    assert (s["rows"], s["rows_ok"], s["rows_failed"], s["chunks"]) == (60, 59, 1, 3)
    assert s["rows_failed_by_kind"] == {"http_400": 1}
    assert s["rollouts"] == 2 * 59 and s["finish_reasons"] == {"stop": 118}
    c = s["completion_tokens"]
    assert (c["n"], c["total"], c["min"], c["max"], c["mean"]) == (118, 1180, 10, 10, 10.0)
    assert (c["p50"], c["p90"], c["p99"]) == (10, 10, 10)
    # the dummy counts words + 4 per message: the system prompt (2) and "Q: question i …" (8)
    p = s["prompt_tokens"]
    assert (p["n"], p["total"], p["min"], p["max"]) == (118, 118 * 18, 18, 18)
    assert sum(c["hist"]) == 118 and c["hist"][s["token_histogram_bin_edges"].index(8)] == 118
    # one server (3 chunks per server), its engine started once, on no GPU: no GPU figures
    [engine] = s["engines"]
    assert engine["servers"] == ["slot-0"] and engine["chunks"] == 3 and engine["gpus"] == 0
    assert engine["startup_s"] is not None and engine["startup_s"] >= 0
    assert s["model_loads"] == 1 and s["gpu"] is None
    assert [r["chunk"] for r in s["per_chunk"]] == ["00000", "00001", "00002"]
    assert [r["rows"] for r in s["per_chunk"]] == [20, 20, 20]
    prov = s["provenance"]
    assert prov["sampling"]["temperature"] == 0.5 and prov["system"] == "Answer briefly."
    assert prov["engine"]["tensor_parallel_size"] == 1 and prov["engine"]["kind"] == "dummy"
    assert prov["engine"]["env"] == ["MY_API_TOKEN", "OMP_NUM_THREADS"]  # names, no values
    assert s["started"] <= s["finished"]


def test_stats_merge_the_chunks_in_any_order(run: Workflow) -> None:
    chunks = run.chunks()
    plan = json.loads((run.results / "plan.json").read_text())
    first = aggregate(chunks, plan)
    assert first == run.stats()  # what the rule wrote
    for seed in range(3):
        shuffled = chunks[:]
        random.Random(seed).shuffle(shuffled)
        assert aggregate(shuffled, plan) == first


def test_the_card_loads_and_links_valid_figures(run: Workflow) -> None:
    from huggingface_hub import DatasetCard
    from matplotlib.image import imread

    text = (run.results / "README.md").read_text()
    card = DatasetCard(text)
    [config] = card.data.configs
    pattern = config["data_files"][0]["path"]
    assert sorted(run.results.glob(pattern)) == run.chunks()
    assert card.data.size_categories == ["n<1K"]
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert figures == ["plots/completion_tokens.png", "plots/finish_reasons.png"]
    for rel in figures:
        image = imread(run.results / rel)  # decodes the PNG
        assert image.shape[0] > 100 and image.shape[1] > 300, rel
    # the numbers, the prompt and how to reproduce the run
    assert "| Completion | 1,180 | 10.0 | 10 | 10 | 10 | 10 | 10 |" in text
    assert "`http_400` 1" in text and "Q: [[DOCUMENT]]" in text and "Answer briefly." in text
    assert "--configfile" in text and "max_tokens: 64" in text
    assert "MY_API_TOKEN: <hidden>" in text and "sekrit-value" not in text
    assert "OMP_NUM_THREADS: '2'" in text


def test_snakemake_report_holds_the_figures_and_tables(run: Workflow) -> None:
    proc = run.run("--report", "report.html")
    assert "Report created" in proc.stderr, proc.stderr[-2000:]
    assert "Missing metadata" not in proc.stderr  # the service files' (snakemake_compat)
    html = (run.workdir / "report.html").read_text()
    png = base64.b64encode((run.results / "plots" / "completion_tokens.png").read_bytes())
    assert png[:200].decode() in html  # the figure itself is embedded
    assert "finish_reasons.png" in html and "stats.html" in html
    tables = (run.results / "plots" / "stats.html").read_text()
    assert '<th>completion</th><td class="n">118</td><td class="n">1,180</td>' in tables


def test_the_input_license_reaches_the_card_front_matter() -> None:
    from dataforge.card import front_matter

    stats = {"rows": 5}
    plan = {
        "input": {"dataset": "bob/prompts", "split": "train"},
        "source": {"kind": "hub", "license": "apache-2.0", "language": ["en", "fr"]},
    }
    front = yaml.safe_load(front_matter(stats, plan, {"model": "org/model", "model_source": "hub"}))
    assert front["license"] == "apache-2.0" and front["language"] == ["en", "fr"]
    assert front["source_datasets"] == ["bob/prompts"] and "model" in front["tags"]
    local = yaml.safe_load(
        front_matter(stats, {**plan, "source": {"kind": "local"}}, {"model": "models/x"})
    )
    assert "license" not in local and "source_datasets" not in local


def test_figures_of_a_run_without_completions(tmp_path: Path) -> None:
    from collections import Counter

    from matplotlib.image import imread

    from dataforge.plots import write_figures

    stats = {"provenance": {}, "finish_reasons": {}, "rows_failed_by_kind": {"http_400": 3},
             "rows": 3}  # fmt: skip
    out = {"completion": tmp_path / "c.png", "finish": tmp_path / "f.png"}
    write_figures(stats, Counter(), out)
    assert all(imread(p).size for p in out.values())


def test_figure_legends_sit_outside_the_bars(tmp_path: Path, monkeypatch) -> None:
    from collections import Counter

    from dataforge import plots

    drawn = []
    save = plots._save

    def keep(plt, fig, ax, xlabel, path):
        fig.canvas.draw()
        drawn.append((ax.get_legend().get_window_extent(), ax.get_window_extent()))
        save(plt, fig, ax, xlabel, path)

    monkeypatch.setattr(plots, "_save", keep)
    counts = Counter({n: 5 for n in range(1, 60)} | {64: 400})  # most answers hit max_tokens
    plots.completion_histogram(counts, tmp_path / "c.png", 64)
    [(legend, axes)] = drawn
    assert legend.y0 >= axes.y1 - 1  # above the plotting area, not over the tall bar


def test_reproduce_command_and_loading_work_from_anywhere(tmp_path: Path) -> None:
    """Two runs started from the checkout with --directory (no -s): each card's command,
    pasted in another directory, finds its run; datasets loads each run's own rows."""
    import subprocess
    import sys

    from conftest import REPO, SNAKEMAKE

    for name, rows in (("one", 30), ("two", 50)):
        run_dir = tmp_path / name
        run_dir.mkdir()
        config = base_config(write_prompts(run_dir / "in.parquet", rows), chunks={"size": 20})
        (run_dir / "c.yaml").write_text(yaml.safe_dump(config))
        subprocess.run(
            [SNAKEMAKE, "--directory", str(run_dir), "--configfile", str(run_dir / "c.yaml"),
             "--cores", "2"],
            cwd=REPO, check=True, capture_output=True, timeout=180,
        )  # fmt: skip
    for name in ("one", "two"):
        card = (tmp_path / name / "results" / "README.md").read_text()
        command = re.search(r"The run was started with:\n\n```bash\n(.+)\n```", card).group(1)
        assert command.startswith(f"cd {REPO} && ")
        dry = subprocess.run(
            ["bash", "-c", f"{command} -n"], cwd="/", capture_output=True, text=True, timeout=120
        )
        assert dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr, dry.stderr
    load = (
        "import sys, datasets\n"
        "for d in sys.argv[1:]:\n"
        "    print(datasets.load_dataset(d, split='train').num_rows)\n"
    )
    folders = [str(tmp_path / n / "results") for n in ("one", "two", "one")]
    out = subprocess.run(
        [sys.executable, "-c", load, *folders],
        capture_output=True, text=True, timeout=120, check=True,
        env={**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert out.stdout.split() == ["30", "50", "30"]
