"""Background weaves in this process: ``weave(background=True, on_done=...)`` (SPEC §7)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest

import wove
from wove import weave

WAIT = 5.0  # generous upper bound for anything that should finish in well under a second


def _wove_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name.startswith("wove") and record.levelno >= logging.ERROR
    ]


def _wait_for_records(caplog: pytest.LogCaptureFixture, count: int) -> list[logging.LogRecord]:
    # A log written by on_done's caller may land a moment after w.wait() returns.
    deadline = time.monotonic() + WAIT
    while len(_wove_errors(caplog)) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return _wove_errors(caplog)


# --- the block returns at once, and the weave can be waited for ---------------------------


def test_block_returns_at_once_and_the_weave_completes_after() -> None:
    started = time.perf_counter()
    with weave(background=True, amount=2) as w:

        @w.do
        def slow(amount):
            time.sleep(0.3)
            return amount * 10

        @w.do
        def total(slow):
            return slow + 1

    elapsed = time.perf_counter() - started
    done_right_after = w.done

    assert elapsed < 0.1, f"the background block took {elapsed:.3f} s to return"
    assert done_right_after is False
    assert w.wait(0.01) is False, "wait(timeout) must return False while the weave runs"
    assert w.wait(WAIT) is True
    assert w.done is True
    assert w.result.slow == 20
    assert w.result.total == 21
    assert w.result.exception is None


def test_result_before_the_weave_finished_raises_weave_state_error() -> None:
    release = threading.Event()
    with weave(background=True) as w:

        @w.do
        def held():
            release.wait(WAIT)
            return "held"

    try:
        with pytest.raises(wove.WeaveStateError):
            _ = w.result
        assert w.done is False
    finally:
        release.set()
    assert w.wait(WAIT) is True
    assert w.result.held == "held"


# --- on_done: success, failure, planning failure, async, failing ---------------------------


def test_on_done_receives_the_result_on_success() -> None:
    delivered: list[Any] = []
    done_thread: list[int] = []

    def on_done(result):
        done_thread.append(threading.get_ident())
        delivered.append((result.exception, result.first, result.second, result.final))

    with weave(background=True, on_done=on_done, base=3) as w:

        @w.do
        def first(base):
            return base + 1

        @w.do
        async def second(first):
            await asyncio.sleep(0.01)
            return first * 2

    assert w.wait(WAIT) is True
    # wait() covers on_done too: it has already run when wait returns True.
    assert delivered == [(None, 4, 8, 8)]
    assert done_thread != [threading.get_ident()]


def test_failure_reaches_on_done_and_is_logged_with_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="wove")
    delivered: list[BaseException | None] = []

    def on_done(result):
        delivered.append(result.exception)

    with weave(background=True, on_done=on_done) as w:

        @w.do
        def fine():
            return 1

        @w.do
        def broken(fine):
            raise ValueError("background boom")

    # The block itself did not raise.
    assert w.wait(WAIT) is True
    assert len(delivered) == 1
    error = delivered[0]
    assert isinstance(error, ValueError)
    assert str(error) == "background boom"
    assert w.result.exception is error
    assert w.result.fine == 1

    records = _wait_for_records(caplog, 1)
    matching = [r for r in records if r.exc_info and r.exc_info[1] is error]
    assert matching, f"the failure was not logged on the wove logger: {records!r}"
    assert "Traceback" in caplog.text
    assert "background boom" in caplog.text
    assert "broken" in caplog.text  # the traceback shows the failing task's frame


def test_planning_failure_reaches_on_done_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="wove")
    delivered: list[BaseException | None] = []

    def on_done(result):
        delivered.append(result.exception)

    # The block must not raise: the unresolved name reaches on_done instead.
    with weave(background=True, on_done=on_done, known=1) as w:

        @w.do
        def needs(known, no_such_name_anywhere):
            return known

    assert w.wait(WAIT) is True
    assert len(delivered) == 1
    error = delivered[0]
    assert isinstance(error, NameError)
    assert isinstance(error, wove.UnresolvedNameError)
    assert "no_such_name_anywhere" in str(error)
    assert w.result.exception is error

    records = _wait_for_records(caplog, 1)
    assert any(r.exc_info and r.exc_info[1] is error for r in records), records
    assert "no_such_name_anywhere" in caplog.text


def test_async_on_done_is_awaited() -> None:
    delivered: list[Any] = []

    async def on_done(result):
        await asyncio.sleep(0.05)
        delivered.append((result.final, asyncio.get_running_loop() is not None))

    with weave(background=True, on_done=on_done) as w:

        @w.do
        def answer():
            return 42

    assert w.wait(WAIT) is True
    assert delivered == [(42, True)]


def test_async_on_done_sees_a_failure() -> None:
    delivered: list[BaseException | None] = []

    async def on_done(result):
        delivered.append(result.exception)

    with weave(background=True, on_done=on_done) as w:

        @w.do
        async def broken():
            raise KeyError("async failure")

    assert w.wait(WAIT) is True
    assert len(delivered) == 1
    assert isinstance(delivered[0], KeyError)


def test_failing_on_done_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="wove")

    def on_done(result):
        raise RuntimeError("on_done broke")

    with weave(background=True, on_done=on_done) as w:

        @w.do
        def fine():
            return 1

    assert w.wait(WAIT) is True
    records = _wait_for_records(caplog, 1)
    broken = [
        r
        for r in records
        if r.exc_info
        and isinstance(r.exc_info[1], RuntimeError)
        and "on_done broke" in str(r.exc_info[1])
    ]
    assert broken, f"the failing on_done was not logged: {records!r}"
    assert "Traceback" in caplog.text
    assert w.result.fine == 1


def test_failing_async_on_done_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="wove")

    async def on_done(result):
        raise RuntimeError("async on_done broke")

    with weave(background=True, on_done=on_done) as w:

        @w.do
        def fine():
            return 1

    assert w.wait(WAIT) is True
    records = _wait_for_records(caplog, 1)
    assert any(r.exc_info and "async on_done broke" in str(r.exc_info[1]) for r in records), records
    assert "Traceback" in caplog.text


# --- waiting for every outstanding background weave (shutdown) -----------------------------


def test_wait_for_background_waits_for_all_weaves_and_their_on_done() -> None:
    finished: list[int] = []
    lock = threading.Lock()

    def on_done(result):
        time.sleep(0.1)
        with lock:
            finished.append(result.final)

    for index in range(3):
        with weave(background=True, on_done=on_done, index=index) as w:

            @w.do
            def slow(index):
                time.sleep(0.2 + 0.05 * index)
                return index

    assert not w.done
    assert wove.wait_for_background(WAIT) is True
    assert sorted(finished) == [0, 1, 2]


def test_wait_for_background_returns_false_while_a_weave_still_runs() -> None:
    release = threading.Event()
    with weave(background=True) as w:

        @w.do
        def held():
            release.wait(WAIT)
            return "held"

    try:
        started = time.monotonic()
        assert wove.wait_for_background(0.1) is False
        elapsed = time.monotonic() - started
        assert 0.05 <= elapsed < 2.0, f"wait_for_background(0.1) took {elapsed:.3f} s"
        assert w.done is False
    finally:
        release.set()
    assert wove.wait_for_background(WAIT) is True
    assert w.done is True
    assert w.result.held == "held"


# --- refused combinations ------------------------------------------------------------------


def test_on_done_without_background_is_refused() -> None:
    with pytest.raises(wove.InvalidOptionError, match="background=True") as caught:
        weave(on_done=lambda result: None)
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, wove.WoveError)


@pytest.mark.parametrize("fork", [True, "fork", "spawn"])
def test_fork_without_background_is_refused(fork: Any) -> None:
    with pytest.raises(wove.InvalidOptionError, match="background=True") as caught:
        weave(fork=fork)
    assert isinstance(caught.value, ValueError)


# --- inside async code ---------------------------------------------------------------------


def test_background_weave_in_async_with_returns_at_once_and_outlives_the_loop() -> None:
    async def main() -> tuple[wove.WeaveBlock, float, bool]:
        started = time.perf_counter()
        async with weave(background=True, word="fetched") as w:

            @w.do
            async def fetched(word):
                await asyncio.sleep(0.3)
                return word

            @w.do
            def shouted(fetched):
                return fetched.upper() + "!"

        return w, time.perf_counter() - started, w.done

    w, elapsed, done_at_exit = asyncio.run(main())
    assert elapsed < 0.1, f"the background async block took {elapsed:.3f} s to return"
    assert done_at_exit is False
    # asyncio.run() has closed the caller's loop: the weave must not depend on it.
    assert w.wait(WAIT) is True
    assert w.result.exception is None
    assert w.result.shouted == "FETCHED!"


def test_background_weave_in_async_code_does_not_block_the_loop() -> None:
    async def main() -> tuple[int, Any]:
        async with weave(background=True) as w:

            @w.do
            def blocking():
                time.sleep(0.3)
                return "blocked a thread, not the loop"

        ticks = 0
        while not w.done:
            ticks += 1
            await asyncio.sleep(0.01)
            assert ticks < WAIT / 0.01
        return ticks, w.result.blocking

    ticks, value = asyncio.run(main())
    assert ticks >= 5, "the caller's loop was blocked while the background weave ran"
    assert value == "blocked a thread, not the loop"


# --- no thread per weave -------------------------------------------------------------------


def _thread_names() -> list[str]:
    return [thread.name for thread in threading.enumerate()]


def test_concurrent_background_weaves_do_not_get_a_thread_each() -> None:
    # Warm up the shared machinery (pool, loop thread) so only per-weave growth counts.
    with weave(background=True) as warm:

        @warm.do
        async def noop():
            return None

    assert warm.wait(WAIT)
    before = threading.active_count()

    blocks = []
    for index in range(20):
        with weave(background=True, index=index) as w:

            @w.do
            async def napped(index):
                await asyncio.sleep(0.3)
                return index

        blocks.append(w)

    during = threading.active_count()
    assert not all(block.done for block in blocks), "the weaves should still be running"
    assert all(block.wait(WAIT) for block in blocks)
    after = threading.active_count()

    assert [block.result.napped for block in blocks] == list(range(20))
    assert during - before <= 3, (
        f"{during - before} new threads for 20 background weaves of async tasks: {_thread_names()}"
    )
    assert after - before <= 3


def test_sequential_background_weaves_reuse_the_shared_pool() -> None:
    with weave(background=True) as warm:

        @warm.do
        def noop():
            return None

    assert warm.wait(WAIT)
    before = threading.active_count()
    peak = before
    for index in range(20):
        with weave(background=True, on_done=lambda result: None, index=index) as w:

            @w.do
            def small(index):
                return index

        peak = max(peak, threading.active_count())
        assert w.wait(WAIT)
        assert w.result.small == index
    grown = peak - before
    assert grown <= 5, f"{grown} new threads for 20 sequential background weaves"


def test_the_execution_plan_of_a_background_weave_is_readable_at_once() -> None:
    with weave(background=True) as w:

        @w.do
        def first() -> int:
            return 1

        @w.do
        def second(first: int) -> int:
            return first + 1

    assert w.execution_plan["sorted_tasks"] == ["first", "second"]
    assert w.wait(5)
    assert w.result.second == 2


def test_done_and_wait_refuse_a_detached_weave(tmp_path: Any) -> None:
    import os
    import signal

    with weave(background=True, fork=True) as w:

        @w.do
        def nothing() -> None:
            return None

    try:
        assert isinstance(w.pid, int)
        with pytest.raises(wove.WeaveStateError, match="detached process"):
            w.wait(1)
        with pytest.raises(wove.WeaveStateError, match="on_done"):
            _ = w.done
        with pytest.raises(wove.WeaveStateError):
            _ = w.result
    finally:
        try:
            os.kill(w.pid or 0, signal.SIGKILL)
        except ProcessLookupError:
            pass
