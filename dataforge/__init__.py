"""dataforge: turn a dataset of prompts into a synthetic dataset (Snakemake + vLLM).

The package holds all logic; the workflow's rules and scripts only call into it. Keep this
module free of imports: the per-chunk job imports `dataforge.chunk_client` and must start fast.
"""

__version__ = "0.1.0"
