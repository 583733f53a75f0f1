"""Soak: thousands of weaves of every kind, and the process must not grow.

After a warm-up (which grows the shared pool to its working size and makes the loop and
timer threads), the threads, open file descriptors, traced memory and live asyncio tasks
(on a loop the test drives, and on Wove's own loop thread) must stay flat while thousands
more weaves run: sync, async, mapped, failing, timed out, retried, nested, background,
`with` inside a running loop, and merge().
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from guards import finishes_within

import wove
from wove import TaskTimeout, merge, weave

BATCH_BOUND = 60.0  # one batch taking longer than this is a hang
ABANDONED_SLEEP = 0.02  # what a timed-out sync call sleeps on after it was abandoned


class Boom(Exception):
    pass


@pytest.fixture(autouse=True)
def _quiet_wove_logger() -> Iterator[None]:
    # Failing background weaves and abandoned calls log on the `wove` logger; pytest's
    # capture keeps every record until the test ends, which would read as a leak here.
    logger = logging.getLogger("wove")
    was = logger.disabled
    logger.disabled = True
    yield
    logger.disabled = was


@dataclass
class Gauge:
    threads: int
    fds: int
    memory: int
    objects: int

    @classmethod
    def now(cls) -> Gauge:
        # Abandoned timed-out calls go on for ABANDONED_SLEEP; let them return first.
        time.sleep(ABANDONED_SLEEP * 3)
        gc.collect()
        return cls(
            threads=threading.active_count(),
            fds=len(os.listdir("/proc/self/fd")),
            memory=tracemalloc.get_traced_memory()[0],
            objects=len(gc.get_objects()),
        )


def _check_flat(warm: Gauge, end: Gauge, weaves: int) -> None:
    grown = end.memory - warm.memory
    assert end.threads <= warm.threads + 6, f"threads grew from {warm.threads} to {end.threads}"
    assert end.fds <= warm.fds + 3, f"open fds grew from {warm.fds} to {end.fds}"
    assert grown < 500_000, f"traced memory grew by {grown} bytes over {weaves} weaves"
    assert end.objects < warm.objects + 2_000, (
        f"live objects grew from {warm.objects} to {end.objects} over {weaves} weaves"
    )


# --- the weaves of the sync soak --------------------------------------------------------


def plain(i: int) -> None:
    with weave(x=i) as w:

        @w.do
        def a(x):
            return x + 1

        @w.do
        async def b(a):
            await asyncio.sleep(0)
            return a * 2

        @w.do([1, 2, 3, 4])
        def c(item, b):
            return item + b

        @w.do("c", workers=2)
        async def d(item):
            return item - 1

    assert w.result.d == [2 * (i + 1) + k for k in range(4)]


def failing(i: int) -> None:
    with pytest.raises(Boom) as caught, weave() as w:

        @w.do
        async def slow():
            await asyncio.sleep(5)  # cancelled when `boom` fails

        @w.do(range(4))
        def items(item):
            return item

        @w.do
        def boom(items):
            raise Boom(i)

        @w.do
        def never(boom):
            raise AssertionError("ran after its dependency failed")

    assert caught.value is w.result.exception
    assert w.result.items == [0, 1, 2, 3]


def timed_out(i: int) -> None:
    with pytest.raises(TaskTimeout), weave() as w:
        if i % 2:

            @w.do(timeout=0.005)
            def stuck():
                time.sleep(ABANDONED_SLEEP)  # abandoned; returns a moment later

        else:

            @w.do(timeout=0.005)
            async def stuck():
                await asyncio.sleep(5)

        @w.do(range(3))
        async def fine(item):
            return item


def retried(i: int) -> None:
    attempts: list[int] = []
    with weave() as w:

        @w.do(retries=2)
        def flaky():
            attempts.append(1)
            if len(attempts) < 3:
                raise Boom("again")
            return len(attempts)

        @w.do([1, 2], retries=1, timeout=10)
        async def checked(item, flaky):
            return item * flaky

    assert w.result.checked == [3, 6]


def nested(i: int) -> None:
    with weave(n=i) as w:

        @w.do
        def inner_sync(n):
            with weave(n=n) as inner:

                @inner.do([1, 2])
                def twice(item, n):
                    return item * n

            return sum(inner.result.twice)

        @w.do
        async def inner_async(n):
            async with weave(n=n) as inner:

                @inner.do
                async def one(n):
                    return n

                @inner.do
                def two(one):
                    return one + 1

            return inner.result.final

        @w.do
        async def inner_blocking(n):
            with weave(n=n) as inner:  # a plain `with` on Wove's loop thread

                @inner.do
                async def three(n):
                    return n + 3

            return inner.result.three

    assert (w.result.inner_sync, w.result.inner_async, w.result.inner_blocking) == (
        3 * i,
        i + 1,
        i + 3,
    )


def background(i: int) -> None:
    done = threading.Event()
    seen: list[object] = []

    def on_done(result):
        seen.append(result.exception)
        done.set()

    with weave(background=True, on_done=on_done, n=i) as w:

        @w.do
        def value(n):
            if n % 3 == 0:
                raise Boom(n)
            return n

    assert done.wait(10), "on_done was not called"
    assert w.wait(10)
    assert (seen[0] is None) == (i % 3 != 0)


def in_loop(i: int) -> None:
    async def view() -> int:
        with weave(n=i) as w:

            @w.do
            async def a(n):
                return n + 1

            @w.do
            def b(a):
                return a * 2

        return w.result.b

    assert asyncio.run(view()) == (i + 1) * 2


def merged(i: int) -> None:
    def double(x):
        return 2 * x

    async def plus(x):
        await asyncio.sleep(0)
        return x + 1

    with weave() as w:

        @w.do
        async def both():
            return await merge(double, [1, 2, 3]), await merge(plus, [1, 2])

    assert w.result.both == ([2, 4, 6], [2, 3])


def sensitive_and_traced(i: int) -> None:
    with wove.collect() as records, weave(n=i) as w:

        @w.do(thread_sensitive=True)
        def here(n):
            return n

        @w.do([1, 2], retries=1)
        async def there(item, here):
            return item + here

    assert w.result.there == [i + 1, i + 2]
    assert len(records) == 3

    async def in_async() -> int:
        async with weave(n=i) as w:

            @w.do(thread_sensitive=True)
            def here(n):
                return n

        return w.result.here

    assert asyncio.run(in_async()) == i


SYNC_KINDS: list[tuple[Callable[[int], None], int]] = [
    (sensitive_and_traced, 1),
    (plain, 6),
    (failing, 3),
    (timed_out, 1),
    (retried, 2),
    (nested, 2),
    (background, 2),
    (in_loop, 1),
    (merged, 2),
]


def _sync_batch(rounds: int, start: int) -> int:
    count = 0
    for r in range(rounds):
        for kind, times in SYNC_KINDS:
            for k in range(times):
                kind(start + r * 100 + k)
                count += 1
    return count


def _tasks_on_wove_loop() -> int:
    """Live asyncio tasks on Wove's loop thread, counted from a task running there."""
    with weave() as w:

        @w.do
        async def probe():
            return len(asyncio.all_tasks())

    return w.result.probe


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sync_soak_keeps_threads_fds_memory_and_tasks_flat() -> None:
    tracemalloc.start()
    try:
        weaves = finishes_within(BATCH_BOUND, lambda: _sync_batch(15, 0))
        warm = Gauge.now()
        warm_tasks = _tasks_on_wove_loop()
        for batch in range(6):
            weaves += finishes_within(BATCH_BOUND, lambda b=batch: _sync_batch(50, 10_000 * b))
        end = Gauge.now()
        end_tasks = _tasks_on_wove_loop()
    finally:
        tracemalloc.stop()
    assert weaves > 2500
    _check_flat(warm, end, weaves)
    assert end_tasks <= warm_tasks, f"tasks on Wove's loop: {warm_tasks} -> {end_tasks}"


# --- the async soak: on a loop the test drives -------------------------------------------


async def _async_weaves(i: int) -> int:
    async with weave(x=i) as w:

        @w.do
        async def a(x):
            await asyncio.sleep(0)
            return x

        @w.do
        def b(a):
            return a + 1

        @w.do("c_items", workers=3)
        async def c(item, b):
            return item + b

        @w.do
        def c_items():
            return [1, 2, 3, 4, 5]

    assert w.result.c == [i + 2 + k for k in range(5)]

    with pytest.raises(Boom):
        async with weave() as w:

            @w.do
            async def slow():
                await asyncio.sleep(5)

            @w.do([1, 2, 3])
            async def boom(item):
                if item == 2:
                    raise Boom(item)
                await asyncio.sleep(5)

    if i % 10 == 0:
        with pytest.raises(TaskTimeout):
            async with weave() as w:

                @w.do(timeout=0.005)
                def stuck():
                    time.sleep(ABANDONED_SLEEP)

    async with weave() as w:

        @w.do
        async def outer():
            async with weave() as inner:

                @inner.do([1, 2])
                def doubled(item):
                    return 2 * item

            return inner.result.doubled

        @w.do
        async def merged(outer):
            return await merge(lambda x: x + 1, outer)

    assert w.result.merged == [3, 5]

    # A weave whose caller is cancelled: the weave is cancelled and waited for.
    async def cancelled_caller() -> None:
        async with weave() as w:

            @w.do
            async def forever():
                await asyncio.sleep(60)

    task = asyncio.ensure_future(cancelled_caller())
    await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return 5


async def _async_batch(rounds: int, start: int) -> int:
    count = 0
    for r in range(rounds):
        # Some weaves at the same time on the one loop.
        done = await asyncio.gather(*(_async_weaves(start + r * 10 + k) for k in range(3)))
        count += sum(done)
    return count


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_async_soak_on_a_persistent_loop_keeps_everything_flat() -> None:
    loop = asyncio.new_event_loop()

    def drive(rounds: int, start: int) -> int:
        count = loop.run_until_complete(_async_batch(rounds, start))
        left = asyncio.all_tasks(loop)
        assert not left, f"asyncio tasks left on the caller's loop: {left}"
        return count

    tracemalloc.start()
    try:
        weaves = finishes_within(BATCH_BOUND, lambda: drive(20, 0))
        warm = Gauge.now()
        for batch in range(5):
            weaves += finishes_within(BATCH_BOUND, lambda b=batch: drive(100, 10_000 * b))
        end = Gauge.now()
    finally:
        tracemalloc.stop()
        loop.close()
    assert weaves > 3000
    _check_flat(warm, end, weaves)
