"""Workloads 1 and 2: a 1,000-item mapped no-op task and a reducer.

Async: against ``asyncio.gather`` of the same 1,000 coroutines (plus the same sum), the
whole ``asyncio.run(...)`` timed on both sides. Sync: against a warm
``ThreadPoolExecutor.map`` of the same size (plus the same sum).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from wove import weave

from .harness import Row, Workload, check, compare

SIZE = 1_000
ITEMS = list(range(SIZE))
EXPECTED = sum(ITEMS)


async def _noop_async(item: int) -> int:
    return item


def _noop_sync(item: int) -> int:
    return item


# --- async ------------------------------------------------------------------------------


async def _wove_async() -> Any:
    async with weave() as w:

        @w.do(ITEMS)
        async def echoed(item: int) -> int:
            return item

        @w.do
        async def total(echoed: list[int]) -> int:
            return sum(echoed)

    return w.result.final


async def _gather_async() -> int:
    echoed = await asyncio.gather(*(_noop_async(item) for item in ITEMS))
    return sum(echoed)


def _measure_async(runs: int) -> list[Row]:
    check([asyncio.run(_wove_async()), asyncio.run(_gather_async())], EXPECTED, "map-async")
    return [
        compare(
            "map-async",
            wove=lambda: asyncio.run(_wove_async()),
            baseline=lambda: asyncio.run(_gather_async()),
            target=1.3,
            runs=runs,
            inner=20,
        )
    ]


# --- sync -------------------------------------------------------------------------------


def _wove_sync() -> Any:
    with weave() as w:

        @w.do(ITEMS)
        def echoed(item: int) -> int:
            return item

        @w.do
        def total(echoed: list[int]) -> int:
            return sum(echoed)

    return w.result.final


def _measure_sync(runs: int) -> list[Row]:
    with ThreadPoolExecutor() as pool:

        def pool_map() -> int:
            return sum(pool.map(_noop_sync, ITEMS))

        check([_wove_sync(), pool_map()], EXPECTED, "map-sync")
        return [
            compare(
                "map-sync",
                wove=_wove_sync,
                baseline=pool_map,
                target=1.5,
                runs=runs,
                inner=20,
                note=f"pool of {pool._max_workers} threads",
            )
        ]


WORKLOADS = [
    Workload(
        "map-async",
        "1,000-item mapped async no-op + reducer / asyncio.gather (whole asyncio.run)",
        _measure_async,
    ),
    Workload(
        "map-sync",
        "1,000-item mapped sync no-op + reducer / warm ThreadPoolExecutor.map",
        _measure_sync,
    ),
]
