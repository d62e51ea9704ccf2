"""Pattern text for RE2, Arrow's regex engine, shared by text_stats and validation's kernels."""

from __future__ import annotations

from collections.abc import Iterable


def re2_class(points: Iterable[int]) -> str:
    """An RE2 character class of exactly these code points (at least one), written as ranges."""
    ordered = sorted(set(points))
    runs: list[str] = []
    start = previous = ordered[0]
    for point in ordered[1:] + [-1]:
        if point != previous + 1:
            runs.append(f"\\x{{{start:x}}}" if start == previous else f"\\x{{{start:x}}}-\\x{{{previous:x}}}")
            start = point
        previous = point
    return f"[{''.join(runs)}]"
