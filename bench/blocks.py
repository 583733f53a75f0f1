"""Workload 5: the cost of one ``with weave()`` block holding one trivial sync task,
against ``asyncio.run()`` of an empty coroutine (per block / per call, 500 in a row)."""

from __future__ import annotations

import asyncio
from typing import Any

from wove import weave

from .harness import Row, Workload, check, compare

BLOCKS = 500


def _one_block() -> Any:
    with weave() as w:

        @w.do
        def answer() -> int:
            return 42

    return w.result.final


async def _empty() -> None:
    return None


def _one_asyncio_run() -> None:
    asyncio.run(_empty())


def _measure(runs: int) -> list[Row]:
    check([_one_block()], 42, "block")
    return [
        compare(
            "block",
            wove=_one_block,
            baseline=_one_asyncio_run,
            target=1.0,
            runs=runs,
            inner=BLOCKS,
            note=f"per block, {BLOCKS} in a row",
        )
    ]


WORKLOADS = [
    Workload(
        "block",
        "with weave() holding one trivial sync task / asyncio.run() of an empty coroutine",
        _measure,
    )
]
