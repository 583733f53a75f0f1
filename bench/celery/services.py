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
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from ..harness import Skipped

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests" / "celery"
START_TIMEOUT = 60.0
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
    """``celery -A bench.celery.benchapp worker`` (prefork, concurrency 2, WARNING), ready."""
    helpers = _helper("worker")
    label = f"wove-bench-{secrets.token_hex(4)}"
    name = f"{label}@{socket.gethostname()}"
    log_path = directory / f"{label}.log"
    command = [
        *(sys.executable, "-m", "celery", "-A", "bench.celery.benchapp", "worker"),
        *("--loglevel=WARNING", f"--concurrency={CONCURRENCY}", f"--pool={POOL}"),
        *("--without-gossip", "--without-mingle", "--without-heartbeat"),
        *("-n", name),
    ]
    env = dict(os.environ)
    # The repository first (bench.celery.benchapp, and the same Wove as this process
    # when it runs from the source tree), then where this process imports Wove from.
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), *helpers._wove_root(), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    env["PYTHONUNBUFFERED"] = "1"
    env["WOVE_BENCH_REDIS_URL"] = broker_url
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Worker.stop() signals the whole group
        )
    worker = helpers.Worker(process, name, log_path, broker_url)
    try:
        _wait_until_ready(worker)
    except BaseException:
        worker.stop()
        raise
    return worker


def _wait_until_ready(worker: Any) -> None:
    from celery import Celery

    deadline = time.monotonic() + START_TIMEOUT
    probe = Celery("wove-bench-probe", broker=worker.broker_url, set_as_current=False)
    try:
        while True:
            if worker.process.poll() is not None:
                raise RuntimeError(
                    f"celery worker {worker.name} exited with {worker.process.returncode}; "
                    f"the end of {worker.log_path}:\n{worker.log_tail()}"
                )
            if probe.control.ping(destination=[worker.name], timeout=0.5):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"celery worker {worker.name} did not answer a ping within "
                    f"{START_TIMEOUT:.0f} s; the end of {worker.log_path}:\n{worker.log_tail()}"
                )
    finally:
        probe.close()


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
