"""Timelines for the comparison page: when each step ran, drawn as bars on one time scale.

The sequential version times its steps with :class:`Stopwatch`; the Wove version's
steps come from the weave's trace records (``wove.collect()``). Both become a
:class:`Timeline`, rows of bars placed by their start and end in milliseconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.db import connection

from wove import TraceRecord


@dataclass(slots=True)
class Row:
    name: str
    bars: list[tuple[float, float]] = field(default_factory=list)  # (start_ms, end_ms)
    queries: int = 0

    @property
    def span_ms(self) -> float:
        """From the first call's start to the last call's end."""
        return max(end for _, end in self.bars) - min(start for start, _ in self.bars)


@dataclass(slots=True)
class Timeline:
    rows: list[Row]
    total_ms: float

    def ordered_like(self, other: Timeline) -> Timeline:
        """The same rows, in ``other``'s order of names (the rest after them)."""
        rank = {row.name: i for i, row in enumerate(other.rows)}
        rows = sorted(self.rows, key=lambda row: rank.get(row.name, len(rank)))
        return Timeline(rows, self.total_ms)

    def drawn(self, scale_ms: float) -> list[dict[str, object]]:
        """Rows with each bar's left offset and width in percent of ``scale_ms``."""
        scale = max(scale_ms, 1e-9)
        return [
            {
                "name": row.name,
                "span_ms": row.span_ms,
                "calls": len(row.bars),
                "queries": row.queries,
                "bars": [
                    {
                        "left": f"{100 * start / scale:.2f}",
                        "width": f"{max(100 * (end - start) / scale, 0.3):.2f}",
                        "title": f"{row.name}: {start:.0f}-{end:.0f} ms",
                    }
                    for start, end in row.bars
                ],
            }
            for row in self.rows
        ]


class Stopwatch:
    """Times the steps of plain sequential code: ``with clock.step("books"): ...``."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self._rows: dict[str, Row] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        row = self._rows.setdefault(name, Row(name))

        def count(execute: Callable[..., Any], *args: Any) -> Any:
            row.queries += 1
            return execute(*args)

        begin = time.perf_counter()
        try:
            with connection.execute_wrapper(count):
                yield
        finally:
            row.bars.append((self._ms(begin), self._ms(time.perf_counter())))

    def timeline(self) -> Timeline:
        return Timeline(list(self._rows.values()), self._ms(time.perf_counter()))

    def _ms(self, moment: float) -> float:
        return (moment - self.start) * 1000


def from_records(records: Iterable[TraceRecord], start: float, end: float) -> Timeline:
    """A weave's timeline: a row per task, a bar per call (one per item when mapped)."""
    rows: dict[str, Row] = {}
    for record in sorted(records, key=lambda r: r.start):
        row = rows.setdefault(record.task, Row(record.task))
        row.bars.append(((record.start - start) * 1000, (record.end - start) * 1000))
        queries = record.extra.get("queries")  # counted by wove.contrib.django
        if isinstance(queries, int):
            row.queries += queries
    return Timeline(list(rows.values()), (end - start) * 1000)
