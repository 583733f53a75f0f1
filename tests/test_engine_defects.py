"""Engine defects: each test states the correct behaviour and fails on the engine that had
the defect (often by hanging, which the timeouts turn into a failure).

A scenario that can kill a process-wide thread (the shared loop thread, the timer thread)
or deadlock pool threads for good runs in a fresh interpreter: the ``scenario_*``
functions below are run there by :func:`run_isolated`, against the same Wove source
tree as this session, so one broken process cannot poison the rest of the suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import re
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

import wove
from wove import merge, weave

WOVE_ROOT = os.path.dirname(os.path.dirname(wove.__file__))
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
MODULE = os.path.splitext(os.path.basename(__file__))[0]

# The child imports this module and runs one scenario; its JSON lines are the report.
_CHILD = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
import wove
root = os.path.dirname(os.path.dirname(wove.__file__))
assert root == sys.argv[2], f"wove imported from {wove.__file__}, expected under {sys.argv[2]}"
module = __import__(sys.argv[3])
result = getattr(module, sys.argv[4])(**json.loads(sys.argv[5]))
print(json.dumps({"result": result}), flush=True)
"""


def progress(stage: str) -> None:
    """In a child: say how far the scenario got, so a hang shows where it stuck."""
    print(json.dumps({"stage": stage}), flush=True)


def run_isolated(scenario: Callable[..., Any], timeout: float = 15, **kwargs: Any) -> Any:
    """Run ``scenario(**kwargs)`` in a fresh interpreter; return what it returned."""
    env = {**os.environ, "PYTHONPATH": WOVE_ROOT}
    # -P: `python -c` would put the working directory (the checkout) first on sys.path,
    # and test the source tree instead of the wove this session imported.
    command = [
        sys.executable,
        "-P",
        "-c",
        _CHILD,
        TESTS_DIR,
        WOVE_ROOT,
        MODULE,
        scenario.__name__,
        json.dumps(kwargs),
    ]
    try:
        proc = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except subprocess.TimeoutExpired as expired:
        out = expired.stdout.decode() if isinstance(expired.stdout, bytes) else expired.stdout
        stages = [json.loads(line)["stage"] for line in (out or "").splitlines() if line]
        pytest.fail(f"{scenario.__name__} hung: not done after {timeout} s; reached {stages}")
    assert proc.returncode == 0, f"{scenario.__name__} crashed:\n{proc.stderr}"
    # A Wove thread dying (threading.excepthook) is itself a defect, even if the
    # scenario's own checks happened to pass.
    assert "Exception in thread" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])["result"]


def _later_weaves_work() -> dict[str, Any]:
    """A sync weave with async tasks (plain and mapped) and sync ones, after a failure."""
    with weave() as w:

        @w.do
        async def plain():
            await asyncio.sleep(0)
            return "ok"

        @w.do([1, 2])
        async def mapped(x):
            return x

        @w.do([1, 2])
        def threaded(x):
            return x

    return {"plain": w.result.plain, "mapped": w.result.mapped, "threaded": w.result.threaded}


LATER_OK = {"plain": "ok", "mapped": [1, 2], "threaded": [1, 2]}


# --- 1. KeyboardInterrupt / SystemExit raised by one item of a mapped task ------------


def _base_exception(kind: str) -> BaseException:
    return SystemExit(3) if kind == "SystemExit" else KeyboardInterrupt()


def scenario_item_raises_base_exception(kind: str, lane: str) -> dict[str, Any]:
    error = _base_exception(kind)
    raised: BaseException | None = None
    try:
        with weave() as w:
            if lane == "async":

                @w.do([1, 2, 3])
                async def items(x):
                    if x == 2:
                        raise error
                    return x

            else:

                @w.do([1, 2, 3])
                def items(x):
                    if x == 2:
                        raise error
                    return x

    except BaseException as caught:  # SystemExit/KeyboardInterrupt are the point here
        raised = caught
    progress(f"first block raised {raised!r}")
    return {
        "raised": type(raised).__name__,
        "same": raised is error,
        "later": _later_weaves_work(),
    }


@pytest.mark.slow
@pytest.mark.timeout(40)
@pytest.mark.parametrize("lane", ["async", "sync"])
@pytest.mark.parametrize("kind", ["SystemExit", "KeyboardInterrupt"])
def test_base_exception_from_a_mapped_item_is_reraised_and_engine_survives(kind, lane):
    outcome = run_isolated(scenario_item_raises_base_exception, kind=kind, lane=lane)
    assert outcome["raised"] == kind
    assert outcome["same"], "the block must re-raise the item's own exception object"
    assert outcome["later"] == LATER_OK


def scenario_background_item_raises_base_exception(kind: str) -> dict[str, Any]:
    error = _base_exception(kind)
    called = threading.Event()
    seen: list[BaseException | None] = []

    def on_done(result):
        seen.append(result.exception)
        called.set()

    with weave(background=True, on_done=on_done) as w:

        @w.do([1, 2, 3])
        async def items(x):
            if x == 2:
                raise error
            return x

    was_called = called.wait(10)
    progress(f"on_done called: {was_called}, with {seen!r}")
    return {
        "called": was_called,
        "exception": type(seen[0]).__name__ if seen else None,
        "same": bool(seen) and seen[0] is error,
        "later": _later_weaves_work(),
    }


@pytest.mark.slow
@pytest.mark.timeout(40)
@pytest.mark.parametrize("kind", ["KeyboardInterrupt", "SystemExit"])
def test_background_weave_reports_base_exception_to_on_done(kind):
    outcome = run_isolated(scenario_background_item_raises_base_exception, kind=kind)
    assert outcome["called"], "on_done was never called"
    assert outcome["exception"] == kind
    assert outcome["same"], "result.exception must be the item's own exception object"
    assert outcome["later"] == LATER_OK


# --- 2. asyncio.run / async_to_sync of an async weave inside a mapped sync task ----------


async def _inner_weave(x: int) -> int:
    async with weave() as w2:

        @w2.do
        def tenfold():
            return x * 10

    return w2.result.tenfold


def scenario_nested_loop_in_sync_items(runner: str) -> list[int]:
    from asgiref.sync import async_to_sync

    def run_inner(x):
        if runner == "asyncio.run":
            return asyncio.run(_inner_weave(x))
        return async_to_sync(_inner_weave)(x)

    previous = wove.settings().max_threads
    wove.configure(max_threads=2)  # every pool thread is taken by an outer item
    try:
        with weave() as w:

            @w.do([1, 2])
            def outer(x):
                return run_inner(x)

        return w.result.outer
    finally:
        wove.configure(max_threads=previous)


@pytest.mark.slow
@pytest.mark.timeout(40)
@pytest.mark.parametrize("runner", ["asyncio.run", "async_to_sync"])
def test_async_weave_run_from_sync_items_with_all_threads_busy(runner):
    # Isolated: on a deadlock both pool threads stay blocked for good.
    assert run_isolated(scenario_nested_loop_in_sync_items, runner=runner) == [10, 20]


# --- 3. Timeouts and rates the timer thread cannot represent -----------------------------


def scenario_infinite_timeout_then_real_timeout() -> dict[str, Any]:
    with weave() as w:

        @w.do(timeout=float("inf"))
        def unbounded():
            time.sleep(0.05)
            return "sync done"

        @w.do(timeout=float("inf"))
        async def unbounded_async():
            await asyncio.sleep(0.05)
            return "async done"

    values = [w.result.unbounded, w.result.unbounded_async]
    progress(f"infinite timeouts gave {values}")
    outcome = "no error"
    try:
        with weave() as w:

            @w.do(timeout=0.1)
            def slow():
                time.sleep(2)
                return "late"

    except wove.TaskTimeout:
        outcome = "TaskTimeout"
    return {"values": values, "after": outcome}


@pytest.mark.slow
@pytest.mark.timeout(40)
def test_infinite_timeout_means_none_and_timer_survives():
    outcome = run_isolated(scenario_infinite_timeout_then_real_timeout)
    assert outcome["values"] == ["sync done", "async done"]
    # The timer thread must still fire deadlines after an infinite one was given.
    assert outcome["after"] == "TaskTimeout"


def scenario_unrepresentable_option(option: str) -> dict[str, Any]:
    ran = []
    stage = "decoration"
    try:
        with weave() as w:
            if option == "timeout":

                @w.do(timeout=1e300)
                def capped():
                    ran.append("capped")

            else:

                @w.do([1], limit_per_minute=1e-300)
                def capped(x):
                    ran.append("capped")

            stage = "block end"
    except Exception as error:
        return {
            "error": type(error).__name__,
            "invalid_option": isinstance(error, wove.InvalidOptionError),
            "value_error": isinstance(error, ValueError),
            "wove_error": isinstance(error, wove.WoveError),
            "message": str(error),
            "stage": stage,
            "ran": ran,
        }
    return {"error": None, "ran": ran}


@pytest.mark.slow
@pytest.mark.timeout(40)
@pytest.mark.parametrize("option", ["timeout", "limit_per_minute"])
def test_unrepresentable_option_is_refused_at_decoration(option):
    # Isolated: accepted, the value reaches the timer thread, which then dies.
    outcome = run_isolated(scenario_unrepresentable_option, option=option)
    assert outcome["error"] is not None, f"{option} was accepted; the task ran: {outcome['ran']}"
    assert outcome["invalid_option"], outcome
    assert outcome["value_error"]
    assert outcome["wove_error"]
    assert option in outcome["message"]
    assert outcome["stage"] == "decoration", "the decorator line must raise"
    assert outcome["ran"] == []


# --- 4. StopIteration from a sync callable given to merge() --------------------------------


def _stop(item: Any = None) -> Any:
    raise StopIteration


def scenario_merge_stop_iteration(with_items: bool) -> dict[str, Any]:
    try:
        with weave() as w:

            @w.do
            async def merged():
                if with_items:
                    return await merge(_stop, [1, 2])
                return await merge(_stop)

    except BaseException as error:
        chained = error.__cause__ or error.__context__
        return {
            "error": type(error).__name__,
            "chained": type(chained).__name__ if chained is not None else None,
        }
    return {"error": None, "value": repr(w.result.merged)}


@pytest.mark.slow
@pytest.mark.timeout(40)
@pytest.mark.parametrize("with_items", [False, True], ids=["once", "per_item"])
def test_merge_of_sync_callable_raising_stop_iteration_reaches_the_caller(with_items):
    outcome = run_isolated(scenario_merge_stop_iteration, with_items=with_items)
    # A coroutine turns a StopIteration passing through it into a RuntimeError (PEP 479).
    assert outcome["error"] == "StopIteration" or (
        outcome["error"] == "RuntimeError" and outcome["chained"] == "StopIteration"
    ), outcome


# --- 5. Exceptions that are awkward to describe, while tracing -----------------------------


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("this exception cannot be turned into text")


def scenario_awkward_exception(kind: str, lane: str, collect: bool) -> dict[str, Any]:
    error = Unprintable() if kind == "unprintable" else ValueError("awkward")
    if kind == "notes_tuple":
        error.__notes__ = ("mine",)  # type: ignore[attr-defined]
    elif kind == "notes_str":
        error.__notes__ = "mine"  # type: ignore[attr-defined]
    collector = wove.collecting(lambda record: None) if collect else contextlib.nullcontext()
    raised: BaseException | None = None
    with collector:
        try:
            with weave() as w:
                if lane == "async":

                    @w.do
                    async def failing():
                        raise error

                else:

                    @w.do
                    def failing():
                        raise error

        except BaseException as caught:
            raised = caught
    notes = getattr(raised, "__notes__", None)
    return {
        "raised": type(raised).__name__,
        "same": raised is error,
        "keeps_own_note": notes is not None and "mine" in notes,
    }


@pytest.mark.slow
@pytest.mark.timeout(40)
@pytest.mark.parametrize("lane", ["sync", "async"])
def test_unprintable_exception_is_reraised_while_tracing(lane):
    outcome = run_isolated(scenario_awkward_exception, kind="unprintable", lane=lane, collect=True)
    assert outcome["raised"] == "Unprintable"
    assert outcome["same"], "the block must re-raise the task's own exception object"


@pytest.mark.slow
@pytest.mark.timeout(40)
@pytest.mark.parametrize(
    ("kind", "lane", "collect"),
    [
        ("notes_tuple", "sync", True),
        ("notes_tuple", "async", True),
        ("notes_str", "sync", True),
        ("notes_str", "async", True),
        ("notes_tuple", "sync", False),
        ("notes_str", "async", False),
    ],
)
def test_exception_with_non_list_notes_is_reraised_unchanged(kind, lane, collect):
    outcome = run_isolated(scenario_awkward_exception, kind=kind, lane=lane, collect=collect)
    assert outcome["raised"] == "ValueError"
    assert outcome["same"], "the block must re-raise the task's own exception object"
    assert outcome["keeps_own_note"], "the task's own __notes__ content must survive"


# --- 6. Async tasks that do not let themselves be cancelled at their timeout --------------


@pytest.mark.timeout(20)
@pytest.mark.parametrize("caller", ["with", "async with"])
def test_task_returning_after_catching_its_timeout_still_times_out(caller):
    def register(w):
        @w.do(timeout=0.1)
        async def evasive():
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                return "caught"
            return "slept"

    async def in_async_caller():
        async with weave() as w:
            register(w)

    with pytest.raises(wove.TaskTimeout):
        if caller == "with":
            with weave() as w:
                register(w)
        else:
            asyncio.run(in_async_caller())


def scenario_swallows_cancellation() -> dict[str, Any]:
    start = time.monotonic()
    try:
        with weave() as w:

            @w.do(timeout=0.1)
            async def stubborn():
                while True:
                    try:
                        await asyncio.sleep(1)
                    except asyncio.CancelledError:
                        pass

    except wove.TaskTimeout as error:
        notes = getattr(error, "__notes__", [])
        return {
            "error": "TaskTimeout",
            "text": " ".join([str(error), *map(str, notes)]),
            "elapsed": time.monotonic() - start,
        }
    except BaseException as error:
        return {"error": type(error).__name__, "text": repr(error)}
    return {"error": None, "value": repr(w.result.stubborn)}


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_task_swallowing_cancellation_does_not_hold_the_block_forever():
    # Isolated: the rogue coroutine keeps running on the loop after the block.
    outcome = run_isolated(scenario_swallows_cancellation, timeout=30)
    assert outcome["error"] == "TaskTimeout", outcome
    assert outcome["elapsed"] < 10.5, "the grace period after the timeout is a few seconds"
    phrases = r"did not stop|still running|kept running|keeps running|ignor|swallow|refus"
    assert re.search(phrases, outcome["text"], re.IGNORECASE), (
        f"the error must say that the task did not stop when cancelled: {outcome['text']!r}"
    )


def scenario_swallows_a_siblings_cancellation(caller: str) -> dict[str, Any]:
    class Boom(Exception):
        pass

    def body(w: Any) -> None:
        @w.do
        async def stubborn() -> None:
            while True:
                try:
                    await asyncio.sleep(1)
                except asyncio.CancelledError:
                    pass

        @w.do
        async def failing() -> None:
            await asyncio.sleep(0.05)
            raise Boom("sibling failed")

    async def in_async_with() -> None:
        async with weave() as w:
            body(w)

    start = time.monotonic()
    try:
        if caller == "with":
            with weave() as w:
                body(w)
        else:
            asyncio.new_event_loop().run_until_complete(in_async_with())
    except Boom as error:
        return {
            "error": "Boom",
            "notes": getattr(error, "__notes__", []),
            "elapsed": time.monotonic() - start,
        }
    return {"error": None}


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize("caller", ["with", "async with"])
def test_a_task_swallowing_its_cancellation_by_a_failure_does_not_hold_the_block(caller):
    # Cancelled because a sibling failed (no timeout of its own): the weave stops waiting
    # for it after the grace period and raises the sibling's own exception.
    outcome = run_isolated(scenario_swallows_a_siblings_cancellation, timeout=30, caller=caller)
    assert outcome["error"] == "Boom", outcome
    assert outcome["elapsed"] < 10.5
    assert any("did not stop" in note for note in outcome["notes"]), outcome


# --- 7. Cancelled sync deadlines must not stay in the timer's heap -------------------------


def _wove_type_objects() -> int:
    return sum(type(o).__module__.startswith("wove") for o in gc.get_objects())


def scenario_cancelled_deadlines_are_dropped() -> dict[str, float]:
    wove_files = os.path.join(os.path.dirname(wove.__file__), "*")

    def run(times: int) -> None:
        for _ in range(times):
            with weave() as w:

                @w.do(timeout=60)
                def quick():
                    return 1

            assert w.result.quick == 1

    def measure() -> tuple[int, int]:
        gc.collect()
        snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, wove_files)])
        return sum(stat.size for stat in snapshot.statistics("filename")), _wove_type_objects()

    run(50)  # pool threads, caches, the timer thread itself
    tracemalloc.start()
    run(200)
    bytes_before, objects_before = measure()
    run(1800)
    bytes_after, objects_after = measure()
    tracemalloc.stop()
    return {
        "bytes_per_call": (bytes_after - bytes_before) / 1800,
        "object_growth": objects_after - objects_before,
    }


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_finished_sync_task_does_not_leave_its_deadline_behind():
    # Fresh process: a clean baseline, with no other test's objects coming and going.
    outcome = run_isolated(scenario_cancelled_deadlines_are_dropped, timeout=40)
    # The defect kept ~180 bytes and one Deadline object per call for the full 60 s.
    assert outcome["bytes_per_call"] < 40, outcome
    assert outcome["object_growth"] < 180, outcome
