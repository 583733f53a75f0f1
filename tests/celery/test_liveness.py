"""What a caller learns when the worker, or Redis, goes away mid-call: each test has its
own Redis and its own workers (killed, stopped and restarted here), never the session's.

A killed worker's calls end with RemoteWorkerLost within a bounded time and no
timeout=; a pool process killed ends its call the same way while the worker lives on;
a reply that could not be stored (Redis down) ends with RemoteResultLost, the function
having run once; calls still queued when a worker restarts run once, on the new one.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from redisserver import RedisServer, start_redis
from worker import Worker, start_worker

import wove
from wove import RemoteResultLost, RemoteWorkerLost, weave
from wove.contrib.celery import CeleryEnv
from wove.environments import get_env

pytestmark = [pytest.mark.slow]

ENV = "liveness"
#: The defaults: a lease of 2 s renewed every 0.5 s; lost within 2 * (2 + 0.5) s.
BOUND = 2 * (2.0 + 0.5)


@dataclass
class Cluster:
    """A Redis of its own, its workers, and a client app (registered as ``liveness``)."""

    directory: Path
    redis: RedisServer
    app: Celery
    workers: list[Worker] = field(default_factory=list)

    def start_worker(self, concurrency: int = 2) -> Worker:
        worker = start_worker(
            "celery_testapp",
            broker_url=self.redis.url,
            env_extra={},
            directory=self.directory,
            concurrency=concurrency,
            label_prefix="wove-liveness",
        )
        self.workers.append(worker)
        return worker

    def restart_redis(self, down: float) -> None:
        """Stop Redis, wait ``down`` seconds, start it again on the same port (empty)."""
        self.redis.stop()
        time.sleep(down)
        self.redis = start_redis(self.directory / "redis", port=self.redis.port)


@pytest.fixture
def cluster(tmp_path: Path, celery_app: Any) -> Iterator[Cluster]:
    import celery_testapp  # (imported by the session fixture) the workers' keys

    redis = start_redis(tmp_path / "redis")
    app = Celery("wove_liveness", broker=redis.url, backend=redis.url, set_as_current=False)
    made = Cluster(tmp_path, redis, app)
    previous = _registered(ENV)
    remove = wove.register_env(ENV, CeleryEnv(app, keys=celery_testapp.WOVE_KEYS))
    try:
        app.conf.update(
            task_serializer="json",
            result_serializer="json",
            accept_content=["json"],
            broker_connection_retry_on_startup=True,
            broker_transport_options={"visibility_timeout": 3600},
        )
        yield made
    finally:
        remove()
        if previous is not None:
            wove.register_env(ENV, previous)
        try:
            for worker in made.workers:
                worker.stop()  # by its process group
        finally:
            made.redis.stop()  # by its PID
            app.close()


def _registered(name: str) -> Any:
    try:
        return get_env(name)
    except wove.InvalidOptionError:
        return None


def _wait_for(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


class Background:
    """One action on a thread of the test (the weave blocks this one); its error is
    raised again by :meth:`join`."""

    def __init__(self, action: Callable[[], None]) -> None:
        self.error: BaseException | None = None
        self.done_at = 0.0

        def run() -> None:
            try:
                action()
                self.done_at = time.monotonic()
            except BaseException as error:
                self.error = error

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def join(self) -> None:
        self._thread.join(60)
        if self.error is not None:
            raise self.error


def _still_works() -> None:
    with weave(x=20) as w:

        @w.do(env=ENV)
        def doubled(x: int) -> int:
            return x * 2

    assert w.result.doubled == 40


@pytest.mark.timeout(120)
def test_sigkill_of_the_whole_worker_group_ends_the_block_with_worker_lost(
    cluster: Cluster,
) -> None:
    worker = cluster.start_worker(concurrency=2)
    started = cluster.directory / "started"

    def kill_when_both_run() -> None:
        _wait_for(lambda: len(_lines(started)) == 2, "both calls to start")
        os.killpg(worker.pid, signal.SIGKILL)

    killer = Background(kill_when_both_run)
    with pytest.raises(RemoteWorkerLost) as caught, weave() as w:  # no timeout=

        @w.do(env=ENV)
        def first() -> None:
            with open(started, "a") as out:
                out.write(f"{os.getpid()}\n")
            time.sleep(600)

        @w.do(env=ENV)
        def second() -> None:
            with open(started, "a") as out:
                out.write(f"{os.getpid()}\n")
            time.sleep(600)

    lost_after = time.monotonic() - killer.done_at
    killer.join()
    error = caught.value
    assert error.may_have_started is True
    assert "was lost" in str(error)
    assert "may have started" in str(error)
    # The documented bound, with room for a loaded machine.
    assert lost_after < BOUND + 10, lost_after
    print(f"\nliveness: RemoteWorkerLost {lost_after:.2f} s after SIGKILL (bound {BOUND:g} s)")
    _wait_for(lambda: not worker.group_pids(), "the killed group to be gone")

    cluster.start_worker()  # a new worker on the same Redis takes new calls
    _still_works()


@pytest.mark.timeout(120)
def test_one_pool_process_killed_ends_its_call_and_the_worker_lives_on(
    cluster: Cluster,
) -> None:
    worker = cluster.start_worker(concurrency=2)
    started = cluster.directory / "started"
    victims: list[int] = []

    def kill_the_pool_process() -> None:
        _wait_for(lambda: len(_lines(started)) == 1, "the call to start")
        victims.append(int(_lines(started)[0]))
        os.kill(victims[0], signal.SIGKILL)

    killer = Background(kill_the_pool_process)
    with pytest.raises(RemoteWorkerLost) as caught, weave() as w:

        @w.do(env=ENV)
        def doomed() -> None:
            with open(started, "a") as out:
                out.write(f"{os.getpid()}\n")
            time.sleep(600)

    killer.join()
    assert caught.value.may_have_started is True
    assert victims[0] != worker.pid  # a pool process, not the parent
    assert worker.process.poll() is None  # the parent survived
    _still_works()  # and serves the next call (on a new pool process)


@pytest.mark.timeout(120)
def test_redis_down_while_the_reply_is_stored_is_result_lost_and_ran_once(
    cluster: Cluster,
) -> None:
    cluster.start_worker(concurrency=2)
    runs = cluster.directory / "runs"
    go = cluster.directory / "go"

    def outage() -> None:
        _wait_for(lambda: len(_lines(runs)) == 1, "the call to start")
        cluster.redis.stop()
        go.touch()  # the function returns while Redis is down
        cluster.restart_redis(down=5.0)

    stopper = Background(outage)
    with pytest.raises(RemoteResultLost) as caught, weave() as w:

        @w.do(env=ENV, retries=2)  # not idempotent: a lost result is not resent
        def counted() -> int:
            with open(runs, "a") as out:
                out.write("ran\n")
            while not go.exists():
                time.sleep(0.01)
            raise ValueError("the function's own error, which never reached the caller")

    stopper.join()
    error = caught.value
    assert error.may_have_started is True
    assert "reply could not be stored" in str(error)
    assert "ValueError" not in error.remote_type
    assert _lines(runs) == ["ran"]  # once: not resent, not redelivered
    _still_works()


@pytest.mark.timeout(180)
def test_calls_still_queued_when_the_worker_restarts_run_once_on_the_new_one(
    cluster: Cluster,
) -> None:
    worker = cluster.start_worker(concurrency=1)
    runs = cluster.directory / "runs"

    def restart() -> None:
        _wait_for(lambda: len(_lines(runs)) >= 1, "the first call to start")
        worker.process.send_signal(signal.SIGTERM)  # a warm shutdown: it finishes its call
        worker.process.wait(60)
        _wait_for(lambda: not worker.group_pids(), "the old worker to be gone")
        cluster.start_worker(concurrency=1)

    restarter = Background(restart)
    with weave() as w:  # no timeout=: the queued calls wait for a worker

        @w.do(range(4), env=ENV)
        def counted(item: int) -> int:
            with open(runs, "a") as out:
                out.write(f"{item}\n")
            time.sleep(1.0)
            return item * 10

    restarter.join()
    assert w.result.counted == [0, 10, 20, 30]
    assert sorted(_lines(runs)) == ["0", "1", "2", "3"]  # each ran once


@pytest.mark.timeout(60)
def test_a_call_no_worker_took_is_not_lost_it_waits_for_its_timeout(cluster: Cluster) -> None:
    # No worker at all: the call stays queued, unclaimed, past the lost-worker bound.
    began = time.monotonic()
    with pytest.raises(wove.TaskTimeout), weave() as w:

        @w.do(env=ENV, timeout=BOUND + 3)
        def queued() -> None:
            pass

    assert time.monotonic() - began >= BOUND + 3
