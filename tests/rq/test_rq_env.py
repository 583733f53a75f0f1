"""The RQ environment against a real Redis and a real ``rq worker`` (see conftest.py).

A task's marker file is written beside and renamed: a reader never sees it half-written.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from redis import Redis
from rq.job import Job
from rqworker import RQWorker, start_rq_worker

import wove
from wove import (
    InvalidOptionError,
    RemoteNeverRan,
    RemoteTaskError,
    RemoteWorkerLost,
    TaskTimeout,
    WoveResult,
    weave,
)
from wove.contrib.remote.envelope import derive_key_id
from wove.contrib.rq import RQEnv, lost_within

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("rq_worker")]


def wait_for(predicate: Any, timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return found


@pytest.fixture
def redis(rq_redis: Any) -> Iterator[Redis]:
    client = Redis.from_url(rq_redis.url)
    try:
        yield client
    finally:
        client.close()


@pytest.mark.timeout(60)
def test_tasks_run_on_the_worker_with_closures_and_dependencies() -> None:
    factor = 7

    with weave(base=3) as w:

        @w.do(env="rq-test")
        def first(base: int) -> tuple[int, int]:
            from rq import get_current_job

            job = get_current_job()
            assert job is not None
            return base * factor, os.getpid()

        @w.do
        def local(first: tuple[int, int]) -> int:
            return first[0] + 1

        @w.do(["a", "b"], env="rq-test")
        async def each(item: str, local: int) -> str:  # async: on the worker's own loop
            return f"{item}{local}"

    assert w.result.first[0] == 21
    assert w.result.first[1] != os.getpid()
    assert w.result.each == ["a22", "b22"]


@pytest.mark.timeout(60)
def test_the_functions_own_exception_comes_back() -> None:
    with pytest.raises(LookupError, match="no such author") as caught, weave() as w:

        @w.do(env="rq-test")
        def author() -> None:
            raise LookupError("no such author")

    notes = "\n".join(getattr(caught.value, "__notes__", []))
    assert "remote traceback (RQ job" in notes
    assert "author" in notes


@pytest.mark.timeout(60)
def test_an_environment_the_worker_does_not_know_is_refused_as_never_ran(
    rq_settings: ModuleType,
) -> None:
    stranger = RQEnv(rq_settings.REDIS_URL, keys=rq_settings.KEYS, queue=rq_settings.QUEUE)
    remove = wove.register_env("rq-unknown", stranger)
    try:
        with pytest.raises(RemoteNeverRan, match="unknown-env") as refused, weave() as w:

            @w.do(env="rq-unknown")
            def never() -> None:
                raise AssertionError("must not run")

    finally:
        remove()
    assert refused.value.may_have_started is False


@pytest.mark.timeout(60)
def test_an_envelope_signed_with_another_key_is_refused(rq_settings: ModuleType) -> None:
    # The real key's id, another secret: a forged signature, not an unknown key.
    key_id = derive_key_id(rq_settings.KEYS[0].encode())
    forger = RQEnv(
        rq_settings.REDIS_URL, keys={key_id: "forged-" + "f" * 40}, queue=rq_settings.QUEUE
    )
    remove = wove.register_env("rq-test", forger)  # the worker keeps the real keys
    try:
        with pytest.raises(RemoteNeverRan, match="signature"), weave() as w:

            @w.do(env="rq-test")
            def never() -> None:
                raise AssertionError("must not run")

    finally:
        remove()
        wove.register_env("rq-test", rq_settings.test_env)


def _job_of(marker: Path) -> str:
    return str(wait_for(marker.exists, what="the job to start") and marker.read_text())


@pytest.mark.timeout(90)
def test_a_timed_out_call_is_stopped_on_the_worker(tmp_path: Path, redis: Redis) -> None:
    marker = tmp_path / "job"

    with pytest.raises(TaskTimeout), weave() as w:

        @w.do(env="rq-test", timeout=2)
        def stuck() -> None:
            from rq import get_current_job

            job = get_current_job()
            assert job is not None
            marker.with_suffix(".part").write_text(job.id)
            marker.with_suffix(".part").replace(marker)
            time.sleep(60)

    job_id = _job_of(marker)
    wait_for(
        lambda: Job.fetch(job_id, connection=redis).get_status() in ("stopped", "failed"),
        what="the job to be stopped",
    )

    with weave() as w:  # the worker goes on

        @w.do(env="rq-test")
        def again() -> str:
            return "fine"

    assert w.result.again == "fine"


@pytest.mark.timeout(90)
def test_a_queued_call_cancelled_never_runs(
    tmp_path: Path, rq_settings: ModuleType, redis: Redis
) -> None:
    from rq import Queue

    started = tmp_path / "started"
    ran = tmp_path / "ran"
    queue = Queue(rq_settings.QUEUE, connection=redis)

    with pytest.raises(ValueError, match="boom"), weave() as w:

        @w.do(env="rq-test")
        def blocker() -> None:  # holds the session's only worker
            started.touch()
            time.sleep(3)

        @w.do
        def blocker_started() -> None:
            wait_for(started.exists, what="the blocker to start")

        @w.do(env="rq-test")
        def waiting(blocker_started: None) -> None:  # queued behind the blocker
            ran.touch()

        @w.do
        def failing(blocker_started: None) -> None:
            wait_for(lambda: queue.count >= 1, what="the second job to be queued")
            raise ValueError("boom")

    # The worker takes jobs in order: once a call sent now has run, a cancelled job
    # still in the queue would have run before it.
    with weave() as w:

        @w.do(env="rq-test")
        def probe() -> str:
            return "after"

    assert w.result.probe == "after"
    assert not ran.exists()


@pytest.mark.timeout(120)
def test_a_lost_worker_fails_its_call_within_the_lease(
    rq_redis: Any, rq_settings: ModuleType, tmp_path: Path
) -> None:
    worker: RQWorker = start_rq_worker(rq_redis.url, rq_settings.LOST_QUEUE, tmp_path / "w")
    marker = tmp_path / "job"
    try:
        killed_at: list[float] = []

        def kill_when_started() -> None:
            horse = int(wait_for(marker.exists, what="the job to start") and marker.read_text())
            # The worker's group, and the work horse (RQ gives it a session of its own):
            # a lost machine.
            os.kill(horse, signal.SIGKILL)
            worker.kill()
            killed_at.append(time.monotonic())

        with (
            pytest.raises(RemoteWorkerLost, match="stopped renewing its lease") as lost,
            weave() as w,
        ):

            @w.do(env="rq-lost")  # no timeout
            def held() -> None:
                marker.with_suffix(".part").write_text(str(os.getpid()))
                marker.with_suffix(".part").replace(marker)
                time.sleep(300)

            @w.do
            def killer() -> None:
                kill_when_started()

        noticed = time.monotonic() - killed_at[0]
        print(f"lost worker noticed {noticed:.1f} s after the kill (lease {rq_settings.LEASE:g} s)")
    finally:
        worker.stop()
    assert lost.value.may_have_started is True
    # Generous: the bound is the lease and two polls; a loaded machine adds to it.
    assert noticed < 3 * lost_within(rq_settings.lost_env)


@pytest.mark.timeout(120)
def test_a_call_longer_than_its_lease_runs_to_its_end(
    rq_redis: Any, rq_settings: ModuleType, tmp_path: Path
) -> None:
    # Longer than the bound after which the caller declares a silent worker lost: only
    # the worker's renewals of its lease keep the calls alive. Two calls in a row: the
    # renewing thread serves the second job after the first one's lease was released.
    held = lost_within(rq_settings.lost_env) + 1
    worker: RQWorker = start_rq_worker(rq_redis.url, rq_settings.LOST_QUEUE, tmp_path / "w")
    try:
        with weave() as w:

            @w.do(env="rq-lost")
            def first() -> int:
                time.sleep(held)
                return os.getpid()

            @w.do(env="rq-lost")
            def second(first: int) -> int:
                time.sleep(held)
                return first

    finally:
        worker.stop()
    assert w.result.second == w.result.first


@pytest.mark.timeout(60)
def test_a_detached_weave_runs_on_the_worker(tmp_path: Path) -> None:
    out = tmp_path / "done"

    def done(result: WoveResult) -> None:
        out.with_suffix(".part").write_text(str(result.total))
        out.with_suffix(".part").replace(out)

    with weave(background=True, env="rq-test", on_done=done, base=2) as w:

        @w.do
        def total(base: int) -> int:
            return base * 21

    assert w.remote_id is not None
    assert wait_for(out.exists, what="on_done")
    assert out.read_text() == "42"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"connection": 42}, "connection must be a redis.Redis client or a Redis URL"),
        ({"queue": ""}, "queue must be an RQ queue's name"),
        ({"lease": 0.5}, "lease must be a number of seconds >= 1"),
        ({"max_age": 0}, "max_age must be a number of seconds > 0"),
    ],
)
def test_bad_options_are_refused(kwargs: dict[str, Any], message: str) -> None:
    options: dict[str, Any] = {
        "connection": "redis://127.0.0.1:1/0",
        "keys": ["k" * 40],
        **kwargs,
    }
    with pytest.raises(InvalidOptionError, match=message):
        RQEnv(**options)


def test_remote_task_error_is_the_base_of_the_rq_errors() -> None:
    assert issubclass(RemoteNeverRan, RemoteTaskError)
    assert issubclass(RemoteWorkerLost, RemoteTaskError)
