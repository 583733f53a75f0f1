"""Interleaved timing for the overhead comparisons, where the difference sought (a few
percent) is smaller than the drift of a shared machine over a few seconds."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable


def per_call(function: Callable[[], object], count: int) -> float:
    """Seconds per call of ``function``, over ``count`` calls in a row."""
    start = time.perf_counter()
    for _ in range(count):
        function()
    return (time.perf_counter() - start) / count


def interleaved(
    first: Callable[[], object], second: Callable[[], object], *, batches: int, count: int
) -> tuple[float, float]:
    """Median seconds per call of ``first`` and of ``second``: ``batches`` short batches
    of ``count`` calls each, in the order ABBA ABBA... so that a machine getting slower or
    faster weighs on both sides alike."""
    times: tuple[list[float], list[float]] = ([], [])
    sides = (first, second)
    for round_ in range(batches):
        gc.collect()
        order = (0, 1) if round_ % 2 == 0 else (1, 0)
        for side in order:
            times[side].append(per_call(sides[side], count))
    return statistics.median(times[0]), statistics.median(times[1])
