"""Dataflow scheduling, scale, long chains, and what happens when a task fails."""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from overlap import Overlap

import wove
from wove import weave
from wove.engine import run as scheduler


class Times:
    """Start and end times of named tasks (``time.monotonic``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.start: dict[str, float] = {}
        self.end: dict[str, float] = {}

    def started(self, name: str) -> None:
        with self._lock:
            self.start[name] = time.monotonic()

    def ended(self, name: str) -> None:
        with self._lock:
            self.end[name] = time.monotonic()


# --- dataflow, not tiers ----------------------------------------------------------------------


def _uneven_sync(times: Times) -> tuple[wove.WeaveBlock, float]:
    began = time.monotonic()
    with weave() as w:

        @w.do
        def a() -> str:
            times.started("a")
            time.sleep(0.3)
            times.ended("a")
            return "a"

        @w.do
        def b() -> str:
            times.started("b")
            times.ended("b")
            return "b"

        @w.do
        def c(b: str) -> str:
            times.started("c")
            time.sleep(0.3)
            times.ended("c")
            return b + "c"

        @w.do
        def d(a: str, c: str) -> str:
            times.started("d")
            times.ended("d")
            return a + c

    return w, time.monotonic() - began


def _uneven_async(times: Times) -> tuple[wove.WeaveBlock, float]:
    async def main() -> wove.WeaveBlock:
        async with weave() as w:

            @w.do
            async def a() -> str:
                times.started("a")
                await asyncio.sleep(0.3)
                times.ended("a")
                return "a"

            @w.do
            async def b() -> str:
                times.started("b")
                times.ended("b")
                return "b"

            @w.do
            async def c(b: str) -> str:
                times.started("c")
                await asyncio.sleep(0.3)
                times.ended("c")
                return b + "c"

            @w.do
            async def d(a: str, c: str) -> str:
                times.started("d")
                times.ended("d")
                return a + c

        return w

    began = time.monotonic()
    w = asyncio.run(main())
    return w, time.monotonic() - began


@pytest.mark.parametrize("run", [_uneven_sync, _uneven_async], ids=["sync", "async"])
def test_uneven_dag_runs_on_its_critical_path(
    run: Callable[[Times], tuple[wove.WeaveBlock, float]],
) -> None:
    times = Times()
    w, elapsed = run(times)
    assert w.result.final == "abc"
    assert times.start["c"] < times.end["a"]  # c did not wait for the unrelated a
    assert times.end["b"] <= times.start["c"]
    assert times.start["d"] >= max(times.end["a"], times.end["c"])
    assert elapsed < 0.55


def test_a_task_never_waits_for_an_unrelated_slower_task() -> None:
    times = Times()
    with weave() as w:

        @w.do
        def slow() -> int:
            time.sleep(0.4)
            times.ended("slow")
            return 1

        @w.do
        async def fast() -> int:
            return 2

        @w.do
        def fast_child(fast: int) -> int:
            times.ended("fast_child")
            return fast + 1

        @w.do
        async def fast_grandchild(fast_child: int) -> int:
            times.ended("fast_grandchild")
            return fast_child + 1

        @w.do([1, 2])
        def fast_mapped(item: int, fast_grandchild: int) -> int:
            times.ended(f"fast_mapped{item}")
            return item + fast_grandchild

    assert w.result.fast_mapped == [5, 6]
    for name in ("fast_child", "fast_grandchild", "fast_mapped1", "fast_mapped2"):
        assert times.end[name] < times.end["slow"], name


# --- scale ------------------------------------------------------------------------------------


def _warm_pool(threads: int) -> None:
    """Grow the shared pool first: starting 200 threads from cold takes longer than one
    0.1 s item on a small machine, which is a cost of the first weave, not of mapping."""
    gate = threading.Barrier(threads, timeout=5)
    with weave() as w:

        @w.do(range(threads))
        def warm(item: int) -> int:
            gate.wait()
            return item

    assert len(w.result.warm) == threads


def test_two_hundred_sync_items_run_concurrently() -> None:
    _warm_pool(200)
    overlap = Overlap()
    with weave() as w:

        @w.do(range(200))
        def items(item: int) -> int:
            with overlap.running():
                time.sleep(0.1)
            return item

    assert w.result.items == list(range(200))
    assert overlap.calls == 200
    assert overlap.peak >= 150


def test_two_hundred_async_items_run_concurrently() -> None:
    overlap = Overlap()

    async def main() -> list[int]:
        async with weave() as w:

            @w.do(range(200))
            async def items(item: int) -> int:
                with overlap.running():
                    await asyncio.sleep(0.1)
                return item

        return w.result.items  # type: ignore[no-any-return]

    assert asyncio.run(main()) == list(range(200))
    assert overlap.calls == 200
    assert overlap.peak >= 150


def _chain(length: int, kind: Callable[[int], str]) -> dict[str, Any]:
    """Functions t0 .. t{length-1}, each taking the previous one's result."""
    lines = []
    for index in range(length):
        prefix = "async def" if kind(index) == "async" else "def"
        params = f"t{index - 1}" if index else ""
        body = f"t{index - 1} + 1" if index else "0"
        lines.append(f"{prefix} t{index}({params}):\n    return {body}\n")
    namespace: dict[str, Any] = {}
    exec("".join(lines), namespace)
    return namespace


@pytest.mark.parametrize(
    "kind",
    [lambda i: "sync", lambda i: "async", lambda i: "async" if i % 2 else "sync"],
    ids=["sync", "async", "alternating"],
)
def test_a_thousand_long_chain_runs(kind: Callable[[int], str]) -> None:
    functions = _chain(1000, kind)
    with weave() as w:
        for index in range(1000):
            w.do(functions[f"t{index}"])
    assert w.result.final == 999
    assert w.result.t500 == 500


def test_a_thousand_long_async_chain_in_an_async_block() -> None:
    functions = _chain(1000, lambda i: "async")

    async def main() -> int:
        async with weave() as w:
            for index in range(1000):
                w.do(functions[f"t{index}"])
        return w.result.final  # type: ignore[no-any-return]

    assert asyncio.run(main()) == 999


# --- errors -----------------------------------------------------------------------------------


def _notes(error: BaseException) -> str:
    return "\n".join(getattr(error, "__notes__", []))


def test_the_failure_is_reraised_unchanged_with_a_note() -> None:
    raised: list[BaseException] = []
    line = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
    with pytest.raises(LookupError) as caught, weave() as w:

        @w.do
        def ok() -> int:
            return 1

        @w.do
        def broken(ok: int) -> None:
            error = LookupError("missing row")
            raised.append(error)
            raise error

    assert caught.value is raised[0]
    assert type(caught.value) is LookupError
    assert str(caught.value) == "missing row"
    notes = _notes(caught.value)
    assert "broken" in notes
    assert f"test_scheduler.py:{line}" in notes
    assert "item" not in notes
    assert w.result.exception is raised[0]
    assert w.result.ok == 1
    with pytest.raises(LookupError) as read:
        w.result.broken  # noqa: B018
    assert read.value is raised[0]


def test_a_failing_mapped_item_note_names_its_index() -> None:
    raised: list[BaseException] = []
    line = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="bad item") as caught, weave() as w:

        @w.do(["a", "b", "c", "d"])
        async def parsed(item: str) -> str:
            if item == "c":
                error = ValueError("bad item")
                raised.append(error)
                raise error
            return item

    assert caught.value is raised[0]
    notes = _notes(caught.value)
    assert "parsed" in notes
    assert "item 2" in notes
    assert f"test_scheduler.py:{line}" in notes
    assert w.result.exception is caught.value


def test_the_note_of_an_async_block_names_its_line() -> None:
    async def main() -> None:
        async with weave() as w:

            @w.do
            def broken() -> None:
                raise KeyError("k")

    line = inspect.getsourcelines(main)[1] + 1
    with pytest.raises(KeyError) as caught:
        asyncio.run(main())
    notes = _notes(caught.value)
    assert "broken" in notes
    assert f"test_scheduler.py:{line}" in notes


def test_a_failure_cancels_an_async_sibling_and_skips_dependents() -> None:
    cancelled_seen = threading.Event()
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="boom") as caught, weave() as w:

        @w.do
        async def sleeper() -> None:
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                cancelled_seen.set()
                raise

        @w.do
        def done_early() -> str:
            return "kept"

        @w.do
        async def failing(done_early: str) -> None:
            await asyncio.sleep(0.05)
            raise RuntimeError("boom")

        @w.do
        def never_started(failing: None) -> str:
            return "unreachable"

        @w.do
        def also_never(never_started: str, sleeper: None) -> str:
            return "unreachable"

    assert time.monotonic() - started < 1.5
    assert cancelled_seen.is_set()
    result = w.result
    assert result.exception is caught.value
    assert {"sleeper", "never_started", "also_never"} <= result.cancelled
    assert "done_early" not in result.cancelled
    assert "failing" not in result.cancelled
    assert result.done_early == "kept"
    with pytest.raises(wove.TaskCancelled):
        result.sleeper  # noqa: B018
    with pytest.raises(wove.TaskCancelled):
        result.never_started  # noqa: B018


def test_a_failure_in_an_async_block_cancels_its_siblings() -> None:
    cancelled_seen: list[str] = []

    async def main() -> wove.WeaveBlock:
        async with weave() as w:

            @w.do([1, 2, 3])
            async def sleepers(item: int) -> None:
                try:
                    await asyncio.sleep(5)
                except asyncio.CancelledError:
                    cancelled_seen.append(f"item{item}")
                    raise

            @w.do
            async def failing() -> None:
                await asyncio.sleep(0.05)
                raise OSError("disk")

        return w

    started = time.monotonic()
    with pytest.raises(OSError, match="disk"):
        asyncio.run(main())
    assert time.monotonic() - started < 1.5
    assert sorted(cancelled_seen) == ["item1", "item2", "item3"]


def test_the_first_failure_in_time_is_raised() -> None:
    late_error = ValueError("late")
    early_error = KeyError("early")
    with pytest.raises(Exception) as caught, weave() as w:  # noqa: PT011

        @w.do
        def late() -> None:  # defined first, fails last
            time.sleep(0.2)
            raise late_error

        @w.do
        async def early() -> None:
            await asyncio.sleep(0.01)
            raise early_error

    assert caught.value is early_error
    assert w.result.exception is early_error


def test_the_first_failing_item_in_time_is_raised() -> None:
    errors = {index: ValueError(f"item {index}") for index in range(4)}
    with pytest.raises(ValueError) as caught, weave() as w:  # noqa: PT011

        @w.do([0.2, 0.15, 0.01, 0.1])
        def items(seconds: float) -> None:
            time.sleep(seconds)
            raise errors[[0.2, 0.15, 0.01, 0.1].index(seconds)]

    assert caught.value is errors[2]
    assert "item 2" in _notes(caught.value)


def test_a_running_sync_sibling_has_finished_when_the_block_raises() -> None:
    finished = threading.Event()
    with pytest.raises(ZeroDivisionError), weave() as w:

        @w.do
        def busy() -> str:
            time.sleep(0.3)
            finished.set()
            return "done"

        @w.do
        def failing() -> None:
            time.sleep(0.02)
            raise ZeroDivisionError("x")

    assert finished.is_set()
    assert isinstance(w.result.exception, ZeroDivisionError)


def test_sync_items_not_started_after_a_failure() -> None:
    started: list[int] = []
    lock = threading.Lock()
    with pytest.raises(ValueError, match="first"), weave() as w:

        @w.do(range(20), workers=1)
        def items(item: int) -> int:
            with lock:
                started.append(item)
            if item == 1:
                raise ValueError("first")
            return item

    time.sleep(0.05)
    assert started == [0, 1]
    assert "items" not in w.result.cancelled
    assert isinstance(w.result.exception, ValueError)


def test_no_wove_thread_runs_a_task_of_the_weave_after_it_failed() -> None:
    running = Overlap()
    with pytest.raises(ArithmeticError), weave() as w:

        @w.do(range(8))
        def workers(item: int) -> int:
            with running.running():
                time.sleep(0.05 * item)
            return item

        @w.do
        def failing() -> None:
            time.sleep(0.1)
            raise ArithmeticError("stop")

    assert running.now == 0
    calls_then = running.calls
    time.sleep(0.15)
    assert running.calls == calls_then  # nothing of the weave started after the block
    assert w.result.exception is not None


def test_outer_cancellation_of_an_async_block_cancels_its_tasks() -> None:
    seen: list[str] = []
    blocks: list[wove.WeaveBlock] = []

    async def body() -> None:
        async with weave() as w:
            blocks.append(w)

            @w.do
            async def slow() -> None:
                try:
                    await asyncio.sleep(5)
                except asyncio.CancelledError:
                    seen.append("slow")
                    raise

            @w.do([1, 2])
            async def slow_items(item: int) -> None:
                try:
                    await asyncio.sleep(5)
                except asyncio.CancelledError:
                    seen.append(f"item{item}")
                    raise

    async def main() -> None:
        await asyncio.wait_for(body(), timeout=0.1)

    started = time.monotonic()
    with pytest.raises((TimeoutError, asyncio.CancelledError)):
        asyncio.run(main())
    assert time.monotonic() - started < 1.5
    assert sorted(seen) == ["item1", "item2", "slow"]


def test_a_failing_item_cancels_its_sibling_items_at_once() -> None:
    cancelled: list[int] = []

    async def main() -> None:
        async with weave() as w:

            @w.do(range(5))
            async def fetched(item: int) -> int:
                if item == 0:
                    raise LookupError("item 0 is missing")
                try:
                    await asyncio.sleep(5)
                except asyncio.CancelledError:
                    cancelled.append(item)
                    raise
                return item

            @w.do
            async def summary(fetched: list[int]) -> int:
                return sum(fetched)

    started = time.monotonic()
    with pytest.raises(LookupError, match="item 0") as caught:
        asyncio.run(main())
    assert time.monotonic() - started < 2.0
    assert sorted(cancelled) == [1, 2, 3, 4]
    assert "item 0" in _notes(caught.value)


def test_a_run_does_not_end_while_a_worker_still_dispatches(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="wove")
    dispatching, dispatched = threading.Event(), threading.Event()
    original = scheduler.Run.dispatch

    def slow_dispatch(self: scheduler.Run, ready: list[str], continue_as: bool | None) -> Any:
        if "later" not in ready:
            return original(self, ready, continue_as)
        dispatching.set()
        time.sleep(0.2)  # the worker is preempted here, after `a` made `later` ready
        try:
            return original(self, ready, continue_as)
        finally:
            dispatched.set()

    monkeypatch.setattr(scheduler.Run, "dispatch", slow_dispatch)
    dispatch_over_at_raise: list[bool] = []

    async def main() -> None:
        try:
            async with weave() as w:

                @w.do
                def a() -> int:
                    return 1

                @w.do
                async def later(a: int) -> int:
                    return a

                @w.do
                async def boom() -> None:
                    while not dispatching.is_set():  # fail while `later` is dispatched
                        await asyncio.sleep(0.005)
                    raise ValueError("boom")

        except ValueError:
            dispatch_over_at_raise.append(dispatched.is_set())

    asyncio.run(main())  # closes the loop the dispatch launches on
    assert dispatched.wait(2)
    assert dispatch_over_at_raise == [True]
    errors = [r.getMessage() for r in caplog.records if r.name == "wove"]
    assert not errors, caplog.text  # e.g. "internal error in a worker job": loop closed


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("error", [SystemExit, KeyboardInterrupt])
def test_retries_do_not_retry_system_exit_or_keyboard_interrupt(
    is_async: bool, error: type[BaseException]
) -> None:
    attempts: list[int] = []

    def attempt() -> None:
        attempts.append(1)
        raise error(2)

    with pytest.raises(error), weave() as w:
        if is_async:

            @w.do(retries=3)
            async def leaving() -> None:
                attempt()

        else:

            @w.do(retries=3)
            def leaving() -> None:
                attempt()

    assert len(attempts) == 1
    assert isinstance(w.result.exception, error)
