"""The Dask workloads: Wove's Dask environment against raw ``distributed`` on the same
``LocalCluster`` (two worker processes of one thread each, on 127.0.0.1), its runs
interleaved after a warm-up; the cluster is closed afterwards.

- ``dask-roundtrip``: one trivial remote task per weave, one after another, against
  ``client.submit(add, 1, 2, pure=False).result()``; per task.
- ``dask-throughput-1000``: a task mapped over ``range(1000)`` with ``env="bench-dask"``
  (each item its own Dask task) against ``client.gather(client.map(add, ...,
  pure=False))``; per task.

Targets <= 1.5.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from .harness import Row, Skipped, Workload, check, interleaved, per_call

WORKERS = 2
ROUNDTRIPS = 200
BLOCK = 25
MAPPED = 1000
ENV = "bench-dask"


def add(x: int, y: int) -> int:
    return x + y


@contextlib.contextmanager
def _started() -> Iterator[Any]:
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise Skipped(f'Dask is not installed (pip install "wove[dask]"): {exc}') from None
    import wove
    from wove.contrib.dask import DaskEnv

    cluster = LocalCluster(
        n_workers=WORKERS,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",  # None still means :8787; any free port here
    )
    env = DaskEnv(cluster)
    remove = wove.register_env(ENV, env)
    try:
        with Client(cluster, set_as_default=False) as client:
            yield client
    finally:
        remove()
        env.close()
        cluster.close()


def _wove_roundtrip() -> int:
    from wove import weave

    with weave(x=1, y=2) as w:

        @w.do(env=ENV)
        def total(x: int, y: int) -> int:
            return x + y

    return int(w.result.total)


def _measure_roundtrip(runs: int) -> list[Row]:
    with _started() as client:

        def raw() -> int:
            return int(client.submit(add, 1, 2, pure=False).result())

        check([_wove_roundtrip(), raw()], 3, "dask-roundtrip")

        sides = {"wove": _wove_roundtrip, "raw": raw}
        median = per_call(sides, runs * ROUNDTRIPS, BLOCK)
    wove, plain = median["wove"], median["raw"]
    return [
        Row(
            name="dask-roundtrip",
            wove=wove,
            baseline=plain,
            unit="s",
            target=1.5,
            runs=runs * ROUNDTRIPS // BLOCK,
            note=f"one trivial remote task per weave / client.submit(add, 1, 2).result(), "
            f"median per task: {wove * 1e3:.2f} ms / {plain * 1e3:.2f} ms; the same "
            f"LocalCluster ({WORKERS} worker processes)",
        )
    ]


def _measure_throughput(runs: int) -> list[Row]:
    with _started() as client:

        def raw() -> list[int]:
            futures = client.map(add, range(MAPPED), [0] * MAPPED, pure=False)
            return list(client.gather(futures))

        def wove_side() -> list[int]:
            from wove import weave

            with weave() as w:

                @w.do(range(MAPPED), env=ENV)
                def plus(item: int) -> int:
                    return item + 0

            return list(w.result.plus)

        check([wove_side(), raw()], list(range(MAPPED)), "dask-throughput-1000")
        median = {
            name: value / MAPPED
            for name, value in interleaved({"wove": wove_side, "raw": raw}, runs).items()
        }
    wove, plain = median["wove"], median["raw"]
    return [
        Row(
            name="dask-throughput-1000",
            wove=wove,
            baseline=plain,
            unit="s",
            target=1.5,
            runs=runs,
            note=f"1,000-item mapped remote task / client.gather(client.map(add, ...)), per "
            f"task: {wove * 1e6:.0f} µs / {plain * 1e6:.0f} µs, i.e. {1 / wove:.0f} / "
            f"{1 / plain:.0f} tasks/s; the same LocalCluster ({WORKERS} worker processes)",
        )
    ]


WORKLOADS = [
    Workload(
        "dask-roundtrip",
        f"one trivial task per weave on Dask, per task / raw client.submit().result() "
        f"(a LocalCluster of {WORKERS} worker processes)",
        _measure_roundtrip,
    ),
    Workload(
        "dask-throughput-1000",
        f"a task mapped over range({MAPPED}) on Dask, per task / raw "
        f"client.gather(client.map(...))",
        _measure_throughput,
    ),
]

__all__ = ["WORKLOADS"]
