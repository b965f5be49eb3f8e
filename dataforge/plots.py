"""The dataset card's figures (PNG files in results/plots/, next to the card).

Plots are drawn from the exact token counts that the chunk files' records carry, so the histogram
has the resolution the data has (one bar per value for short completions), not the coarse
power-of-two bins of `stats.json`.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

FIGSIZE = (7.0, 3.6)
DPI = 110
COLOR = "#4C72B0"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display; the plots are files
    import matplotlib.pyplot as plt

    return plt


def preload() -> None:
    """Import matplotlib now (a background thread of Snakemake's process, at the run's start):
    the card, at the run's end, then does not wait the half second its import takes."""
    _pyplot()


def histogram_bins(counts: Counter[int], max_bins: int = 40) -> list[float]:
    """Bin edges over [min, max]: one bin per value when there are few distinct lengths,
    otherwise `max_bins` equal bins of whole tokens."""
    low, high = min(counts), max(counts)
    width = max(1, -(-(high - low + 1) // max_bins))  # ceil
    edges = list(range(low, high + width + 1, width))
    return [e - 0.5 for e in edges]


def completion_histogram(counts: Counter[int], path: str | Path, max_tokens: int | None) -> None:
    """Histogram of completion lengths (tokens per completion), with max_tokens marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    if counts:
        values, weights = zip(*sorted(counts.items()), strict=True)
        ax.hist(values, bins=histogram_bins(counts), weights=weights, color=COLOR)
        n = sum(weights)
        mean = sum(v * w for v, w in counts.items()) / n
        ax.axvline(mean, color="#DD8452", linestyle="--", label=f"mean {mean:,.1f}")
        if max_tokens and max(counts) >= 0.8 * max_tokens:
            ax.axvline(max_tokens, color="#C44E52", label=f"max_tokens {max_tokens:,}")
        # Above the axes, beside the title: inside, it hid the bars at max_tokens.
        ax.legend(frameon=False, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2)
        ax.set_title(f"Completion length ({n:,} completions)", loc="left")
    else:
        ax.text(0.5, 0.5, "no completions", ha="center", va="center", transform=ax.transAxes)
        ax.set_title("Completion length")
    ax.set_ylabel("completions")
    _save(plt, fig, ax, "completion tokens", path)


def finish_reason_chart(
    finish_reasons: dict[str, int], failed_by_kind: dict[str, int], rows: int, path: str | Path
) -> None:
    """Horizontal bars: completions per finish reason (share of completions), and failed rows
    per error kind (share of rows)."""
    plt = _pyplot()
    completions = sum(finish_reasons.values()) or 1
    bars = [(f"finish: {k}", v, v / completions, COLOR) for k, v in sorted(finish_reasons.items())]
    bars += [
        (f"failed: {k}", v, v / (rows or 1), "#C44E52") for k, v in sorted(failed_by_kind.items())
    ]
    if not bars:
        bars = [("none", 0, 0.0, COLOR)]
    fig, ax = plt.subplots(figsize=(FIGSIZE[0], max(1.8, 0.6 + 0.45 * len(bars))), dpi=DPI)
    labels, values, shares, colors = zip(*reversed(bars), strict=True)
    ax.barh(labels, values, color=colors)
    for i, (v, share) in enumerate(zip(values, shares, strict=True)):
        ax.text(v, i, f" {v:,} ({100 * share:.1f}%)", va="center")
    ax.set_xlim(0, max(values) * 1.3 or 1)
    ax.set_title("Finish reasons and failures")
    _save(plt, fig, ax, "count", path)


def _save(plt: Any, fig: Any, ax: Any, xlabel: str, path: str | Path) -> None:
    """The common finish of both figures: x label, no top/right frame, PNG, figure closed."""
    ax.set_xlabel(xlabel)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def write_figures(
    stats: dict[str, Any], completion_counts: Counter[int], outputs: dict[str, str | Path]
) -> None:
    """The card's two figures (`completion` and `finish` paths in `outputs`)."""
    max_tokens = (stats["provenance"].get("sampling") or {}).get("max_tokens")
    completion_histogram(completion_counts, outputs["completion"], max_tokens)
    finish_reason_chart(
        stats["finish_reasons"], stats["rows_failed_by_kind"], stats["rows"], outputs["finish"]
    )
