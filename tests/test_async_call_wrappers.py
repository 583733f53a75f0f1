"""``wove.lowlevel.add_async_call_wrapper``: a wrapper around every async task call, and
the thread each call's thread-sensitive work belongs on."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Executor
from typing import Any

import pytest

import wove
from wove import weave
from wove.lanes import thread_pool
from wove.lowlevel import add_async_call_wrapper

Seen = list[tuple[str, Executor | None]]


@pytest.fixture
def seen() -> Iterator[Seen]:
    """Registers a wrapper that notes each call's thread (and the task it runs) and hands
    the thread to the call through a context variable."""
    noted: Seen = []

    async def wrapper(call: Callable[[], Awaitable[Any]], thread: Executor | None) -> Any:
        task = asyncio.current_task()
        noted.append((task.get_name() if task else "", thread))
        token = _thread.set(thread)
        try:
            return await call()
        finally:
            _thread.reset(token)

    remove = add_async_call_wrapper(wrapper)
    try:
        yield noted
    finally:
        remove()


_thread: contextvars.ContextVar[Executor | None] = contextvars.ContextVar("thread", default=None)


async def _on_the_thread(calls: int) -> list[tuple[int, int, str]]:
    """``calls`` functions run on this call's thread, in order: (index, ident, name)."""
    thread = _thread.get()
    assert thread is not None
    loop = asyncio.get_running_loop()
    out = []
    for index in range(calls):
        current = threading.current_thread()
        out.append(
            await loop.run_in_executor(
                thread, lambda i=index: (i, threading.get_ident(), threading.current_thread().name)
            )
        )
        assert current is threading.current_thread()
    return out


@pytest.mark.timeout(30)
def test_each_async_call_gets_a_pool_thread_of_its_own(seen: Seen) -> None:
    barrier = threading.Barrier(2, timeout=10)  # passed only by calls running at once

    async def meet(index: int) -> int:
        thread = _thread.get()
        assert thread is not None
        return await asyncio.get_running_loop().run_in_executor(thread, lambda: barrier.wait())

    with weave() as w:

        @w.do
        async def a() -> list[tuple[int, int, str]]:
            await meet(0)
            return await _on_the_thread(3)

        @w.do
        async def b() -> list[tuple[int, int, str]]:
            await meet(1)
            return await _on_the_thread(3)

    assert len(seen) == 2
    idents = set()
    for name in ("a", "b"):
        calls = w.result[name]
        assert [index for index, _, _ in calls] == [0, 1, 2]
        assert len({ident for _, ident, _ in calls}) == 1
        assert calls[0][2].startswith("wove-")  # one of the pool's threads
        idents.add(calls[0][1])
    assert len(idents) == 2


@pytest.mark.timeout(30)
def test_the_session_runs_inside_the_thread_call_wrappers(seen: Seen) -> None:
    sessions: list[tuple[str, int]] = []

    def around(call: Callable[[], Any]) -> Any:
        sessions.append(("begin", threading.get_ident()))
        try:
            return call()
        finally:
            sessions.append(("end", threading.get_ident()))

    remove = wove.add_thread_call_wrapper(around)
    try:
        with weave() as w:

            @w.do
            async def queries() -> list[tuple[int, int, str]]:
                return await _on_the_thread(3)

    finally:
        remove()
    ident = w.result["queries"][0][1]
    # One session for the three calls, ended (cleanup done) when the call was.
    assert sessions == [("begin", ident), ("end", ident)]


@pytest.mark.timeout(30)
def test_a_call_that_never_submits_takes_no_thread(seen: Seen) -> None:
    threads = thread_pool().threads
    with weave() as w:

        @w.do(range(20))
        async def items(item: int) -> int:
            return item

    assert w.result["items"] == list(range(20))
    assert len(seen) == 20  # each item of a mapped task is a call of its own
    assert wove.lanes.thread_pool().threads == threads  # type: ignore[attr-defined]


@pytest.mark.timeout(30)
def test_with_options_and_retries_each_attempt_is_wrapped(seen: Seen) -> None:
    attempts = []
    with weave() as w:

        @w.do(retries=2, timeout=10)
        async def flaky() -> int:
            attempts.append(1)
            if len(attempts) < 3:
                raise ValueError("again")
            return len(await _on_the_thread(1))

    assert w.result["flaky"] == 1
    assert len(seen) == 3


@pytest.mark.timeout(30)
def test_a_thread_sensitive_weave_sends_async_work_to_the_callers_thread(seen: Seen) -> None:
    with weave(thread_sensitive=True) as w:

        @w.do
        async def here() -> list[tuple[int, int, str]]:
            return await _on_the_thread(2)

    assert {ident for _, ident, _ in w.result["here"]} == {threading.get_ident()}


@pytest.mark.timeout(30)
def test_an_async_caller_keeps_thread_sensitive_work_where_it_is(seen: Seen) -> None:
    async def caller() -> None:
        async with weave(thread_sensitive=True) as w:

            @w.do
            async def here() -> bool:
                return _thread.get() is None

        assert w.result["here"] is True

    asyncio.run(caller())
    assert [thread for _, thread in seen] == [None]


def test_removed_wrappers_are_not_called(seen: Seen) -> None:
    calls: list[int] = []

    async def wrapper(call: Callable[[], Awaitable[Any]], thread: Executor | None) -> Any:
        calls.append(1)
        return await call()

    remove = add_async_call_wrapper(wrapper)
    remove()
    with weave() as w:

        @w.do
        async def one() -> int:
            return 1

    assert w.result["one"] == 1
    assert calls == []
    assert len(seen) == 1


@pytest.mark.timeout(30)
def test_a_closed_thread_refuses_new_work(seen: Seen) -> None:
    kept: list[Executor] = []
    with weave() as w:

        @w.do
        async def keep() -> int:
            thread = _thread.get()
            assert thread is not None
            kept.append(thread)
            return 1

    assert w.result["keep"] == 1
    with pytest.raises(RuntimeError, match="has ended"):
        kept[0].submit(print)


@pytest.mark.timeout(30)
def test_a_task_thread_runs_calls_in_order_on_one_pool_thread_until_closed() -> None:
    from wove.lanes import TaskThread

    thread = TaskThread()
    release = threading.Event()
    futures = [thread.submit(release.wait, 10)]
    futures += [thread.submit(lambda i=i: (i, threading.current_thread().name)) for i in range(3)]
    assert not any(f.done() for f in futures[1:])  # queued behind the first call
    release.set()
    results = [f.result(timeout=10) for f in futures[1:]]
    assert [i for i, _ in results] == [0, 1, 2]
    assert len({name for _, name in results}) == 1
    assert results[0][1].startswith("wove-")
    ended = thread.close()
    assert ended is not None
    ended.result(timeout=10)
    with pytest.raises(RuntimeError, match="has ended"):
        thread.submit(print)


def test_a_task_thread_never_used_has_nothing_to_wait_for() -> None:
    from wove.lanes import TaskThread

    assert TaskThread().close() is None
