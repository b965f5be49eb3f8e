"""Example 3: CPU-heavy preprocessing in a process pool shared by all rows of a server.

    .venv/bin/snakemake --cores all --configfile config/examples/process_pool.yaml

`rollout.shared_context: examples.rollouts.process_pool:pool_context` builds one
`ProcessPoolExecutor` per server (group of chunks), not per chunk or row, and dataforge closes
it when the server stops, also on failure, so no worker outlives the run. The event loop
stays free to keep the engine busy while the workers crunch: each row's text is analysed in
the pool (here word statistics and key terms, a stand-in for parsing, rendering or
retrieval), and the analysis goes into the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import re
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from dataforge.rollout import Generate

STOP_WORDS = frozenset(
    """a an and are as at be by for from has have how in is it its of on or that the this to
    was were what when where which who why will with you your""".split()  # noqa: SIM905
)


@contextlib.contextmanager
def pool_context() -> Iterator[dict[str, Any]]:
    """One worker per CPU the server may use (Slurm's allocation, not the node's size).

    "spawn": a fork of the server's process would copy its threads and event loop.
    """
    workers = len(os.sched_getaffinity(0))
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield {"pool": pool}


def analyse(text: str, terms: int = 5) -> dict[str, Any]:
    """Runs in a worker process: word and sentence counts and the most frequent key terms."""
    words = re.findall(r"[a-z0-9']+", text.lower())
    counts = Counter(w for w in words if w not in STOP_WORDS and len(w) > 2)
    sentences = [s for s in re.split(r"[.!?]+", text) if s.strip()]
    return {
        "words": len(words),
        "sentences": len(sentences),
        "key_terms": [w for w, _ in counts.most_common(terms)],
    }


async def rollout(
    row: dict[str, Any], generate: Generate, pool: ProcessPoolExecutor, column: str = "prompt"
) -> dict[str, Any]:
    text = row[column]
    analysis = await asyncio.get_running_loop().run_in_executor(pool, analyse, text)
    hint = ", ".join(analysis["key_terms"]) or "none"
    prompt = f"{text}\n\n(Key terms: {hint}. Answer in at most {4 * analysis['words'] + 20} words.)"
    result = await generate({"messages": [{"role": "user", "content": prompt}]})
    return {"analysis": analysis, "text": result.text, "finish_reason": result.finish_reason}
