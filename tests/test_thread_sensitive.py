"""Thread-sensitive sync tasks (the caller's thread) and wrappers around pool calls."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from guards import finishes_within
from overlap import Overlap

import wove
from wove import merge, weave


def _here() -> int:
    return threading.get_ident()


def test_a_thread_sensitive_task_runs_on_the_thread_that_entered_the_weave() -> None:
    with weave() as w:

        @w.do(thread_sensitive=True)
        def on_caller() -> int:
            return _here()

        @w.do
        def on_pool() -> int:
            return _here()

        @w.do(thread_sensitive=True)
        def after(on_caller: int, on_pool: int) -> tuple[int, int]:
            return _here(), on_pool

    caller = _here()
    assert w.result.on_caller == caller
    assert w.result.on_pool != caller
    assert w.result.after == (caller, w.result.on_pool)  # no continuation across lanes


def test_the_weave_can_make_every_sync_task_thread_sensitive_but_one() -> None:
    with weave(thread_sensitive=True) as w:

        @w.do
        def first() -> int:
            return _here()

        @w.do(thread_sensitive=False)
        def parallel() -> int:
            return _here()

        @w.do
        async def on_loop() -> int:
            return _here()

    assert w.result.first == _here()
    assert w.result.parallel not in (_here(), w.result.on_loop)
    assert w.result.on_loop != _here()


@pytest.fixture
def restore_thread_sensitive() -> Iterator[None]:
    before = wove.settings().thread_sensitive
    try:
        yield
    finally:
        wove.configure(thread_sensitive=before)


@pytest.mark.usefixtures("restore_thread_sensitive")
def test_a_configured_policy_decides_when_nothing_else_does() -> None:
    inside_transaction = threading.local()
    wove.configure(thread_sensitive=lambda: getattr(inside_transaction, "on", False))

    def run() -> tuple[int, int]:
        with weave() as w:

            @w.do
            def undecided() -> int:
                return _here()

            @w.do(thread_sensitive=False)
            def decided() -> int:
                return _here()

        return w.result.undecided, w.result.decided

    undecided, decided = run()
    assert undecided != _here()
    inside_transaction.on = True
    undecided, decided = run()
    assert undecided == _here()  # the policy, read on the caller's thread at the start
    assert decided != _here()  # a task's own choice wins


def test_items_of_a_thread_sensitive_mapped_task_run_one_at_a_time_on_the_caller() -> None:
    overlap = Overlap()
    with weave() as w:

        @w.do(range(4), thread_sensitive=True)
        def items(item: int) -> int:
            with overlap.running():
                time.sleep(0.01)
            return _here()

    assert set(w.result.items) == {_here()}
    assert overlap.peak == 1


def test_async_callers_and_background_weaves_use_one_dedicated_thread() -> None:
    async def main() -> list[int]:
        async with weave() as w:

            @w.do(thread_sensitive=True)
            def one() -> int:
                return _here()

            @w.do(thread_sensitive=True)
            def two() -> int:
                return _here()

        return [w.result.one, w.result.two]

    on_async = asyncio.run(main())
    assert len(set(on_async)) == 1  # one thread for both (asgiref's, or Wove's own)
    assert on_async[0] != _here()

    with weave(background=True) as w:

        @w.do(thread_sensitive=True)
        def background() -> str:
            return threading.current_thread().name

    assert w.wait(5)
    assert w.result.background == "wove-sensitive"  # no caller waits: the dedicated thread


def test_thread_sensitive_on_an_async_task_is_refused() -> None:
    with pytest.raises(wove.InvalidOptionError, match="async task 'fetched'"), weave() as w:

        @w.do(thread_sensitive=True)
        async def fetched() -> int:
            return 1


def test_bad_thread_sensitive_values_are_refused() -> None:
    with pytest.raises(wove.InvalidOptionError, match="thread_sensitive"):
        weave(thread_sensitive="yes")  # type: ignore[arg-type]
    with pytest.raises(wove.InvalidOptionError, match="thread_sensitive"):
        wove.configure(thread_sensitive=3)  # type: ignore[arg-type]
    with pytest.raises(wove.InvalidOptionError, match="thread_sensitive"), weave() as w:

        @w.do(thread_sensitive=1)  # type: ignore[arg-type]
        def task() -> None:
            return None


def test_the_trace_names_the_caller_lane() -> None:
    with wove.collect() as records, weave() as w:

        @w.do(thread_sensitive=True)
        def here() -> int:
            return 1

        @w.do
        def there() -> int:
            return 2

    lanes = {record.task: record.lane for record in records}
    assert lanes == {"here": "caller", "there": "thread"}
    assert w.result.here == 1


_inside = threading.local()


@pytest.fixture
def wrapped_calls() -> Iterator[list[int]]:
    calls: list[int] = []

    def wrapper(call: Callable[[], Any]) -> Any:
        calls.append(1)
        _inside.on = True
        try:
            return call()
        finally:
            _inside.on = False

    remove = wove.add_thread_call_wrapper(wrapper)
    try:
        yield calls
    finally:
        remove()


def _wrapped_now() -> bool:
    return getattr(_inside, "on", False)


def test_pool_calls_run_inside_the_wrappers_and_caller_calls_do_not(
    wrapped_calls: list[int],
) -> None:
    with weave() as w:

        @w.do
        def pooled() -> bool:
            return _wrapped_now()

        @w.do(thread_sensitive=True)
        def on_caller() -> bool:
            return _wrapped_now()

        @w.do
        async def merged() -> list[bool]:
            return [await merge(_wrapped_now), *await merge(lambda _: _wrapped_now(), [1, 2])]

    assert w.result.pooled is True
    assert w.result.on_caller is False
    assert w.result.merged == [True, True, True]
    assert len(wrapped_calls) == 4  # pooled and the three merged sync calls


def test_a_removed_wrapper_no_longer_runs() -> None:
    calls: list[int] = []
    remove = wove.add_thread_call_wrapper(lambda call: calls.append(1) or call())
    remove()
    with weave() as w:

        @w.do
        def task() -> int:
            return 5

    assert w.result.task == 5
    assert calls == []


def test_a_thread_sensitive_task_that_waits_on_another_one_does_not_deadlock() -> None:
    async def inner() -> str:
        async with weave() as w:

            @w.do(thread_sensitive=True)
            def nested() -> str:
                return threading.current_thread().name

        return str(w.result.nested)

    async def outer() -> str:
        async with weave() as w:

            @w.do(thread_sensitive=True)
            def waiting() -> str:
                return asyncio.run(inner())  # blocks its dedicated thread

        return str(w.result.waiting)

    name = finishes_within(10.0, lambda: asyncio.run(outer()))
    assert name.startswith("wove-sensitive")


@pytest.mark.usefixtures("restore_thread_sensitive")
def test_a_raising_policy_reaches_a_background_weaves_on_done() -> None:
    def policy() -> bool:
        raise LookupError("policy broke")

    wove.configure(thread_sensitive=policy)
    seen: list[BaseException | None] = []
    with weave(background=True, on_done=lambda result: seen.append(result.exception)) as w:

        @w.do
        def task() -> int:
            return 1

    assert w.wait(5)
    assert isinstance(seen[0], LookupError)


def test_an_abandoned_thread_sensitive_call_does_not_hold_up_later_weaves() -> None:
    release = threading.Event()

    async def first() -> None:
        async with weave() as w:

            @w.do(thread_sensitive=True, timeout=0.1)
            def stuck() -> None:
                release.wait(5)

    async def second() -> float:
        started = time.monotonic()
        async with weave() as w:

            @w.do(thread_sensitive=True)
            def quick() -> int:
                return 1

        assert w.result.quick == 1
        return time.monotonic() - started

    try:
        with pytest.raises(wove.TaskTimeout):
            asyncio.run(first())
        assert finishes_within(10.0, lambda: asyncio.run(second())) < 2.0
    finally:
        release.set()


def test_a_caller_thread_wrapper_also_wraps_thread_sensitive_calls() -> None:
    seen: list[tuple[str, str]] = []

    def observer(call: Callable[[], Any]) -> Any:
        seen.append(("wrapped", threading.current_thread().name))
        return call()

    remove = wove.add_thread_call_wrapper(observer, caller_thread=True)
    try:
        with weave() as w:

            @w.do
            def pooled() -> str:
                return threading.current_thread().name

            @w.do(thread_sensitive=True)
            def on_caller() -> str:
                return threading.current_thread().name

            @w.do
            async def on_loop() -> int:
                return 1

    finally:
        remove()
    assert sorted(name for _, name in seen) == sorted([w.result.pooled, w.result.on_caller])
    assert w.result.on_caller == threading.current_thread().name


def test_the_exit_hook_runs_on_a_pool_thread_as_it_leaves() -> None:
    exits: list[str] = []
    remove = wove.add_thread_call_wrapper(
        lambda call: call(), at_thread_exit=lambda: exits.append(threading.current_thread().name)
    )
    try:
        overlap = Overlap()
        with weave() as w:

            @w.do([1, 2, 3])
            def task(item: int) -> None:
                with overlap.running():
                    time.sleep(0.05)

        assert overlap.peak >= 2  # so at least one worker is above the bound below
        # Lowering the bound makes idle workers above it leave now.
        wove.configure(max_threads=1)
        deadline = time.monotonic() + 10
        while not exits and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        wove.configure(max_threads=256)
        remove()
    assert exits
    assert all(name.startswith("wove-") for name in exits)


def test_an_error_hint_adds_a_note_and_keeps_the_exception() -> None:
    def hint(error: BaseException, task: str) -> str | None:
        return f"advice for {task}" if isinstance(error, LookupError) else None

    def broken_hint(error: BaseException, task: str) -> str | None:
        raise RuntimeError("a hint that fails is skipped")

    removes = [wove.add_error_hint(broken_hint), wove.add_error_hint(hint)]
    try:
        with pytest.raises(KeyError) as raised, weave() as w:

            @w.do
            def lookup() -> None:
                raise KeyError("missing")

        with pytest.raises(ValueError, match="no advice") as other, weave() as w:

            @w.do
            def value() -> None:
                raise ValueError("no advice for this one")

    finally:
        for remove in removes:
            remove()
    assert "advice for lookup" in raised.value.__notes__
    assert not any("advice" in note for note in other.value.__notes__)
