"""The output rows: what dataforge adds to every input row.

Each output row keeps every input column unchanged and adds `row` (global index), `generations`
(one struct per successful completion; with `rollout.function`, `rollout`: the JSON of what
the function returned) and `error` (null on success). `dataforge.chunkfile` writes the table
with its record in the footer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:
    from dataforge.generation import ChunkRows

# The columns dataforge adds (an input column of the same name is refused by the plan).
OUTPUT_COLUMNS = ("row", "generations", "error")
ROLLOUT_OUTPUT_COLUMNS = ("row", "rollout", "error")  # with rollout.function
GENERATION_TYPE = pa.struct(
    [
        ("text", pa.string()),
        ("reasoning", pa.string()),
        ("finish_reason", pa.string()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
    ]
)


def build_chunk_table(rows: pa.Table, start: int, out: ChunkRows) -> pa.Table:
    """Input rows plus `row`, `generations` and `error` from what they came back with.

    With a rollout function (`out.rollout_json`), the JSON of each row's rollout output is the
    `rollout` column instead of `generations` (its requests still count in the statistics).
    """
    n = rows.num_rows
    table = rows.append_column("row", pa.array(range(start, start + n), type=pa.int64()))
    if out.rollout_json is None:
        generations = pa.array(out.generations, pa.list_(GENERATION_TYPE))
        table = table.append_column("generations", generations)
    else:
        table = table.append_column("rollout", pa.array(out.rollout_json, pa.string()))
    return table.append_column("error", pa.array(out.errors, pa.string()))
