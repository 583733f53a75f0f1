"""Lanes: the shared pool, per-weave limits, the deadline thread, loop threads, nesting."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator

import guards
import pytest
from guards import finishes_within
from overlap import Overlap

import wove
from wove import lanes, weave
from wove.lanes import pool as pool_module


@pytest.fixture
def restore_max_threads() -> Iterator[None]:
    before = wove.settings().max_threads
    try:
        yield
    finally:
        wove.configure(max_threads=before)
    assert wove.settings().max_threads == before


@pytest.fixture
def fresh_pool() -> Iterator[None]:
    """A new shared pool for the test, as in a process configured at startup (threads the
    pool grew to in earlier tests would otherwise still be idle in it). Whatever the test
    leaves stuck in it is drained before the process's pool is put back."""
    before = wove.settings().max_threads
    saved = pool_module.replace_pool(None)
    try:
        yield
    finally:
        wove.configure(max_threads=256)
        pool = pool_module.replace_pool(saved)
        if pool is not None:
            pool.submit(lambda: None)  # starts a thread that works through the backlog
        for guard in guards.started:
            guard.join(10)
        guards.started.clear()
        wove.configure(max_threads=before)


# --- the shared pool and loops ------------------------------------------------------------


def _small_weave(index: int) -> tuple[str, str, int]:
    with weave(index=index) as w:

        @w.do
        def in_thread(index: int) -> str:
            return threading.current_thread().name

        @w.do
        async def on_loop(in_thread: str) -> str:
            return threading.current_thread().name

        @w.do
        async def loop_id() -> int:
            return id(asyncio.get_running_loop())

    return w.result.in_thread, w.result.on_loop, w.result.loop_id


def test_the_shared_pool_and_loop_are_reused_across_weaves() -> None:
    _small_weave(-1)  # warm up: the pool and the loop thread exist from here on
    existing = {thread.name for thread in threading.enumerate()}
    outcomes = [_small_weave(index) for index in range(20)]
    after = {thread.name for thread in threading.enumerate()}

    assert len(after - existing) <= 3
    thread_names = {name for name, _, _ in outcomes}
    loop_names = {name for _, name, _ in outcomes}
    loop_ids = {loop_id for _, _, loop_id in outcomes}
    assert all(name.startswith("wove-") for name in thread_names)
    assert len(thread_names - existing) <= 3  # sequential weaves reuse idle pool threads
    assert len(loop_names) == 1
    assert next(iter(loop_names)).startswith("wove-loop")
    assert len(loop_ids) == 1  # one loop, not one per weave


def test_async_blocks_use_the_callers_loop_and_no_new_threads() -> None:
    async def main() -> tuple[set[str], int]:
        names = set()
        before = 0
        for index in range(21):
            if index == 1:
                before = len(threading.enumerate())
            async with weave() as w:

                @w.do
                async def where() -> str:
                    return threading.current_thread().name

                @w.do
                def pooled() -> str:
                    return threading.current_thread().name

            names.add(w.result.where)
            assert w.result.pooled.startswith("wove-")
        return names, len(threading.enumerate()) - before

    names, grown = asyncio.run(main())
    assert names == {threading.current_thread().name}
    assert grown <= 3


def test_pool_threads_are_daemons() -> None:
    with weave() as w:

        @w.do
        def daemon() -> bool:
            return threading.current_thread().daemon

    assert w.result.daemon is True


# --- Limiter ----------------------------------------------------------------------------------


def test_limiter_bounds_concurrent_jobs_and_runs_them_all() -> None:
    overlap = Overlap()
    done = threading.Semaphore(0)
    limiter = lanes.Limiter(lanes.thread_pool().submit, 3)

    def job() -> None:
        with overlap.running():
            time.sleep(0.02)
        done.release()

    for _ in range(12):
        limiter.submit(job)
    for _ in range(12):
        assert done.acquire(timeout=5)
    assert overlap.calls == 12
    assert overlap.peak == 3


def test_limiter_survives_a_raising_job() -> None:
    done = threading.Event()
    limiter = lanes.Limiter(lanes.thread_pool().submit, 1)

    def bad() -> None:
        raise RuntimeError("internal")

    limiter.submit(bad)
    limiter.submit(done.set)
    assert done.wait(5)


# --- DeadlineWatcher ----------------------------------------------------------------------------


def test_deadline_watcher_fires_in_time_order_and_skips_cancelled() -> None:
    watcher = lanes.DeadlineWatcher()
    fired: list[tuple[str, float]] = []
    all_fired = threading.Event()
    now = time.monotonic()
    due = {"late": now + 0.15, "early": now + 0.03, "middle": now + 0.08, "gone": now + 0.05}

    def callback(name: str) -> Callable[[], None]:
        def call() -> None:
            fired.append((name, time.monotonic()))
            if name == "late":
                all_fired.set()

        return call

    deadlines = {name: watcher.arm(when, callback(name)) for name, when in due.items()}
    deadlines["gone"].cancel()

    assert all_fired.wait(5)
    time.sleep(0.02)
    assert [name for name, _ in fired] == ["early", "middle", "late"]
    for name, at in fired:
        assert at >= due[name]


def test_deadline_watcher_wakes_for_an_earlier_deadline() -> None:
    watcher = lanes.DeadlineWatcher()
    fired = threading.Event()
    far = watcher.arm(time.monotonic() + 30, lambda: None)
    time.sleep(0.02)  # the watcher thread now sleeps until the far deadline
    started = time.monotonic()
    watcher.arm(started + 0.05, fired.set)
    assert fired.wait(5)
    assert time.monotonic() - started < 1.0
    far.cancel()


def test_deadline_watcher_survives_a_raising_callback() -> None:
    watcher = lanes.DeadlineWatcher()
    fired = threading.Event()

    def bad() -> None:
        raise RuntimeError("internal")

    now = time.monotonic()
    watcher.arm(now + 0.01, bad)
    watcher.arm(now + 0.03, fired.set)
    assert fired.wait(5)


# --- nesting inside pool threads and loop threads ------------------------------------------------


def _nested_weaves(outer_items: int, inner_items: int) -> list[list[int]]:
    with weave() as w:

        @w.do(range(outer_items))
        def outer(item: int) -> list[int]:
            with weave(base=item) as inner:

                @inner.do(range(inner_items))
                def parts(part: int, base: int) -> int:
                    time.sleep(0.005)
                    return base * 10 + part

                @inner.do
                async def checked(parts: list[int]) -> list[int]:
                    return parts

            return inner.result.checked  # type: ignore[no-any-return]

    return w.result.outer  # type: ignore[no-any-return]


@pytest.mark.parametrize("max_threads", [1, 2])
@pytest.mark.usefixtures("fresh_pool")
def test_nested_weaves_in_pool_threads_do_not_deadlock(max_threads: int) -> None:
    wove.configure(max_threads=max_threads)
    result = finishes_within(5, lambda: _nested_weaves(4, 3))
    assert result == [[item * 10 + part for part in range(3)] for item in range(4)]


@pytest.mark.usefixtures("fresh_pool")
def test_doubly_nested_weaves_with_two_threads() -> None:
    wove.configure(max_threads=2)

    def run() -> list[list[list[int]]]:
        with weave() as w:

            @w.do(range(3))
            def top(item: int) -> list[list[int]]:
                return _nested_weaves(3, 2)

        return w.result.top  # type: ignore[no-any-return]

    expected = [[item * 10 + part for part in range(2)] for item in range(3)]
    assert finishes_within(5, run) == [expected] * 3


def _eight_items(overlap: Overlap) -> list[int]:
    with weave() as w:

        @w.do(range(8))
        def items(item: int) -> int:
            with overlap.running():
                time.sleep(0.02)
            return item

    return w.result.items  # type: ignore[no-any-return]


@pytest.mark.usefixtures("fresh_pool")
def test_max_threads_bounds_the_shared_pool() -> None:
    wove.configure(max_threads=2)
    overlap = Overlap()
    assert finishes_within(5, lambda: _eight_items(overlap)) == list(range(8))
    assert overlap.peak == 2


@pytest.mark.usefixtures("restore_max_threads")
def test_lowering_max_threads_bounds_a_pool_that_has_grown() -> None:
    grown = Overlap()
    assert _eight_items(grown) == list(range(8))
    assert grown.peak == 8  # the pool now holds at least 8 (idle) threads
    wove.configure(max_threads=2)
    overlap = Overlap()

    assert finishes_within(5, lambda: _eight_items(overlap)) == list(range(8))
    assert overlap.peak <= 2


def test_sync_weave_inside_an_async_task_of_a_sync_weave() -> None:
    def run() -> tuple[str, str, int]:
        with weave() as w:

            @w.do
            async def outer_loop() -> str:
                return threading.current_thread().name

            @w.do
            async def nested() -> tuple[str, int]:
                with weave() as inner:

                    @inner.do
                    async def inner_loop() -> str:
                        await asyncio.sleep(0.01)
                        return threading.current_thread().name

                    @inner.do
                    def inner_thread(inner_loop: str) -> int:
                        return 1

                    @inner.do
                    async def inner_total(inner_thread: int) -> int:
                        return inner_thread + 1

                return inner.result.inner_loop, inner.result.inner_total

        return w.result.outer_loop, *w.result.nested

    outer_loop, inner_loop, total = finishes_within(5, run)
    assert total == 2
    assert outer_loop.startswith("wove-loop")
    assert inner_loop.startswith("wove-loop")
    assert inner_loop != outer_loop  # the blocked loop is not asked to run the inner tasks


def test_sync_weave_inside_an_async_task_of_an_async_weave() -> None:
    async def main() -> int:
        async with weave() as w:

            @w.do
            async def nested() -> int:
                with weave() as inner:

                    @inner.do
                    async def x() -> int:
                        await asyncio.sleep(0.01)
                        return 41

                    @inner.do
                    def y(x: int) -> int:
                        return x + 1

                return inner.result.y  # type: ignore[no-any-return]

        return w.result.nested  # type: ignore[no-any-return]

    assert finishes_within(5, lambda: asyncio.run(main())) == 42


def test_an_idle_worker_does_not_keep_the_last_weaves_values() -> None:
    import gc
    import weakref

    class Payload:
        pass

    refs: list[weakref.ref[Payload]] = []
    with weave() as w:

        @w.do
        def made() -> Payload:
            payload = Payload()
            refs.append(weakref.ref(payload))
            return payload

    del w
    gc.collect()
    time.sleep(0.05)  # let the worker get back to waiting for a job
    gc.collect()
    assert refs[0]() is None


# --- threads held by something that is not a job ------------------------------------------


def _guarded(function: Callable[[], None]) -> threading.Thread:
    """A daemon thread the fresh_pool fixture joins at teardown."""
    thread = threading.Thread(target=function, name="test-guarded", daemon=True)
    guards.started.append(thread)
    thread.start()
    return thread


def _wait_until(predicate: Callable[[], bool], seconds: float = 2.0) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.005)
    return predicate()


@pytest.mark.usefixtures("fresh_pool")
def test_abandoned_calls_count_against_max_threads_and_later_work_times_out_unstarted() -> None:
    # max_threads is a hard cap: under a slow database, timeouts must not grow the
    # process's threads (and so its connections) without bound.
    wove.configure(max_threads=2)
    hang = threading.Event()  # a call that never returns (a socket without a timeout)
    started: list[str] = []
    try:
        for _ in range(2):  # as many abandoned calls as the pool has threads
            with pytest.raises(wove.TaskTimeout), weave() as w:

                @w.do(timeout=0.05)
                def stuck() -> None:
                    hang.wait(10)

        pool = lanes.thread_pool()
        assert pool.abandoned == 2
        assert pool.threads == 2

        def later() -> BaseException | None:
            try:
                with weave() as w:

                    @w.do(timeout=0.2)
                    def quick() -> str:
                        started.append("quick")
                        return "ok"

            except wove.TaskTimeout as error:
                return error
            return None

        error = finishes_within(3, later)
        assert isinstance(error, wove.TaskTimeout)
        assert "never started" in "\n".join(error.__notes__)
    finally:
        hang.set()
    pool = lanes.thread_pool()
    assert _wait_until(lambda: pool.abandoned == 0)
    time.sleep(0.1)
    assert started == []  # abandoned before it started: it never starts
    assert pool.threads <= 2


@pytest.mark.usefixtures("fresh_pool")
def test_raising_max_threads_serves_jobs_already_queued() -> None:
    wove.configure(max_threads=1)
    holding, release, done = threading.Event(), threading.Event(), threading.Event()

    def blocker() -> None:
        with weave() as w:

            @w.do
            def hold() -> None:
                holding.set()
                release.wait(10)

    def waiting() -> None:
        with weave() as w:

            @w.do
            def quick() -> int:
                return 1

        done.set()

    try:
        _guarded(blocker)
        assert holding.wait(2)  # the pool's only thread is taken
        _guarded(waiting)
        pool = lanes.thread_pool()
        assert _wait_until(lambda: pool._queued == 1)  # `quick` waits behind the bound
        assert not done.is_set()
        wove.configure(max_threads=2)  # room for one more thread: it serves `quick`
        assert done.wait(2)
    finally:
        release.set()


@pytest.mark.parametrize("how", ["block", "process"])
@pytest.mark.usefixtures("fresh_pool")
def test_waiting_for_a_background_weave_in_a_pool_thread_does_not_deadlock(how: str) -> None:
    wove.configure(max_threads=1)  # the waiting task holds the pool's only thread

    def run() -> bool:
        with weave() as w:

            @w.do
            def kick_off_and_wait() -> bool:
                with weave(background=True) as bg:

                    @bg.do
                    def job() -> str:
                        return "done"

                if how == "block":
                    return bg.wait(2)
                return wove.wait_for_background(2)

        return w.result.kick_off_and_wait  # type: ignore[no-any-return]

    assert finishes_within(5, run) is True


def test_a_nested_weave_never_sends_async_work_to_a_loop_a_weave_waits_on() -> None:
    # outer's async task runs on a Wove loop thread and waits there for a sync weave,
    # whose sync task (on a pool thread, no running loop) runs a weave with an async
    # task: that one must not go to the loop that is blocked waiting for it.
    def innermost() -> str:
        with weave() as w:

            @w.do
            async def leaf() -> str:
                return "leaf"

        return w.result.leaf  # type: ignore[no-any-return]

    def sync_helper() -> str:
        with weave() as w:
            # timeout=: a regression fails with TaskTimeout and unblocks the loop,
            # instead of leaving it deadlocked for the rest of the test session.
            @w.do(timeout=3)
            def middle() -> str:
                return innermost()

        return w.result.middle  # type: ignore[no-any-return]

    def run() -> str:
        with weave() as w:

            @w.do
            async def outer() -> str:
                return sync_helper()

        return w.result.outer  # type: ignore[no-any-return]

    assert finishes_within(5, run) == "leaf"
