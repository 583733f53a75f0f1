"""The process pool environment against real worker processes of this machine.

One pool of two workers for the module (stopped in teardown); each test that stops or
loses a worker waits for its replacement. Cross-process overlap is proven with files:
each task marks its start and waits for the other's mark, so two tasks that did not run
at the same time fail (the first one never sees the second's mark).

A task's marker file is written beside and renamed: a reader never sees it half-written.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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
from wove.contrib.process import ProcessEnv
from wove.contrib.remote.capture import PayloadError

pytestmark = pytest.mark.slow

WORKERS = 2


@pytest.fixture(scope="module")
def env() -> Iterator[ProcessEnv]:
    pool = ProcessEnv(workers=WORKERS)
    remove = wove.register_env("process", pool)
    try:
        pool.start()
        yield pool
    finally:
        remove()
        pool.close()


def wait_for(predicate: Any, timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return found


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def full(env: ProcessEnv) -> list[int]:
    return wait_for(lambda: len(env.pids) == WORKERS and env.pids, what="a full pool")


@pytest.mark.timeout(60)
def test_tasks_run_in_parallel_in_other_processes(env: ProcessEnv, tmp_path: Path) -> None:
    def meet(name: str, other: str) -> tuple[int, bool]:
        (tmp_path / name).touch()
        deadline = time.monotonic() + 20
        while not (tmp_path / other).exists():  # only there if the other runs meanwhile
            if time.monotonic() > deadline:
                return os.getpid(), False
            sum(range(10_000))  # CPU-bound, as the GIL would serialize in threads
        return os.getpid(), True

    with weave() as w:

        @w.do(env="process")
        def left() -> tuple[int, bool]:
            return meet("left", "right")

        @w.do(env="process")
        def right() -> tuple[int, bool]:
            return meet("right", "left")

    (left_pid, left_met), (right_pid, right_met) = w.result.left, w.result.right
    assert left_met
    assert right_met
    assert len({left_pid, right_pid, os.getpid()}) == 3
    assert {left_pid, right_pid} <= set(env.pids)


@pytest.mark.timeout(60)
def test_closures_travel_by_value_and_dependencies_flow(env: ProcessEnv) -> None:
    factor = 7
    offsets = {"a": 1, "b": 2}

    def scaled(value: int) -> int:  # a local function: only cloudpickle can send it
        return value * factor

    with weave(base=3) as w:

        @w.do(env="process")
        def first(base: int) -> int:
            return scaled(base) + offsets["a"]

        @w.do(["a", "b"], env="process")
        def each(item: str, first: int) -> int:
            return first + offsets[item]

        @w.do(env="process")
        async def awaited(first: int) -> int:  # an async task runs on the worker's loop
            await asyncio.sleep(0)
            return first * 2

    assert w.result.first == 22
    assert w.result.each == [23, 24]
    assert w.result.awaited == 44


class Unpicklable(Exception):
    def __init__(self, handle: Any) -> None:
        super().__init__("cannot travel")
        self.handle = handle

    def __reduce__(self) -> Any:
        raise TypeError("not picklable")


@pytest.mark.timeout(60)
def test_the_functions_own_exception_comes_back_with_its_traceback(env: ProcessEnv) -> None:
    with pytest.raises(KeyError, match="missing-isbn") as caught, weave() as w:

        @w.do(env="process")
        def lookup() -> None:
            raise KeyError("missing-isbn")

    notes = "\n".join(getattr(caught.value, "__notes__", []))
    assert "remote traceback (process pool on pid" in notes
    assert "lookup" in notes
    assert "KeyError" in notes

    with (
        pytest.raises(RemoteTaskError, match="Unpicklable: cannot travel") as text_only,
        weave() as w,
    ):

        @w.do(env="process")
        def odd() -> None:
            raise Unpicklable(object())

    assert text_only.value.remote_type.endswith("Unpicklable")
    assert not isinstance(text_only.value, RemoteWorkerLost)


@pytest.mark.timeout(90)
def test_a_timed_out_call_has_its_process_stopped_and_replaced(
    env: ProcessEnv, tmp_path: Path
) -> None:
    before = full(env)
    marker = tmp_path / "pid"

    with pytest.raises(TaskTimeout), weave() as w:

        @w.do(env="process", timeout=2)
        def stuck() -> None:
            marker.with_suffix(".part").write_text(str(os.getpid()))
            marker.with_suffix(".part").replace(marker)
            time.sleep(120)

    pid = int(wait_for(marker.exists, what="the task to start") and marker.read_text())
    assert pid in before
    wait_for(lambda: gone(pid), what=f"worker {pid} to be stopped")
    after = full(env)
    assert pid not in after

    with weave() as w:

        @w.do(env="process")
        def again() -> int:
            return os.getpid()

    assert w.result.again in env.pids


@pytest.mark.timeout(90)
def test_a_call_cancelled_by_a_failing_task_has_its_process_stopped(
    env: ProcessEnv, tmp_path: Path
) -> None:
    full(env)
    marker = tmp_path / "pid"

    with pytest.raises(ValueError, match="boom"), weave() as w:

        @w.do(env="process")
        def long_one() -> None:
            marker.with_suffix(".part").write_text(str(os.getpid()))
            marker.with_suffix(".part").replace(marker)
            time.sleep(120)

        @w.do
        def failing() -> None:
            wait_for(marker.exists, what="the remote task to start")
            raise ValueError("boom")

    pid = int(marker.read_text())
    wait_for(lambda: gone(pid), what=f"worker {pid} to be stopped")
    assert pid not in full(env)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_a_worker_that_dies_under_a_call_fails_it_as_lost(env: ProcessEnv, how: str) -> None:
    full(env)

    with pytest.raises(RemoteWorkerLost, match="worker process") as lost, weave() as w:

        @w.do(env="process")
        def crash() -> None:
            if how == "exit":
                os._exit(3)
            os.kill(os.getpid(), signal.SIGKILL)

    assert lost.value.may_have_started is True
    expected = "exited with status 3" if how == "exit" else f"killed by signal {signal.SIGKILL}"
    assert expected in str(lost.value)
    full(env)

    with weave() as w:

        @w.do(env="process")
        def afterwards() -> str:
            return "fine"

    assert w.result.afterwards == "fine"


@pytest.mark.timeout(60)
def test_an_unpicklable_argument_is_refused_before_anything_runs(env: ProcessEnv) -> None:
    import threading

    with pytest.raises(PayloadError, match="argument 'lock'"), weave(lock=threading.Lock()) as w:

        @w.do(env="process")
        def use(lock: Any) -> None:
            return None


@pytest.mark.timeout(60)
def test_a_detached_weave_runs_in_a_worker(env: ProcessEnv, tmp_path: Path) -> None:
    out = tmp_path / "done"

    def done(result: WoveResult) -> None:
        out.with_suffix(".part").write_text(f"{result.total} {os.getpid()}")
        out.with_suffix(".part").replace(out)

    with weave(background=True, env="process", on_done=done, base=2) as w:

        @w.do
        def total(base: int) -> int:
            return base * 21

    assert w.remote_id is not None
    assert w.remote_id.startswith("process-")
    total_text, pid = wait_for(out.exists, what="on_done") and out.read_text().split()
    assert total_text == "42"
    assert int(pid) != os.getpid()


@pytest.mark.timeout(60)
def test_closing_fails_a_queued_call_as_never_ran() -> None:
    pool = ProcessEnv(workers=1)
    remove = wove.register_env("closing", pool)
    try:

        async def two() -> tuple[Any, Any]:
            from wove.lowlevel import RemoteCall

            def hold() -> None:
                time.sleep(120)

            first = asyncio.ensure_future(pool.run(RemoteCall("a", hold, {}, "closing", None, "")))
            second = asyncio.ensure_future(pool.run(RemoteCall("b", hold, {}, "closing", None, "")))
            await asyncio.sleep(0)
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: wait_for(lambda: pool.pids, what="the worker")
            )
            await asyncio.get_running_loop().run_in_executor(None, pool.close)
            return await asyncio.gather(first, second, return_exceptions=True)

        running, queued = asyncio.run(two())
    finally:
        remove()
        pool.close()
    assert isinstance(running, RemoteWorkerLost)
    assert isinstance(queued, RemoteNeverRan)
    assert queued.may_have_started is False


@pytest.mark.timeout(60)
def test_calls_from_several_event_loops_share_the_workers() -> None:
    # One worker, three loops in three threads: a worker freed by one loop's call goes
    # to the call waiting longest, whichever loop awaits it.
    import threading

    from wove.lowlevel import RemoteCall

    pool = ProcessEnv(workers=1)
    results: dict[int, list[int]] = {}

    def square(x: int) -> int:
        return x * x

    async def calls(base: int) -> list[int]:
        return list(
            await asyncio.gather(
                *(
                    pool.run(RemoteCall("square", square, {"x": base + i}, "loops", None, ""))
                    for i in range(20)
                )
            )
        )

    def in_thread(base: int) -> None:
        results[base] = asyncio.run(calls(base))

    threads = [threading.Thread(target=in_thread, args=(base,)) for base in (0, 100, 200)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(50)
    finally:
        pool.close()
    assert results == {base: [(base + i) ** 2 for i in range(20)] for base in (0, 100, 200)}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"workers": 0}, "workers must be a number of processes >= 1"),
        ({"workers": 1.5}, "workers must be a number of processes >= 1"),
        ({"start_method": "teleport"}, "start_method must be one of"),
    ],
)
def test_bad_options_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidOptionError, match=message):
        ProcessEnv(**kwargs)


@pytest.mark.timeout(60)
def test_the_callers_trace_continues_in_the_worker(env: ProcessEnv) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from wove.contrib.opentelemetry import WoveInstrumentor

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    WoveInstrumentor().instrument(tracer_provider=provider)
    try:
        with weave() as w:

            @w.do(env="process")
            def traced() -> tuple[str, str]:
                from opentelemetry import trace

                # No SDK in the worker: the task's span is a non-recording child that
                # still carries the caller's trace, so the task's own spans join it.
                context = trace.get_current_span().get_span_context()
                return format(context.trace_id, "032x"), str(os.getpid())

    finally:
        WoveInstrumentor().uninstrument()
        provider.shutdown()
    trace_id, pid = w.result.traced
    [attempt] = [s for s in exporter.get_finished_spans() if s.name == "traced"]
    assert attempt.context is not None
    assert trace_id == format(attempt.context.trace_id, "032x")
    assert int(pid) != os.getpid()
