"""A throwaway Redis and a real ``celery worker`` for one Celery workload.

Both reuse the Celery tests' helpers, loaded by path (tests/celery is no package):
``tests/celery/redisserver.py`` starts ``redis-server`` on a free port of 127.0.0.1
(without persistence) and stops it by its PID; ``tests/celery/worker.py`` gives the
``Worker`` handle, which stops the worker's whole process group (the parent and its
prefork children) by its id. The worker is started here rather than by the tests'
``start_worker``, which runs the tests' app and logs every task at INFO: this one runs
``bench.celery.benchapp`` with ``--loglevel=WARNING``, and is ready once it answers a
remote-control ``ping`` over the broker (its "ready." line is logged at INFO).
"""

from __future__ import annotations

import contextlib
import importlib.util
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from ..harness import Skipped

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests" / "celery"
#: The worker of both sides: prefork, two processes (the project's machine and CI have
#: two cores).
POOL = "prefork"
CONCURRENCY = 2


def _helper(name: str) -> ModuleType:
    """``tests/celery/<name>.py``, loaded by path under a private module name."""
    module_name = f"_wove_bench_celery_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    path = TESTS / f"{name}.py"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None or not path.exists():
        raise Skipped(f"no Celery test helper at {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class Services:
    """The running Redis and worker of a workload, and the client side's app."""

    redis: Any  # redisserver.RedisServer
    worker: Any  # worker.Worker
    app: Any  # celery.Celery
    add: Any  # the app's bench.add task


def start_worker(broker_url: str, directory: Path) -> Any:
    """``celery -A bench.celery.benchapp worker`` (prefork, concurrency 2, WARNING: no
    task is logged), ready once it answers a ping over the broker."""
    return _helper("worker").start_worker(
        "bench.celery.benchapp",
        broker_url=broker_url,
        env_extra={"WOVE_BENCH_REDIS_URL": broker_url},
        directory=directory,
        concurrency=CONCURRENCY,
        pool=POOL,
        loglevel="WARNING",
        cwd=REPO,  # bench.celery.benchapp imports from the repository
        label_prefix="wove-bench",
    )


@contextlib.contextmanager
def _terminated_as_exit() -> Iterator[None]:
    """SIGTERM (``timeout``, a CI runner giving up) raises SystemExit in the main thread
    meanwhile, so that the servers are still stopped: the worker is in a session of its
    own and would outlive this process."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def exit_(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, exit_)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def started() -> Iterator[Services]:
    """Redis, a worker and the client app for one workload, all stopped afterwards;
    ``Skipped`` without ``redis-server`` or Celery."""
    with _terminated_as_exit():
        yield from _services()


def _services() -> Iterator[Services]:
    try:
        import celery  # noqa: F401
        import cloudpickle  # noqa: F401
        import redis  # noqa: F401
    except ImportError as exc:
        raise Skipped(f'Celery is not installed (pip install "wove[celery]"): {exc}') from None
    redisserver = _helper("redisserver")
    from . import benchapp

    with tempfile.TemporaryDirectory(prefix="wove-bench-celery-") as directory:
        try:
            server = redisserver.start_redis(Path(directory) / "redis")
        except redisserver.RedisUnavailable as exc:
            raise Skipped(f"redis-server is not installed: {exc}") from None
        try:
            worker = start_worker(server.url, Path(directory))
            try:
                app, add = benchapp.make_app(server.url)
                remove = benchapp.register(app)
                try:
                    yield Services(server, worker, app, add)
                finally:
                    remove()
                    app.close()
            finally:
                worker.stop()
        finally:
            server.stop()
