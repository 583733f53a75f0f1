"""Workloads 6 and 7: wall time against the ideal, where tasks wait rather than compute.

* 200 items each sleeping 0.1 s (``time.sleep`` in sync tasks, ``asyncio.sleep`` in async
  ones) against the ideal 0.1 s.
* An uneven DAG (slow ``a``; fast ``b``; slow ``c(b)``; ``d(a, c)``) against its critical
  path, 0.2 s: ``c`` must not wait for ``a``.

The async rows time the whole ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from wove import weave

from .harness import MIN_RUNS, Row, Workload, against_constant, check

ITEMS = list(range(200))
NAP = 0.1
SLOW = 0.2


# --- 200 sleeps -------------------------------------------------------------------------


def _sleeps_sync() -> Any:
    with weave() as w:

        @w.do(ITEMS)
        def napped(item: int) -> int:
            time.sleep(NAP)
            return item

    return w.result.final


async def _sleeps_async() -> Any:
    async with weave() as w:

        @w.do(ITEMS)
        async def napped(item: int) -> int:
            await asyncio.sleep(NAP)
            return item

    return w.result.final


def _measure_sleeps(runs: int) -> list[Row]:
    runs = MIN_RUNS  # each run is dominated by the sleep: more runs say nothing new
    check([_sleeps_sync(), asyncio.run(_sleeps_async())], ITEMS, "sleep")
    return [
        against_constant(
            "sleep-sync", wove=_sleeps_sync, ideal=NAP, target=1.3, runs=runs, note="ideal 0.1 s"
        ),
        against_constant(
            "sleep-async",
            wove=lambda: asyncio.run(_sleeps_async()),
            ideal=NAP,
            target=1.3,
            runs=runs,
            note="ideal 0.1 s",
        ),
    ]


# --- uneven DAG -------------------------------------------------------------------------


def _dag_sync() -> Any:
    with weave() as w:

        @w.do
        def a() -> str:
            time.sleep(SLOW)
            return "a"

        @w.do
        def b() -> str:
            return "b"

        @w.do
        def c(b: str) -> str:
            time.sleep(SLOW)
            return b + "c"

        @w.do
        def d(a: str, c: str) -> str:
            return a + c

    return w.result.final


async def _dag_async() -> Any:
    async with weave() as w:

        @w.do
        async def a() -> str:
            await asyncio.sleep(SLOW)
            return "a"

        @w.do
        async def b() -> str:
            return "b"

        @w.do
        async def c(b: str) -> str:
            await asyncio.sleep(SLOW)
            return b + "c"

        @w.do
        async def d(a: str, c: str) -> str:
            return a + c

    return w.result.final


def _measure_dag(runs: int) -> list[Row]:
    runs = MIN_RUNS
    check([_dag_sync(), asyncio.run(_dag_async())], "abc", "dag")
    return [
        against_constant(
            "dag-sync", wove=_dag_sync, ideal=SLOW, target=1.05, runs=runs, note="path 0.2 s"
        ),
        against_constant(
            "dag-async",
            wove=lambda: asyncio.run(_dag_async()),
            ideal=SLOW,
            target=1.05,
            runs=runs,
            note="path 0.2 s",
        ),
    ]


WORKLOADS = [
    Workload(
        "sleep", "200 items each sleeping 0.1 s, sync and async / the ideal 0.1 s", _measure_sleeps
    ),
    Workload(
        "dag", "uneven DAG a; b; c(b); d(a, c), sync and async / its critical path", _measure_dag
    ),
]
