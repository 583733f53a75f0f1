"""Workload 8: peak memory of a 100,000-item mapped async no-op task, above import,
against the same with raw ``asyncio.gather``.

Each side runs in a fresh interpreter (``python -m bench.memory wove|gather``) that
imports asyncio and Wove, builds the item list, then starts ``tracemalloc`` and reports
the peak of traced memory while ``asyncio.run(...)`` runs the work.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import tracemalloc
from collections.abc import Callable, Coroutine
from typing import Any

from wove import weave

from .harness import Row, Workload

SIZE = 100_000
SIDES = ("wove", "gather")
RUNS = 3  # tracemalloc's count is nearly deterministic; each run is a fresh process


async def _noop(item: int) -> int:
    return item


def _mains(items: list[int]) -> dict[str, Callable[[], Coroutine[Any, Any, Any]]]:
    async def with_wove() -> Any:
        async with weave() as w:

            @w.do(items)
            async def echoed(item: int) -> int:
                return item

        return w.result.final

    async def with_gather() -> Any:
        return await asyncio.gather(*(_noop(item) for item in items))

    return {"wove": with_wove, "gather": with_gather}


def peak_above_import(side: str) -> int:
    """Bytes: the peak of memory allocated while running ``side`` once, in this process."""
    items = list(range(SIZE))
    main = _mains(items)[side]
    tracemalloc.start()
    try:
        result = asyncio.run(main())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    if result != items:
        raise AssertionError(f"memory ({side}): wrong result")
    return peak


def _start(side: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.memory", side],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _peak_of(process: subprocess.Popen[str], side: str) -> int:
    out, err = process.communicate()
    if process.returncode:
        raise RuntimeError(f"python -m bench.memory {side} failed:\n{err}")
    return int(json.loads(out)["peak"])


def _measure(runs: int) -> list[Row]:
    peaks: dict[str, list[int]] = {side: [] for side in SIDES}
    for _ in range(RUNS):
        # Memory is not timing: both sides may run at once, one per core.
        processes = {side: _start(side) for side in SIDES}
        for side, process in processes.items():
            peaks[side].append(_peak_of(process, side))
    return [
        Row(
            name="memory",
            wove=statistics.median(peaks["wove"]),
            baseline=statistics.median(peaks["gather"]),
            unit="B",
            target=1.5,
            runs=RUNS,
            note=f"{SIZE:,} items, tracemalloc peak, fresh process",
        )
    ]


WORKLOADS = [
    Workload(
        "memory",
        "100,000-item mapped async no-op, peak memory above import / raw asyncio.gather",
        _measure,
    )
]


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in SIDES:
        sys.exit(f"usage: python -m bench.memory {{{'|'.join(SIDES)}}}")
    print(json.dumps({"side": sys.argv[1], "peak": peak_above_import(sys.argv[1])}))
