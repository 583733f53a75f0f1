"""The Celery workloads: Wove's remote lane against raw Celery on the same broker and worker.

- ``celery-roundtrip``: the round trip of one remote task. Wove: a ``with weave()``
  block holding one trivial remote task (``@w.do(env="celery")``, returns ``x + y``),
  one block after another; raw Celery: ``add.delay(1, 2).get()``, one after another.
  200 a side per run, timed in interleaved blocks of 25 (ABBA); the median block, per
  task; target <= 1.5.
- ``celery-throughput-1000``: 1,000 trivial remote tasks at once. Wove: one weave with a
  task mapped over ``range(1000)`` with ``env="celery"`` (each item its own Celery task);
  raw Celery: ``[add.delay(i, 0) for i in range(1000)]`` then either ``[r.get() for r
  in results]`` or ``ResultSet(results).join_native()``, whichever is faster (its median)
  being the baseline. One batch of each per run, their order rotated; the median batch,
  per task (the batch / 1,000); target <= 1.5.

Each workload starts its own Redis (broker and result backend) and one ``celery worker``
(prefork pool, concurrency 2, ``--loglevel=WARNING``) running ``bench.celery.benchapp``,
which has both the raw task and Wove's task; both sides use that same worker, their runs
interleaved, after a warm-up. Everything started is stopped by PID when the workload
ends (see services.py); without ``redis-server`` the workloads are reported as skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..harness import Row, Workload, check, interleaved, per_call
from .services import CONCURRENCY, POOL, Services, started

ROUNDTRIPS = 200  # sequential round trips per run, a side
BLOCK = 25  # ... timed in interleaved blocks of this many (8 blocks a side per run)
MAPPED = 1000  # tasks in the throughput workload
TIMEOUT = 120.0  # seconds a raw get() may wait (a stuck worker must not hang the bench)
WORKER = f"{POOL} pool, concurrency {CONCURRENCY}"


# --- celery-roundtrip --------------------------------------------------------------------


def _wove_roundtrip() -> int:
    from wove import weave

    with weave(x=1, y=2) as w:

        @w.do(env="celery")
        def total(x: int, y: int) -> int:
            return x + y

    return int(w.result.total)


def _measure_roundtrip(runs: int) -> list[Row]:
    with started() as running:
        return [_roundtrip(running, runs)]


def _roundtrip(running: Services, runs: int) -> Row:
    add = running.add

    def raw() -> int:
        return int(add.delay(1, 2).get(timeout=TIMEOUT))

    check([_wove_roundtrip(), raw()], 3, "celery-roundtrip")

    sides = {"wove": _wove_roundtrip, "raw": raw}
    # Four warm-up blocks: connections, subscriptions, the worker's pool.
    median = per_call(sides, runs * ROUNDTRIPS, BLOCK, warm=4)
    wove, plain = median["wove"], median["raw"]
    return Row(
        name="celery-roundtrip",
        wove=wove,
        baseline=plain,
        unit="s",
        target=1.5,
        runs=runs * ROUNDTRIPS // BLOCK,
        note=f"one trivial remote task per weave / add.delay(1, 2).get(), {ROUNDTRIPS} a "
        f"run in interleaved blocks of {BLOCK}, median per task: {wove * 1e6:.0f} µs / "
        f"{plain * 1e6:.0f} µs "
        f"(+{(wove - plain) * 1e6:.0f} µs); same Redis and worker ({WORKER})",
    )


# --- celery-throughput-1000 --------------------------------------------------------------


def _wove_mapped() -> list[int]:
    from wove import weave

    with weave() as w:

        @w.do(range(MAPPED), env="celery")
        def plus(item: int) -> int:
            return item + 0

    return list(w.result.plus)


def _measure_throughput(runs: int) -> list[Row]:
    with started() as running:
        return [_throughput(running, runs)]


def _throughput(running: Services, runs: int) -> Row:
    from celery.result import ResultSet

    add = running.add

    def raw_get() -> list[int]:
        results = [add.delay(i, 0) for i in range(MAPPED)]
        return [r.get(timeout=TIMEOUT) for r in results]

    def raw_join() -> list[int]:
        results = [add.delay(i, 0) for i in range(MAPPED)]
        return list(ResultSet(results).join_native(timeout=TIMEOUT))

    expected = list(range(MAPPED))
    check([_wove_mapped(), raw_get(), raw_join()], expected, "celery-throughput-1000")
    sides: dict[str, Callable[[], Any]] = {
        "wove": _wove_mapped,
        "get": raw_get,
        "join_native": raw_join,
    }
    median = {name: value / MAPPED for name, value in interleaved(sides, runs).items()}
    fastest = min(("get", "join_native"), key=median.__getitem__)
    wove, plain = median["wove"], median[fastest]
    raw_ways = ", ".join(
        f"{'[r.get() ...]' if name == 'get' else 'join_native()'} {median[name] * 1e6:.0f} µs"
        for name in ("get", "join_native")
    )
    return Row(
        name="celery-throughput-1000",
        wove=wove,
        baseline=plain,
        unit="s",
        target=1.5,
        runs=runs,
        note=f"1,000-item mapped remote task / 1,000 add.delay(i, 0), then the faster raw "
        f"way ({raw_ways}), per task: {wove * 1e6:.0f} µs / {plain * 1e6:.0f} µs, i.e. "
        f"{1 / wove:.0f} / {1 / plain:.0f} tasks/s; same Redis and worker ({WORKER})",
    )


WORKLOADS = [
    Workload(
        "celery-roundtrip",
        f"one trivial remote task per weave, one after another, per task / raw Celery "
        f"add.delay(1, 2).get() (Redis broker and backend, one worker, {WORKER})",
        _measure_roundtrip,
    ),
    Workload(
        "celery-throughput-1000",
        f"a task mapped over range({MAPPED}) with env='celery', per task / raw Celery: "
        f"{MAPPED} delay() then the faster of get() each and ResultSet.join_native()",
        _measure_throughput,
    ),
]

__all__ = ["WORKLOADS"]
