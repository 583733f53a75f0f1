"""``merge(fn)`` / ``merge(fn, items)`` inside a running task: awaited in an async task,
a blocking call in a sync one; with the options of ``@w.do``."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from overlap import Overlap

import wove
from wove import merge, weave


def _sync_answer() -> str:
    return f"sync on {threading.current_thread().name}"


async def _async_answer() -> str:
    await asyncio.sleep(0)
    return f"async on {threading.current_thread().name}"


def test_merge_calls_a_sync_or_async_function_once() -> None:
    async def main() -> tuple[str, str, str]:
        async with weave() as w:

            @w.do
            async def merged() -> tuple[str, str]:
                return await merge(_sync_answer), await merge(_async_answer)

        sync_value, async_value = w.result.merged
        return sync_value, async_value, threading.current_thread().name

    sync_value, async_value, caller = asyncio.run(main())
    assert sync_value.startswith("sync on wove-")
    assert async_value == f"async on {caller}"


def test_merge_in_a_sync_weave_async_task() -> None:
    with weave() as w:

        @w.do
        async def merged() -> tuple[str, int]:
            return await merge(_sync_answer), await merge(lambda: 5)

    sync_value, five = w.result.merged
    assert sync_value.startswith("sync on wove-")
    assert not sync_value.startswith("sync on wove-loop")
    assert five == 5


def test_merge_over_items_keeps_input_order() -> None:
    def sync_step(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    async def async_step(seconds: float) -> float:
        await asyncio.sleep(seconds)
        return -seconds

    delays = [0.08, 0.0, 0.05, 0.02, 0.06]
    with weave() as w:

        @w.do
        async def merged() -> tuple[list[float], list[float]]:
            return await merge(sync_step, delays), await merge(async_step, delays)

    sync_values, async_values = w.result.merged
    assert sync_values == delays
    assert async_values == [-d for d in delays]


def test_merge_runs_sync_items_in_pool_threads_concurrently() -> None:
    overlap = Overlap()
    loop_threads: list[str] = []

    def item(number: int) -> tuple[int, str]:
        with overlap.running():
            time.sleep(0.05)
        return number, threading.current_thread().name

    with weave() as w:

        @w.do
        async def merged() -> list[tuple[int, str]]:
            loop_threads.append(threading.current_thread().name)
            return await merge(item, range(10))

    values = w.result.merged
    assert [number for number, _ in values] == list(range(10))
    names = {name for _, name in values}
    assert all(name.startswith("wove-") for name in names)
    assert loop_threads[0] not in names
    assert overlap.calls == 10
    assert overlap.peak >= 8


def test_merge_runs_async_items_concurrently() -> None:
    overlap = Overlap()

    async def item(number: int) -> int:
        with overlap.running():
            await asyncio.sleep(0.05)
        return number * 2

    async def main() -> list[int]:
        async with weave() as w:

            @w.do
            async def merged() -> list[int]:
                return await merge(item, range(20))

        return w.result.merged  # type: ignore[no-any-return]

    assert asyncio.run(main()) == [n * 2 for n in range(20)]
    assert overlap.peak == 20


def test_a_failing_item_cancels_the_others_and_is_raised() -> None:
    cancelled: list[int] = []
    raised: list[BaseException] = []

    async def item(number: int) -> int:
        if number == 3:
            await asyncio.sleep(0.02)
            error = ValueError("item 3 failed")
            raised.append(error)
            raise error
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append(number)
            raise
        return number

    started = time.monotonic()
    with weave() as w:

        @w.do
        async def merged() -> BaseException | None:
            try:
                await merge(item, range(6))
            except ValueError as error:
                return error
            return None

    assert time.monotonic() - started < 1.5
    assert w.result.merged is raised[0]
    assert sorted(cancelled) == [0, 1, 2, 4, 5]


def test_a_failing_merge_fails_the_task_and_the_weave() -> None:
    raised: list[BaseException] = []

    def item(number: int) -> int:
        if number == 1:
            error = KeyError(number)
            raised.append(error)
            raise error
        return number

    with pytest.raises(KeyError) as caught, weave() as w:

        @w.do
        async def merged() -> list[int]:
            return await merge(item, [0, 1, 2])

    assert caught.value is raised[0]
    assert w.result.exception is raised[0]


def test_sync_merge_calls_end_before_the_block_does() -> None:
    finished: list[int] = []
    lock = threading.Lock()

    def item(number: int) -> int:
        if number == 0:
            time.sleep(0.02)
            raise ValueError("item 0")
        time.sleep(0.2)
        with lock:
            finished.append(number)
        return number

    with pytest.raises(ValueError, match="item 0"), weave() as w:

        @w.do
        async def merged() -> list[int]:
            return await merge(item, range(4))

    assert sorted(finished) == [1, 2, 3]  # no thread of the weave outlives its block


def test_merge_outside_a_weave_raises_at_call_time() -> None:
    with pytest.raises(wove.WeaveStateError) as caught:
        merge(_sync_answer)
    assert isinstance(caught.value, RuntimeError)
    assert isinstance(caught.value, wove.WoveError)

    async def not_in_a_weave() -> None:
        merge(_async_answer, [1, 2])  # raises before anything is awaited

    with pytest.raises(RuntimeError, match="merge"):
        asyncio.run(not_in_a_weave())


def test_empty_items_give_an_empty_list() -> None:
    calls: list[object] = []

    def item(value: object) -> object:
        calls.append(value)
        return value

    with weave() as w:

        @w.do
        async def merged() -> list[object]:
            return await merge(item, [])

    assert w.result.merged == []
    assert calls == []


def test_the_block_waits_for_merge_calls_of_a_task_that_caught_their_error() -> None:
    second_started = threading.Event()
    second_finished = threading.Event()

    def item(number: int) -> int:
        if number == 0:
            second_started.wait(5)  # the other call is running when this one fails
            raise ValueError("item 0")
        second_started.set()
        time.sleep(0.3)
        second_finished.set()
        return number

    with weave() as w:

        @w.do
        async def gathered() -> str:
            try:
                await merge(item, [0, 1])
            except ValueError:
                return "handled"
            return "not raised"

    assert w.result.gathered == "handled"
    assert second_finished.is_set()  # no thread of the weave outlives its block


def test_the_block_waits_for_a_merge_call_given_up_by_wait_for() -> None:
    started = threading.Event()
    finished = threading.Event()

    def slow() -> str:
        started.set()
        time.sleep(0.5)
        finished.set()
        return "late"

    with weave() as w:

        @w.do
        async def gave_up() -> str:
            try:
                return await asyncio.wait_for(merge(slow), 0.2)
            except TimeoutError:
                return "gave up"

    assert w.result.gave_up == "gave up"
    assert started.is_set()
    assert finished.is_set()  # the sync call still ran when the task gave up on it


# --- merge() in a sync task -------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("function", [_sync_answer, _async_answer])
def test_merge_in_a_sync_task_returns_the_value(function: object) -> None:
    with weave() as w:

        @w.do
        def in_thread() -> object:
            return merge(function)  # type: ignore[arg-type]

    assert isinstance(w.result.in_thread, str)
    assert w.result.in_thread.split()[0] in ("sync", "async")


@pytest.mark.timeout(30)
def test_merge_over_items_in_a_sync_task_returns_the_list_concurrently() -> None:
    overlap = Overlap()
    both = threading.Barrier(2, timeout=10)

    def item(number: int) -> int:
        with overlap.running():
            if number < 2:
                both.wait()  # only passes if two items run at once
        return number * 10

    async def async_item(number: int) -> int:
        await asyncio.sleep(0)
        return number + 1

    with weave() as w:

        @w.do
        def sync_items() -> list[int]:
            return merge(item, range(5))

        @w.do
        def async_items() -> list[int]:
            return merge(async_item, [1, 2, 3])

    assert w.result.sync_items == [0, 10, 20, 30, 40]
    assert w.result.async_items == [2, 3, 4]
    assert overlap.peak >= 2


@pytest.mark.timeout(30)
def test_merge_in_a_sync_task_of_an_async_block() -> None:
    async def main() -> object:
        async with weave() as w:

            @w.do
            def in_thread() -> object:
                return merge(_async_answer), merge(lambda x: x * 2, [1, 2])

        return w.result.in_thread

    answer, doubled = asyncio.run(main())
    assert answer.startswith("async on")
    assert doubled == [2, 4]


@pytest.mark.timeout(30)
def test_sync_merge_under_max_workers_1_does_not_deadlock() -> None:
    both = threading.Barrier(2, timeout=10)

    def item(number: int) -> int:
        if number < 2:
            both.wait()  # two items at once, though the weave allows one sync task
        return number

    with weave(max_workers=1) as w:

        @w.do
        def first() -> list[int]:
            return merge(item, range(4))

        @w.do
        def second(first: list[int]) -> int:
            return merge(lambda: sum(first))

    assert w.result.first == [0, 1, 2, 3]
    assert w.result.second == 6


@pytest.mark.timeout(30)
def test_sync_merge_with_a_one_thread_pool_does_not_deadlock() -> None:
    before = wove.settings().max_threads
    wove.configure(max_threads=1)
    try:
        with weave() as w:

            @w.do
            def outer() -> list[int]:
                return merge(lambda n: n + 1, range(3))

        assert w.result.outer == [1, 2, 3]
    finally:
        wove.configure(max_threads=before)


@pytest.mark.timeout(30)
def test_a_failing_item_of_a_sync_merge_is_raised_in_the_task() -> None:
    def item(number: int) -> int:
        if number == 2:
            raise LookupError("no item 2")
        return number

    with weave() as w:

        @w.do
        def caught() -> str:
            try:
                merge(item, range(4))
            except LookupError as error:
                return str(error)
            return "not raised"

    assert w.result.caught == "no item 2"


# --- a sync callable returning a coroutine ----------------------------------------------


async def _fetch(x: int) -> int:
    await asyncio.sleep(0)
    return x * 3


@pytest.mark.timeout(30)
def test_a_sync_callable_returning_a_coroutine_has_it_awaited() -> None:
    with weave() as w:

        @w.do
        async def in_async() -> tuple[int, list[int]]:
            return await merge(lambda: _fetch(2)), await merge(lambda x: _fetch(x), [1, 2])

        @w.do
        def in_sync() -> tuple[int, list[int]]:
            return merge(lambda: _fetch(2)), merge(lambda x: _fetch(x), [1, 2])

    assert w.result.in_async == (6, [3, 6])
    assert w.result.in_sync == (6, [3, 6])


# --- options ----------------------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_merge_retries(kind: str) -> None:
    attempts: list[int] = []

    def flaky(number: int) -> int:
        attempts.append(number)
        if attempts.count(number) < 3:
            raise ConnectionError("again")
        return number

    with weave() as w:
        if kind == "sync":

            @w.do
            def merged() -> object:
                return merge(flaky, [1, 2], retries=2), merge(lambda: flaky(5), retries=2)
        else:

            @w.do
            async def merged() -> object:
                return (
                    await merge(flaky, [1, 2], retries=2),
                    await merge(lambda: flaky(5), retries=2),
                )

    assert w.result.merged == ([1, 2], 5)
    assert sorted(attempts) == [1, 1, 1, 2, 2, 2, 5, 5, 5]


@pytest.mark.timeout(30)
def test_merge_without_retries_raises_at_once() -> None:
    attempts: list[int] = []

    def flaky() -> int:
        attempts.append(1)
        raise ConnectionError("down")

    with pytest.raises(ConnectionError), weave() as w:

        @w.do
        def merged() -> object:
            return merge(flaky, retries=0)

    assert attempts == [1]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_merge_timeout(kind: str) -> None:
    release = threading.Event()

    def slow() -> None:
        release.wait(10)

    async def slow_async() -> None:
        await asyncio.sleep(10)

    try:
        with pytest.raises(wove.TaskTimeout) as caught, weave() as w:
            if kind == "sync":

                @w.do
                def merged() -> object:
                    return merge(slow, timeout=0.05)
            else:

                @w.do
                async def merged() -> object:
                    return await merge(slow_async, timeout=0.05)

    finally:
        release.set()
    assert caught.value.seconds == 0.05
    assert isinstance(caught.value, TimeoutError)
    # It names the merged function and the call its timeout was given on, not the
    # task standing for the call nor @w.do.
    name = (slow if kind == "sync" else slow_async).__qualname__
    message = str(caught.value)
    assert message.startswith(f"merge({name}) did not finish within its timeout of 0.05 s")
    assert "raise `timeout=` on the merge() call" in message
    assert "@w.do" not in message
    assert caught.value.merged == name
    notes = getattr(caught.value, "__notes__", [])
    assert any(f"raised by merge({name}) in the weave at " in note for note in notes), notes
    assert not any("task 'merge'" in note for note in notes), notes


@pytest.mark.timeout(30)
def test_merge_timeout_of_one_item_names_the_item_and_the_function() -> None:
    release = threading.Event()

    def fetch(item: int) -> int:
        if item == 1:
            release.wait(10)
        return item

    try:
        with pytest.raises(wove.TaskTimeout) as caught, weave() as w:

            @w.do
            def merged() -> object:
                return merge(fetch, [0, 1], timeout=0.05)

    finally:
        release.set()
    message = str(caught.value)
    assert message.startswith("item 1 of merge(")
    assert "fetch) did not finish" in message
    assert "raise `timeout=` on the merge() call" in message


def test_a_task_timeout_still_names_the_task_and_w_do() -> None:
    message = str(wove.TaskTimeout("fetch", 2.0, 3))
    assert message.startswith("item 3 of task 'fetch' did not finish within its timeout of 2 s")
    assert "raise `timeout=` on @w.do" in message


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_merge_workers_bounds_the_items_running_at_once(kind: str) -> None:
    overlap = Overlap()

    def item(number: int) -> int:
        with overlap.running():
            time.sleep(0.01)
        return number

    with weave() as w:
        if kind == "sync":

            @w.do
            def merged() -> list[int]:
                return merge(item, range(8), workers=2)
        else:

            @w.do
            async def merged() -> list[int]:
                return await merge(item, range(8), workers=2)

    assert w.result.merged == list(range(8))
    assert overlap.calls == 8
    assert overlap.peak <= 2


@pytest.mark.timeout(30)
def test_merge_limit_per_minute_runs_every_item() -> None:
    with weave() as w:

        @w.do
        def merged() -> list[int]:
            return merge(lambda n: n, range(3), limit_per_minute=60_000)

    assert w.result.merged == [0, 1, 2]


@pytest.mark.parametrize("option", ["workers", "limit_per_minute"])
def test_item_options_without_items_name_the_option(option: str) -> None:
    with pytest.raises(ValueError, match=option) as caught, weave() as w:

        @w.do
        def merged() -> object:
            return merge(_sync_answer, **{option: 2})

    assert isinstance(caught.value, wove.InvalidOptionError)
    assert "items" in str(caught.value)


@pytest.mark.parametrize(("option", "value"), [("retries", -1), ("timeout", 0), ("workers", 0)])
def test_bad_merge_option_values(option: str, value: object) -> None:
    with pytest.raises(wove.InvalidOptionError, match=option), weave() as w:

        @w.do
        async def merged() -> object:
            return await merge(_sync_answer, [1], **{option: value})
