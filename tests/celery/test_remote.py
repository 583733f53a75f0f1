"""Tasks and detached weaves on a real Celery worker (Redis broker and result backend),
started by the session fixtures in conftest.py."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from celery.result import AsyncResult

import wove
from wove import RemoteTaskError, TaskTimeout, WeaveStateError, weave
from wove.contrib.celery import TASK_NAME, CeleryEnv, EnvelopeError, PayloadTooLarge, capture
from wove.contrib.celery.envelope import seal

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("celery_worker")]


def wait_for(predicate: Any, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_an_inline_closure_runs_on_the_worker_and_its_value_comes_back() -> None:
    factor = 7  # captured by value

    with weave(base=6) as w:

        @w.do(env="celery")
        def product(base: int) -> tuple[int, int]:
            return base * factor, os.getpid()

    value, pid = w.result.product
    assert value == 42
    assert pid != os.getpid()  # it ran in a worker process


def test_local_and_remote_tasks_mix_in_one_graph_by_parameter_name() -> None:
    with weave() as w:

        @w.do
        def numbers() -> list[int]:
            return [1, 2, 3]

        @w.do(env="celery")
        def doubled(numbers: list[int]) -> list[int]:
            return [n * 2 for n in numbers]

        @w.do("numbers", env="celery")
        def squared(item: int) -> tuple[int, int]:
            return item * item, os.getpid()

        @w.do
        async def total(doubled: list[int], squared: list[tuple[int, int]]) -> int:
            return sum(doubled) + sum(value for value, _ in squared)

    assert w.result.doubled == [2, 4, 6]
    assert w.result.total == 12 + 14
    assert {pid for _, pid in w.result.squared} - {os.getpid()}


def test_the_weave_env_sends_every_task_and_env_none_keeps_one_here() -> None:
    with weave(env="celery") as w:

        @w.do
        def there() -> int:
            return os.getpid()

        @w.do(env=None)
        def here() -> int:
            return os.getpid()

    assert w.result.here == os.getpid()
    assert w.result.there != os.getpid()


def test_an_async_caller_awaits_remote_tasks_on_its_loop() -> None:
    async def main() -> Any:
        async with weave() as w:

            @w.do(env="celery")
            async def remote() -> str:  # an async task runs on the worker too
                await asyncio.sleep(0.01)
                return "async there"

        return w.result.remote

    assert asyncio.run(main()) == "async there"


def test_an_exception_of_an_inline_class_comes_back_with_its_type() -> None:
    class OutOfStock(Exception):
        pass

    with pytest.raises(OutOfStock, match="no more copies") as caught, weave() as w:

        @w.do(env="celery")
        def order() -> None:
            raise OutOfStock("no more copies")

    notes = "\n".join(caught.value.__notes__)
    assert "remote traceback (Celery task" in notes
    assert 'raise OutOfStock("no more copies")' in notes  # the worker's traceback
    assert isinstance(w.result.exception, OutOfStock)


def test_an_exception_that_cannot_be_rebuilt_becomes_remote_task_error() -> None:
    class Picky(Exception):
        def __init__(self, code: int, why: str) -> None:  # pickles, cannot be unpickled
            super().__init__(f"{code}: {why}")

    with pytest.raises(RemoteTaskError) as caught, weave() as w:

        @w.do(env="celery")
        def picky() -> None:
            raise Picky(7, "refused")

    error = caught.value
    assert isinstance(error, wove.WoveError)
    assert error.remote_type.endswith("Picky")
    assert error.remote_message == "7: refused"
    assert "raise Picky(7" in (error.remote_traceback or "")


def test_retries_resend_an_idempotent_call_as_for_a_local_task(tmp_path: Path) -> None:
    attempts = tmp_path / "attempts"

    with weave() as w:

        @w.do(env="celery", retries=2, idempotent=True)
        def flaky() -> int:
            with attempts.open("a") as file:
                file.write("x")
            if len(attempts.read_text()) < 3:
                raise ConnectionError("try again")
            return len(attempts.read_text())

    assert w.result.flaky == 3


def _started(marker: Path) -> str:
    """The Celery task id a remote task wrote into ``marker`` once it started."""
    wait_for(
        lambda: marker.exists() and marker.read_text(),
        what=f"{marker.name} to be written by the worker",
    )
    return marker.read_text()


def test_a_failing_weave_revokes_and_stops_its_running_remote_task(
    tmp_path: Path, celery_app: Any
) -> None:
    started, finished = tmp_path / "started", tmp_path / "finished"

    with pytest.raises(LookupError), weave() as w:

        @w.do(env="celery")
        def long() -> None:
            from celery import current_task

            started.write_text(current_task.request.id)
            time.sleep(30)
            finished.write_text("should never happen")

        @w.do
        def fails() -> None:
            _started(started)
            raise LookupError("no such book")

    task_id = started.read_text()
    result = AsyncResult(task_id, app=celery_app)
    wait_for(
        lambda: result.state == "REVOKED", what=f"the remote task to be revoked ({result.state})"
    )
    time.sleep(0.5)
    assert not finished.exists()


def test_a_timeout_raises_task_timeout_and_revokes_the_remote_task(
    tmp_path: Path, celery_app: Any
) -> None:
    started = tmp_path / "started"

    with pytest.raises(TaskTimeout, match="'slow'"), weave() as w:

        @w.do(env="celery", timeout=1.0)
        def slow() -> None:
            from celery import current_task

            started.write_text(current_task.request.id)
            time.sleep(30)

    result = AsyncResult(_started(started), app=celery_app)
    wait_for(lambda: result.state == "REVOKED", what="the timed-out task to be revoked")


def test_a_detached_weave_runs_wholly_on_the_worker_with_on_done_there(tmp_path: Path) -> None:
    report = tmp_path / "report"

    def on_done(result: wove.WoveResult) -> None:
        report.write_text(f"{result.total} {result.pids} {os.getpid()}")

    with weave(background=True, env="celery", on_done=on_done, items=[1, 2, 3]) as w:

        @w.do("items")
        def pids(item: int) -> int:
            return os.getpid()

        @w.do
        def total(items: list[int], pids: list[int]) -> int:
            return sum(items) + len(pids)

    assert w.remote_id
    with pytest.raises(WeaveStateError, match="remote environment 'celery'"):
        w.result  # noqa: B018
    with pytest.raises(WeaveStateError, match="on_done"):
        w.wait(1)
    wait_for(report.exists, what="on_done to run on the worker")
    total, pids, on_done_pid = report.read_text().split(" ", 2)
    assert total == "9"
    assert str(os.getpid()) not in pids  # every task ran on the worker...
    assert on_done_pid != str(os.getpid())  # ...and on_done too


def test_a_payload_over_max_payload_is_refused_naming_what_was_captured() -> None:
    blob = b"x" * 2_000_000

    refused = pytest.raises(PayloadTooLarge, match="captured variable 'blob'")
    with refused as caught, weave() as w:

        @w.do(env="celery")
        def size() -> int:
            return len(blob)

    assert caught.value.limit == 1_000_000
    assert "max_payload" in str(caught.value)


def test_a_result_over_max_payload_comes_back_as_that_error() -> None:
    with pytest.raises(PayloadTooLarge, match="the result of task 'big'"), weave() as w:

        @w.do(env="celery")
        def big() -> bytes:
            return b"y" * 2_000_000


def test_remote_calls_are_traced_on_the_remote_lane() -> None:
    with wove.collect() as records, weave() as w:

        @w.do(env="celery")
        def remote() -> int:
            return 1

    (record,) = records
    assert record.lane == "remote"
    assert record.status == "ok"
    assert record.extra["celery_task"]
    assert record.extra["worker"]


def test_pending_remote_results_hold_no_thread_each() -> None:
    before = threading.active_count()
    seen: list[int] = []

    with weave() as w:

        @w.do(range(40), env="celery")
        def sleepy(item: int) -> int:
            time.sleep(0.2)
            return item

        @w.do
        def count_threads() -> None:
            time.sleep(0.5)  # while most of the 40 calls are still pending
            seen.append(threading.active_count())

    assert w.result.sleepy == list(range(40))
    assert seen[0] <= before + 4  # the waiter, the loop, this task's pool thread


def test_a_tampered_envelope_is_refused_by_the_worker_and_never_run(
    tmp_path: Path, celery_app: Any, celery_worker: Any
) -> None:
    env = CeleryEnv(celery_app, keys=["test-key-" + "x" * 40])
    marker = tmp_path / "ran"

    def harmless() -> str:
        return "fine"

    def malicious() -> None:
        marker.write_text("pwned")

    task_id = "tampered-" + os.urandom(4).hex()
    genuine = seal(env.keyring, "call", task_id, _call_body(harmless))
    forged = dict(genuine)  # the genuine signature over another body
    forged["body"] = seal(env.keyring, "call", task_id, _call_body(malicious))["body"]
    celery_app.send_task(
        TASK_NAME, args=[forged], kwargs={"env": "celery"}, task_id=task_id, ignore_result=True
    )

    result = AsyncResult(task_id, app=celery_app)
    wait_for(lambda: result.state == "FAILURE", what="the worker to refuse the envelope")
    assert "EnvelopeError" in type(result.result).__name__ or "signature" in str(result.result)
    assert not marker.exists()
    wait_for(
        lambda: f"refused the envelope of Celery task {task_id}" in celery_worker.log_text(),
        what="the refusal in the worker's log",
    )


def test_an_expired_envelope_is_refused_by_the_worker(
    tmp_path: Path, celery_app: Any, celery_worker: Any
) -> None:
    env = CeleryEnv(celery_app, keys=["test-key-" + "x" * 40])
    marker = tmp_path / "ran"

    def writes() -> None:
        marker.write_text("ran")

    task_id = "expired-" + os.urandom(4).hex()
    old = time.time() - env.max_age - 10
    envelope = seal(env.keyring, "call", task_id, _call_body(writes), now=old)
    celery_app.send_task(
        TASK_NAME, args=[envelope], kwargs={"env": "celery"}, task_id=task_id, ignore_result=True
    )

    result = AsyncResult(task_id, app=celery_app)
    wait_for(lambda: result.state == "FAILURE", what="the worker to refuse the envelope")
    assert "at most 86400 s old" in str(result.result)
    assert not marker.exists()


def test_a_forged_reply_is_refused_by_the_caller(tmp_path: Path, celery_app: Any) -> None:
    started = tmp_path / "started"
    stranger = CeleryEnv(celery_app, keys=["another-key-" + "z" * 40])

    def forge() -> None:  # someone who can write to the result backend, without our keys
        task_id = _started(started)
        forged = seal(stranger.keyring, "reply", task_id, b"anything")
        with warnings.catch_warnings():
            # Celery's Redis backend calls redis-py's deprecated Pipeline.setex; in the
            # worker this is a warning in its log, here the test session makes it an error.
            warnings.simplefilter("ignore", DeprecationWarning)
            celery_app.backend.store_result(task_id, forged, "SUCCESS")

    forger = threading.Thread(target=forge)
    forger.start()
    try:
        with pytest.raises(EnvelopeError, match="key id") as caught, weave() as w:

            @w.do(env="celery")
            def slow() -> str:
                from celery import current_task

                started.write_text(current_task.request.id)
                time.sleep(3)
                return "genuine"

    finally:
        forger.join()
    assert caught.value.reason == "unknown-key"


def _call_body(function: Any) -> bytes:
    return capture.dumps((function, {}, function.__name__, "test"), limit=None, what="", parts=list)
