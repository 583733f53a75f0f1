"""Timing helpers shared by the workload modules."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

MIN_RUNS = 5


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the results table: medians of Wove and of its baseline."""

    name: str
    wove: float
    baseline: float
    unit: str  # "s" for timings (per operation) or "B" for memory
    target: float
    runs: int
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.wove / self.baseline

    @property
    def met(self) -> bool:
        return self.ratio <= self.target


class Skipped(Exception):
    """Raised by a workload that cannot run on this machine (say, PostgreSQL is not
    installed): reported as skipped, with the reason, rather than timed."""


@dataclass(frozen=True, slots=True)
class Workload:
    """A named family member: ``measure(runs)`` returns its rows."""

    name: str
    description: str
    measure: Callable[[int], list[Row]]


def _time(function: Callable[[], object], inner: int) -> float:
    """Seconds per call of ``function``, over ``inner`` calls in a row."""
    gc.collect()
    start = time.perf_counter()
    for _ in range(inner):
        function()
    return (time.perf_counter() - start) / inner


def compare(
    name: str,
    *,
    wove: Callable[[], object],
    baseline: Callable[[], object],
    target: float,
    runs: int,
    inner: int = 1,
    note: str = "",
) -> Row:
    """Median seconds per call of both, one warm-up each, then runs interleaved."""
    wove()
    baseline()
    wove_times: list[float] = []
    baseline_times: list[float] = []
    for _ in range(runs):
        baseline_times.append(_time(baseline, inner))
        wove_times.append(_time(wove, inner))
    return Row(
        name=name,
        wove=statistics.median(wove_times),
        baseline=statistics.median(baseline_times),
        unit="s",
        target=target,
        runs=runs,
        note=note,
    )


def against_constant(
    name: str,
    *,
    wove: Callable[[], object],
    ideal: float,
    target: float,
    runs: int,
    note: str = "",
) -> Row:
    """Median seconds per call of ``wove`` (after a warm-up) against an ideal time."""
    wove()
    times = [_time(wove, 1) for _ in range(runs)]
    return Row(
        name=name,
        wove=statistics.median(times),
        baseline=ideal,
        unit="s",
        target=target,
        runs=runs,
        note=note,
    )


def check(values: Sequence[object], expected: object, what: str) -> None:
    """Fail loudly if a workload computed the wrong thing (a benchmark of a bug)."""
    for value in values:
        if value != expected:
            raise AssertionError(f"{what}: expected {expected!r}, got {value!r}")
