"""Exponential back-off, one pure function for every retry loop (relay, consumer, operator)."""

from __future__ import annotations

# Past this many doublings the delay is at its cap anyway; keeps 2.0 ** n finite.
_MAX_DOUBLINGS = 30


def exponential_delay(failures: int, base: float, cap: float) -> float:
    """The wait after `failures` consecutive failures: none before the first, then base,
    2 x base, 4 x base, ... never above `cap` (unless `base` itself is larger: the first wait is
    always `base`)."""
    if failures <= 0:
        return 0.0
    return min(max(cap, base), base * 2.0 ** min(failures - 1, _MAX_DOUBLINGS))
