"""Review of the restructured engine (wove/engine, wove/lanes): one test per defect found.

Each test states the correct behaviour and FAILS on the engine under review, unless its
comment says it is a guard (it passes, and pins a subtle property that was checked).
Scenarios that leave a rogue coroutine or thread behind, patch the engine, or can hang
run in a fresh interpreter (:func:`_isolated`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

import wove
from wove import weave

WOVE_ROOT = os.path.dirname(os.path.dirname(wove.__file__))


def _isolated(code: str, timeout: float) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON line last. A hang is
    reported as {"hung": True}."""
    try:
        done = subprocess.run(
            [sys.executable, "-P", "-c", textwrap.dedent(code)],
            timeout=timeout,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": WOVE_ROOT},
        )
    except subprocess.TimeoutExpired:
        return {"hung": True}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no report from the child:\n{done.stdout}\n{done.stderr}"
    return json.loads(lines[-1])


# --- 1. A timed task's "waits for a thread" deadline fires while its own work runs -----
#
# Run._launch (run.py:264) wraps EVERY job of a THREAD task with a timeout in
# _waits_for_a_thread (run.py:277), and a mapped task launches one job per worker. The
# first workers claim and run every item; the other worker jobs wait (in the weave's
# Limiter, or in the capped pool queue) and their deadline fails the whole task with
# "waited for a thread and never started", although every item started and each one
# finished well within its timeout.


@pytest.mark.timeout(30)
@pytest.mark.parametrize("bound", ["max_workers", "max_threads"])
def test_mapped_task_with_timeout_does_not_time_out_behind_its_own_workers(bound):
    outcome = _isolated(
        f"""
        import json, time, wove
        from wove import weave
        bound = {bound!r}
        if bound == "max_threads":
            wove.configure(max_threads=2)
        options = {{"max_workers": 2}} if bound == "max_workers" else {{}}
        report = {{}}
        try:
            with weave(**options) as w:
                @w.do([1, 2, 3, 4, 5, 6], timeout=0.5)
                def item(x):
                    time.sleep(0.2)  # each item is well within its timeout
                    return x
            report["value"] = w.result.item
        except Exception as error:
            report["error"] = repr(error)
            report["notes"] = getattr(error, "__notes__", [])
        print(json.dumps(report))
        """,
        timeout=20,
    )
    assert outcome.get("value") == [1, 2, 3, 4, 5, 6], outcome


@pytest.mark.timeout(30)
def test_timed_task_queued_behind_the_weaves_own_max_workers_is_not_a_pool_timeout():
    # The same root cause, unmapped: `b` waits in this weave's own Limiter (max_workers=1)
    # while `a` runs. The note then blames the pool ("all 256 threads of the pool were
    # busy"), which is false; the timeout of `b` (0.3 s) is about its call (a few ms).
    with weave(max_workers=1) as w:

        @w.do
        def a() -> str:
            time.sleep(0.5)
            return "a"

        @w.do(timeout=0.3)
        def b() -> str:
            return "b"

    assert (w.result.a, w.result.b) == ("a", "b")


# --- 2. A plain mapped async item that swallows its cancellation holds the block --------
#
# The fan-out (workers.fan_out) counts every item as a running call until the LAST item
# is done (settle_fan_out). After a sibling failed, Run._stop_waiting_for_stragglers
# (run.py:559) sees 1 straggler < _running == len(items) and looks again, forever: the
# grace period fixed in c84cc38 does not apply to plain mapped async tasks.


@pytest.mark.timeout(60)
def test_mapped_async_item_swallowing_a_siblings_cancellation_does_not_hold_the_block():
    outcome = _isolated(
        """
        import asyncio, json, time
        from wove import weave

        class Boom(Exception):
            pass

        report = {}
        start = time.monotonic()
        try:
            with weave() as w:
                @w.do([1, 2])
                async def items(x):
                    if x == 1:
                        end = time.monotonic() + 8
                        while time.monotonic() < end:  # swallows CancelledError
                            try:
                                await asyncio.sleep(0.05)
                            except asyncio.CancelledError:
                                pass
                    return x

                @w.do
                async def failing():
                    await asyncio.sleep(0.1)
                    raise Boom("sibling failed")
        except Boom as error:
            report["error"] = "Boom"
            report["notes"] = error.__notes__
        report["elapsed"] = time.monotonic() - start
        print(json.dumps(report))
        """,
        timeout=40,
    )
    assert outcome.get("error") == "Boom", outcome
    # An unmapped task doing the same is let go after the 1 s grace (~1.1 s here).
    assert outcome["elapsed"] < 4, outcome


# --- 3. The straggler check lets the block return while a sync call still runs --------
#
# An async task abandoned at its timeout (arm_timeout, sync=False) is taken out of
# `_running` by its expire(), but its asyncio task is not done, so
# _stop_waiting_for_stragglers (run.py:567-572) still counts it as a straggler:
# `stragglers (1) >= _running (1: a sync call)` sets `_running = 0` and ends the run
# while the sync call runs. The block returns, the sync task keeps running unnoticed.


@pytest.mark.timeout(60)
def test_straggler_check_never_stops_waiting_for_a_running_sync_call():
    outcome = _isolated(
        """
        import asyncio, json, time, wove
        from wove import weave

        finished = []
        report = {}
        start = time.monotonic()
        try:
            with weave() as w:
                @w.do(timeout=0.1)
                async def stubborn():
                    end = time.monotonic() + 8
                    while time.monotonic() < end:  # swallows its timeout's cancellation
                        try:
                            await asyncio.sleep(0.05)
                        except asyncio.CancelledError:
                            pass

                @w.do
                def slow_sync():  # no timeout: a sync call in progress is waited for
                    time.sleep(3.5)
                    finished.append(True)
                    return "done"
        except wove.TaskTimeout:
            report["error"] = "TaskTimeout"
        report["elapsed"] = time.monotonic() - start
        report["sync_finished_before_the_block_returned"] = bool(finished)
        print(json.dumps(report))
        """,
        timeout=40,
    )
    assert outcome.get("error") == "TaskTimeout", outcome
    assert outcome["sync_finished_before_the_block_returned"], outcome


# --- 4. abandon() and settle() race: the abandoned-thread accounting leaks -------------
#
# TimedCall.abandon (timed.py:55) marks the call abandoned under the run's lock, then,
# after releasing it, sets `on_pool` and calls pool.abandon() / dedicated.block_thread().
# If the call returns in between, settle() (timed.py:79) sees `abandoned` with
# `on_pool == False` and `blocking is None`: nothing is reclaimed or unblocked, and the
# late abandon() then counts the thread as abandoned (pool) or blocked (a caller's
# thread: `dedicated.foreign`) for ever. A blocked `foreign` sends every later
# thread-sensitive job of async callers to Wove's serial thread instead of asgiref's.
# The window is widened here by slowing the first step of the second half (the timer
# thread preempted there); natural timing hits it when a call returns at its deadline.


@pytest.mark.timeout(60)
def test_abandon_racing_with_the_calls_return_does_not_leak_abandoned_threads():
    outcome = _isolated(
        """
        import json, time, wove
        from wove import weave
        from wove.lanes import dedicated, pool

        real = pool.on_pool_thread_id

        def preempted(ident):
            found = real(ident)
            time.sleep(0.3)  # the timer thread loses the CPU right after the lock
            return found

        pool.on_pool_thread_id = preempted
        for sensitive in (False, True):
            try:
                with weave(thread_sensitive=sensitive) as w:
                    @w.do(timeout=0.1)
                    def late():
                        time.sleep(0.2)  # returns while abandon() is half done
            except wove.TaskTimeout:
                pass
        time.sleep(1)  # every call has returned long ago
        print(json.dumps({
            "pool_abandoned": pool.thread_pool().abandoned,
            "foreign_blocked": dedicated.foreign.blocked,
        }))
        """,
        timeout=40,
    )
    assert outcome == {"pool_abandoned": 0, "foreign_blocked": 0}, outcome


# --- 5. An abandoned mapped item's thread claims the next item -------------------------
#
# _sync_item returns [] for ABANDONED and _sync_items (workers.py:55) goes on claiming.
# settle() can see the abandonment before expire() has recorded the failure
# (abandon() runs the on_abandon callbacks between the two): claim() then finds no
# failure and starts another item after the task has already timed out. This is the
# Django shape: the on_abandon callback cancels the query, so the call returns exactly
# while the callback runs.


@pytest.mark.timeout(30)
def test_an_abandoned_item_starts_no_further_item():
    outcome = _isolated(
        """
        import json, threading, time, wove
        from wove import weave
        from wove.lowlevel import on_abandon

        started = []
        try:
            with weave() as w:
                @w.do([0, 1, 2], workers=1, timeout=0.2)
                def query(i):
                    started.append(i)
                    if i == 0:
                        cancelled = threading.Event()

                        def cancel_on_the_server():
                            cancelled.set()  # the query returns at once
                            time.sleep(0.3)  # the cancel's round trip

                        on_abandon(cancel_on_the_server)
                        cancelled.wait(5)
                    return i
        except wove.TaskTimeout:
            pass
        time.sleep(0.5)
        print(json.dumps({"started": started}))
        """,
        timeout=20,
    )
    assert outcome == {"started": [0]}, outcome


# --- 6. A sync task's returned coroutine that merges deadlocks a bounded weave ---------
#
# attempt._run_to_completion (attempt.py:351) blocks the pool thread on
# `run_coroutine(...).result()` outside `thread_pool().blocking()`, and holds the
# weave's Limiter slot meanwhile. A coroutine that `await merge(sync_fn)` (merge sends
# sync calls to the same run's submit) then waits for a thread that it holds itself:
# a hang with max_workers=1, or with configure(max_threads=N) and N such tasks. The
# sync-callable-returning-a-coroutine shape is documented (docs/errors.md, misuse table).


@pytest.mark.timeout(60)
@pytest.mark.parametrize("bound", ["max_workers", "max_threads"])
def test_returned_coroutine_that_merges_does_not_deadlock_a_bounded_weave(bound):
    outcome = _isolated(
        f"""
        import functools, json, wove
        from wove import merge, weave

        bound = {bound!r}
        if bound == "max_threads":
            wove.configure(max_threads=1)
        options = {{"max_workers": 1}} if bound == "max_workers" else {{}}

        async def answer():
            return await merge(lambda: 41) + 1

        @functools.wraps(answer)
        def logged():  # a sync decorator around an async def returns its coroutine
            return answer()

        with weave(**options) as w:
            w.do(logged)
        print(json.dumps({{"answer": w.result.answer}}))
        """,
        timeout=15,
    )
    assert outcome == {"answer": 42}, outcome


# --- 7. A thread lent for nested work outlives the loan and breaks the hard cap --------
#
# ThreadPool._give_back (pool.py:169) only lowers `_lent`. The thread started for the
# loan is idle by then, and an idle worker checks the bound only after its next job
# (pool.py:128), so it takes one more job while the borrower still runs: two sync calls
# at once under configure(max_threads=1) (one more connection than the cap allows).


@pytest.mark.timeout(60)
def test_a_returned_loan_does_not_run_a_job_above_max_threads():
    outcome = _isolated(
        """
        import json, threading, time, wove
        from wove import weave

        wove.configure(max_threads=1)
        lock, running, peak = threading.Lock(), [0], [0]

        def busy():
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            time.sleep(0.3)
            with lock:
                running[0] -= 1

        def another_request():
            time.sleep(0.2)  # while `outer` still runs, after its loan ended
            with weave() as w:
                @w.do
                def work():
                    busy()

        other = threading.Thread(target=another_request)
        other.start()
        with weave() as w:
            @w.do
            def outer():
                with weave() as inner:  # nested work: the pool lends a thread
                    @inner.do
                    def nested():
                        return 1
                busy()
        other.join()
        print(json.dumps({"peak": peak[0]}))
        """,
        timeout=30,
    )
    assert outcome == {"peak": 1}, outcome


# --- guards: properties checked that hold (these pass) ---------------------------------


@pytest.mark.timeout(30)
def test_guard_timer_cancelled_counter_never_undercounts():
    # GUARD (passes): DeadlineWatcher.cancel flags the deadline before taking the lock,
    # and _watch clamps its decrement at 0, so `_cancelled` may over-count (a late cancel
    # of a deadline that already fired) but never under-counts the cancelled entries in
    # the heap; compaction then keeps the heap bounded by the pending deadlines.
    from wove.lanes.timer import DeadlineWatcher

    watcher = DeadlineWatcher()
    far = time.monotonic() + 3600
    fired = watcher.arm(time.monotonic(), lambda: None)
    time.sleep(0.05)
    watcher.cancel(fired)  # already popped: over-counts by one, harmlessly
    for _ in range(20):
        live = [watcher.arm(far, lambda: None) for _ in range(100)]
        for deadline in live:
            watcher.cancel(deadline)
        cancelled_in_heap = sum(entry[2].cancelled for entry in watcher._heap)
        assert watcher._cancelled >= cancelled_in_heap
        assert watcher.pending < 200
