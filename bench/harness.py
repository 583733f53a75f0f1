"""Timing helpers shared by the workload modules."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
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


def interleaved(sides: Mapping[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median seconds of a call of each side, over ``rounds`` calls each, their order
    rotated (and reversed every other round) so a drifting machine weighs on every side."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for round_ in range(rounds):
        shift = round_ % len(names)
        order = names[shift:] + names[:shift]
        if round_ % 2:
            order.reverse()
        for name in order:
            gc.collect()
            start = time.perf_counter()
            sides[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def per_call(
    sides: Mapping[str, Callable[[], object]], calls: int, block: int, warm: int = 1
) -> dict[str, float]:
    """Median seconds of one call of each side, ``calls`` calls a side timed in
    interleaved blocks of ``block`` (one call is too short to time alone), after ``warm``
    warm-up blocks (connections, subscriptions, a worker pool)."""

    def repeated(one: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(block):
                one()

        return run

    blocks = {name: repeated(one) for name, one in sides.items()}
    for run in blocks.values():
        for _ in range(warm):
            run()
    return {name: value / block for name, value in interleaved(blocks, calls // block).items()}
