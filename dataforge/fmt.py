"""How dataforge writes durations for people (the progress line, `dataforge status`, the
cards)."""

from __future__ import annotations


def duration(seconds: float) -> str:
    """`1 h 02 min`, `3 min 05 s` or `42 s`."""
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h} h {m:02d} min" if h else (f"{m} min {s:02d} s" if m else f"{s} s")


def short_duration(seconds: float | None) -> str:
    """`duration`, with tenths under two minutes (short test and demo runs); n/a for None."""
    if seconds is None:
        return "n/a"
    return f"{seconds:.1f} s" if seconds < 120 else duration(seconds)
