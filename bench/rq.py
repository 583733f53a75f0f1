"""The RQ workloads: Wove's RQ environment against raw RQ on the same Redis and workers.

Each workload starts its own Redis (bench.celery.services loads the tests' helper) and
two ``rq worker`` processes (``SimpleWorker``: each job runs in the worker's process;
the default worker forks a work horse per job, which costs tens of milliseconds on this
machine and would hide what either side adds), loading ``bench.rq_settings``; both
sides use the same queue and workers, their runs interleaved, after a warm-up.
Everything started is stopped by PID afterwards.

- ``rq-roundtrip``: one trivial remote task per weave, one after another, against
  ``queue.enqueue(add, 1, 2)`` then ``job.latest_result(timeout=...)``; per task.
- ``rq-throughput-1000``: a task mapped over ``range(1000)`` with ``env="bench-rq"``
  (each item its own job) against 1,000 ``enqueue`` then every ``latest_result``; per
  task.

Targets <= 1.5.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from .celery.services import _helper, _terminated_as_exit
from .harness import Row, Skipped, Workload, check, interleaved, per_call

REPO = Path(__file__).resolve().parents[1]
WORKERS = 2
#: Jobs run in the worker's process: RQ's default worker forks a work horse per job,
#: tens of milliseconds here, which would hide what either side adds.
WORKER_CLASS = "rq.worker.SimpleWorker"
ROUNDTRIPS = 100  # sequential round trips per run, a side
BLOCK = 20
MAPPED = 1000
TIMEOUT = 120  # seconds a raw result may take (a stuck worker must not hang the bench)


def _rqworker() -> ModuleType:
    name = "_wove_bench_rqworker"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "tests" / "rq" / "rqworker.py")
    if spec is None or spec.loader is None:
        raise Skipped("no RQ test helper at tests/rq/rqworker.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def _started() -> Iterator[tuple[Any, Any]]:
    """The raw side's queue and ``add``, with Redis, the workers and Wove's environment
    running; all stopped afterwards."""
    try:
        import redis  # noqa: F401
        import rq  # noqa: F401
    except ImportError as exc:
        raise Skipped(f'RQ is not installed (pip install "wove[rq]"): {exc}') from None
    redisserver = _helper("redisserver")
    with _terminated_as_exit(), tempfile.TemporaryDirectory(prefix="wove-bench-rq-") as tmp:
        try:
            server = redisserver.start_redis(Path(tmp) / "redis")
        except redisserver.RedisUnavailable as exc:
            raise Skipped(f"redis-server is not installed: {exc}") from None
        workers: list[Any] = []
        try:
            os.environ["WOVE_TEST_RQ_URL"] = server.url
            from rq import Queue

            from . import rq_settings

            if server.url != rq_settings.REDIS_URL:  # a second workload: a new Redis
                import importlib

                rq_settings = importlib.reload(rq_settings)
            for _ in range(WORKERS):
                workers.append(
                    _rqworker().start_rq_worker(
                        server.url,
                        rq_settings.QUEUE,
                        Path(tmp),
                        settings="bench.rq_settings",
                        paths=(str(REPO),),
                        logging_level="WARNING",
                        worker_class=WORKER_CLASS,
                    )
                )
            yield Queue(rq_settings.QUEUE, connection=rq_settings.env.connection), rq_settings
        finally:
            for worker in workers:
                worker.stop()
            server.stop()
            os.environ.pop("WOVE_TEST_RQ_URL", None)


def _wove_roundtrip(env: str) -> int:
    from wove import weave

    with weave(x=1, y=2) as w:

        @w.do(env=env)
        def total(x: int, y: int) -> int:
            return x + y

    return int(w.result.total)


def _measure_roundtrip(runs: int) -> list[Row]:
    with _started() as (queue, settings):

        def raw() -> int:
            job = queue.enqueue(settings.add, 1, 2)
            return int(job.latest_result(timeout=TIMEOUT).return_value)

        def wove_side() -> int:
            return _wove_roundtrip(settings.ENV)

        check([wove_side(), raw()], 3, "rq-roundtrip")

        sides = {"wove": wove_side, "raw": raw}
        median = per_call(sides, runs * ROUNDTRIPS, BLOCK)
    wove, plain = median["wove"], median["raw"]
    return [
        Row(
            name="rq-roundtrip",
            wove=wove,
            baseline=plain,
            unit="s",
            target=1.5,
            runs=runs * ROUNDTRIPS // BLOCK,
            note=f"one trivial remote task per weave / enqueue(add, 1, 2) then "
            f"latest_result(), median per task: {wove * 1e3:.2f} ms / {plain * 1e3:.2f} ms; "
            f"same Redis and {WORKERS} rq SimpleWorkers",
        )
    ]


def _measure_throughput(runs: int) -> list[Row]:
    with _started() as (queue, settings):

        def raw() -> list[Any]:
            jobs = [queue.enqueue(settings.add, i, 0) for i in range(MAPPED)]
            return [job.latest_result(timeout=TIMEOUT).return_value for job in jobs]

        def wove_side() -> list[int]:
            from wove import weave

            with weave() as w:

                @w.do(range(MAPPED), env=settings.ENV)
                def plus(item: int) -> int:
                    return item + 0

            return list(w.result.plus)

        check([wove_side(), raw()], list(range(MAPPED)), "rq-throughput-1000")
        median = {
            name: value / MAPPED
            for name, value in interleaved({"wove": wove_side, "raw": raw}, runs).items()
        }
    wove, plain = median["wove"], median["raw"]
    return [
        Row(
            name="rq-throughput-1000",
            wove=wove,
            baseline=plain,
            unit="s",
            target=1.5,
            runs=runs,
            note=f"1,000-item mapped remote task / 1,000 enqueue then latest_result(), per "
            f"task: {wove * 1e3:.2f} ms / {plain * 1e3:.2f} ms, i.e. {1 / wove:.0f} / "
            f"{1 / plain:.0f} tasks/s; same Redis and {WORKERS} rq SimpleWorkers",
        )
    ]


WORKLOADS = [
    Workload(
        "rq-roundtrip",
        f"one trivial task per weave on RQ, per task / raw RQ enqueue() then "
        f"latest_result() (one Redis, {WORKERS} rq SimpleWorkers)",
        _measure_roundtrip,
    ),
    Workload(
        "rq-throughput-1000",
        f"a task mapped over range({MAPPED}) on RQ, per task / {MAPPED} raw enqueue() "
        f"then latest_result()",
        _measure_throughput,
    ),
]

__all__ = ["WORKLOADS"]
