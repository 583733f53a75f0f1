"""The process pool workloads: ``ProcessEnv`` against a raw ``ProcessPoolExecutor``.

Both sides have the same number of worker processes (``WORKERS``, 2), started the same
way (forkserver where available), warm before timing, their runs interleaved.

- ``process-cpu-4x0.2s``: 4 CPU-bound tasks of about 0.2 s each (a pure-Python loop,
  calibrated on this machine) in one weave (``@w.do(range(4), env="process")``) against
  ``list(executor.map(burn, range(4)))``; the same work in 2 threads is in the note (the
  GIL serializes it). Target <= 1.5.
- ``process-roundtrip``: one trivial task per weave, one after another, against
  ``executor.submit(add, 1, 2).result()``; per task. Target <= 1.5. The note splits
  Wove's time into the weave's own (the same block with its task local) and the pool's
  call.
- ``process-throughput-1000``: a task mapped over ``range(1000)`` with
  ``env="process"`` against 1,000 ``executor.submit`` then every ``result()``; per task.
  Target <= 1.5.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from .harness import Row, Workload, check, interleaved, per_call

WORKERS = 2
CPU_TASKS = 4
CPU_SECONDS = 0.2
ROUNDTRIPS = 200  # sequential round trips per run, a side
BLOCK = 25  # ... timed in interleaved blocks of this many
MAPPED = 1000
ENV = "bench-process"


def burn(loops: int) -> int:
    """CPU-bound pure Python: ``loops`` iterations of a small sum (holds the GIL)."""
    total = 0
    for i in range(loops):
        total += i % 7
    return total


def add(x: int, y: int) -> int:
    return x + y


def _calibrate() -> int:
    """How many loops of :func:`burn` take about ``CPU_SECONDS`` here."""
    loops = 200_000
    while True:
        start = time.perf_counter()
        burn(loops)
        elapsed = time.perf_counter() - start
        if elapsed > 0.05:
            return int(loops * CPU_SECONDS / elapsed)
        loops *= 2


def _method() -> str:
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


@contextmanager
def _pools() -> Iterator[ProcessPoolExecutor]:
    import wove
    from wove.contrib.process import ProcessEnv

    env = ProcessEnv(workers=WORKERS, start_method=_method())
    remove = wove.register_env(ENV, env)
    executor = ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context(_method()))
    try:
        env.start()
        yield executor
    finally:
        remove()
        env.close()
        executor.shutdown()


# --- process-cpu-4x0.2s -------------------------------------------------------------------


def _measure_cpu(runs: int) -> list[Row]:
    from wove import weave

    loops = _calibrate()
    expected = [burn(loops)] * CPU_TASKS

    def wove_side() -> list[int]:
        with weave() as w:

            @w.do(range(CPU_TASKS), env=ENV)
            def burned(item: int) -> int:
                return burn(loops)

        return list(w.result.burned)

    with _pools() as executor, ThreadPoolExecutor(WORKERS) as threads:

        def raw() -> list[int]:
            return list(executor.map(burn, [loops] * CPU_TASKS))

        def threaded() -> list[int]:
            return list(threads.map(burn, [loops] * CPU_TASKS))

        check([wove_side(), raw(), threaded()], expected, "process-cpu-4x0.2s")
        median = interleaved({"wove": wove_side, "raw": raw, "threads": threaded}, max(runs, 5))
    return [
        Row(
            name="process-cpu-4x0.2s",
            wove=median["wove"],
            baseline=median["raw"],
            unit="s",
            target=1.5,
            runs=max(runs, 5),
            note=f"{CPU_TASKS} CPU-bound tasks of ~{CPU_SECONDS:g} s on {WORKERS} worker "
            f"processes: {median['wove']:.3f} s / raw ProcessPoolExecutor "
            f"{median['raw']:.3f} s; the same work in {WORKERS} threads "
            f"{median['threads']:.3f} s ({median['threads'] / median['wove']:.1f}x Wove's)",
        )
    ]


# --- process-roundtrip ----------------------------------------------------------------


def _wove_roundtrip() -> int:
    from wove import weave

    with weave(x=1, y=2) as w:

        @w.do(env=ENV)
        def total(x: int, y: int) -> int:
            return add(x, y)

    return int(w.result.total)


def _local_roundtrip() -> int:
    """The same weave with its task local (async, as a routed remote task is): what the
    weave itself costs, without the pool."""
    from wove import weave

    with weave(x=1, y=2) as w:

        @w.do
        async def total(x: int, y: int) -> int:
            return add(x, y)

    return int(w.result.total)


def _measure_roundtrip(runs: int) -> list[Row]:
    with _pools() as executor:

        def raw() -> int:
            return executor.submit(add, 1, 2).result()

        check([_wove_roundtrip(), raw(), _local_roundtrip()], 3, "process-roundtrip")

        sides = {
            "wove": _wove_roundtrip,
            "raw": raw,
            "local": _local_roundtrip,
        }
        median = per_call(sides, runs * ROUNDTRIPS, BLOCK)
    wove, plain, local = median["wove"], median["raw"], median["local"]
    return [
        Row(
            name="process-roundtrip",
            wove=wove,
            baseline=plain,
            unit="s",
            target=1.5,
            runs=runs * ROUNDTRIPS // BLOCK,
            note=f"one trivial task per weave / executor.submit(add, 1, 2).result(), "
            f"median per task: {wove * 1e6:.0f} µs / {plain * 1e6:.0f} µs "
            f"(+{(wove - plain) * 1e6:.0f} µs); of Wove's, the weave itself (the same "
            f"block, its task local and async) {local * 1e6:.0f} µs, the pool's call "
            f"{(wove - local) * 1e6:.0f} µs; {WORKERS} worker processes each",
        )
    ]


# --- process-throughput-1000 ----------------------------------------------------------


def _wove_mapped() -> list[int]:
    from wove import weave

    with weave() as w:

        @w.do(range(MAPPED), env=ENV)
        def plus(item: int) -> int:
            return add(item, 0)

    return list(w.result.plus)


def _measure_throughput(runs: int) -> list[Row]:
    with _pools() as executor:

        def raw() -> list[Any]:
            futures = [executor.submit(add, i, 0) for i in range(MAPPED)]
            return [future.result() for future in futures]

        check([_wove_mapped(), raw()], list(range(MAPPED)), "process-throughput-1000")
        median = {
            name: value / MAPPED
            for name, value in interleaved({"wove": _wove_mapped, "raw": raw}, runs).items()
        }
    wove, plain = median["wove"], median["raw"]
    return [
        Row(
            name="process-throughput-1000",
            wove=wove,
            baseline=plain,
            unit="s",
            target=1.5,
            runs=runs,
            note=f"1,000-item mapped task / 1,000 executor.submit then result(), per task: "
            f"{wove * 1e6:.0f} µs / {plain * 1e6:.0f} µs, i.e. {1 / wove:.0f} / "
            f"{1 / plain:.0f} tasks/s; {WORKERS} worker processes each",
        )
    ]


WORKLOADS = [
    Workload(
        "process-cpu-4x0.2s",
        f"{CPU_TASKS} CPU-bound tasks of ~{CPU_SECONDS:g} s with env='process' "
        f"({WORKERS} workers) / the same in a raw ProcessPoolExecutor({WORKERS})",
        _measure_cpu,
    ),
    Workload(
        "process-roundtrip",
        "one trivial task per weave in a worker process, per task / "
        "ProcessPoolExecutor.submit().result()",
        _measure_roundtrip,
    ),
    Workload(
        "process-throughput-1000",
        f"a task mapped over range({MAPPED}) with env='process', per task / "
        f"{MAPPED} ProcessPoolExecutor.submit() then result()",
        _measure_throughput,
    ),
]

__all__ = ["WORKLOADS"]
