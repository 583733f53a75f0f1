"""Defects found reviewing the day's work: each test failed before its fix."""

import asyncio
import dataclasses

import pytest

import wove
from wove import merge, weave


@pytest.fixture(autouse=True)
def restore_defaults():
    before = wove.defaults()
    yield
    wove.config(**dataclasses.asdict(before))


# --- a weave's own max_pending bounds merge() items, as wove.config's does -------------


@pytest.mark.timeout(30)
def test_weave_max_pending_bounds_merge_items_in_a_sync_task():
    called = []
    with (
        pytest.raises(wove.MaxPendingError, match="exceeds max_pending=2"),
        weave(max_pending=2) as w,
    ):

        @w.do
        def task():
            return merge(called.append, range(5))

    assert called == []


@pytest.mark.timeout(30)
def test_weave_max_pending_bounds_merge_items_in_an_async_task():
    called = []

    async def main():
        async with weave(max_pending=2) as w:

            @w.do
            async def task():
                async def each(item):
                    called.append(item)

                return await merge(each, range(5))

    with pytest.raises(wove.MaxPendingError, match=r"merge\(.*each\).*exceeds max_pending=2"):
        asyncio.run(main())
    assert called == []


@pytest.mark.timeout(30)
def test_weave_own_max_pending_wins_over_the_config_default_for_merge_items():
    wove.config(max_pending=2)
    with weave(max_pending=10) as w:

        @w.do
        def task():
            return merge(lambda item: item * 2, range(5))

    assert w.result.task == [0, 2, 4, 6, 8]


# --- an async task's own thread whose wrapper fails fails the calls sent to it ---------


@pytest.mark.timeout(30)
def test_async_task_thread_fails_its_calls_when_a_thread_call_wrapper_raises():
    from wove.lowlevel import add_async_call_wrapper

    def refusing(call):
        raise ConnectionError("database down")

    threads = []

    async def keep_thread(call, thread):
        threads.append(thread)
        return await call()

    async def main():
        async with weave() as w:

            @w.do
            async def task():
                # Before the fix this future was never set: the task waited forever.
                first = asyncio.wrap_future(threads[0].submit(lambda: 1))
                with pytest.raises(ConnectionError, match="database down"):
                    await asyncio.wait_for(first, 10)
                later = asyncio.wrap_future(threads[0].submit(lambda: 2))
                with pytest.raises(ConnectionError, match="database down"):
                    await asyncio.wait_for(later, 10)
                return "told"

        return w.result.task

    remove_sync = wove.add_thread_call_wrapper(refusing)
    remove_async = add_async_call_wrapper(keep_thread)
    try:
        assert asyncio.run(main()) == "told"
    finally:
        remove_async()
        remove_sync()


# --- error_mode="return" keeps errors, not a request to stop ---------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("stop", [SystemExit(3), KeyboardInterrupt()])
def test_error_mode_return_still_raises_systemexit_and_keyboardinterrupt(stop):
    with pytest.raises(type(stop)), weave(error_mode="return") as w:

        @w.do
        def leaving():
            raise stop

    assert w.result.exception is stop


@pytest.mark.timeout(30)
@pytest.mark.parametrize("stop", [SystemExit(3), KeyboardInterrupt()])
def test_error_mode_return_still_raises_them_from_an_async_block(stop):
    async def main():
        async with weave(error_mode="return") as w:

            @w.do
            async def leaving():
                raise stop

    with pytest.raises(type(stop)):
        asyncio.run(main())


@pytest.mark.timeout(30)
def test_error_mode_return_keeps_an_ordinary_exception():
    with weave(error_mode="return") as w:

        @w.do
        def failing():
            raise ValueError("kept")

    assert isinstance(w.result.failing, ValueError)
