"""``weave()`` as a block: sync, async, inside a running loop; tasks, data, mapping, options."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import itertools
import threading
import time
import weakref

import pytest
from overlap import Overlap

import wove
from wove import weave

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


# --- the three ways to run a block ------------------------------------------------------


def test_sync_block_runs_tasks_and_injects_results() -> None:
    with weave() as w:

        @w.do
        def author() -> str:
            return "ada"

        @w.do
        def books() -> list[str]:
            return ["notes", "letters"]

        @w.do
        def context(author: str, books: list[str]) -> dict[str, object]:
            return {"author": author, "books": books}

    assert w.result.author == "ada"
    assert w.result["books"] == ["notes", "letters"]
    assert w.result.final == {"author": "ada", "books": ["notes", "letters"]}


def test_tasks_run_when_the_block_ends_not_before() -> None:
    calls: list[str] = []
    with weave() as w:

        @w.do
        def first() -> int:
            calls.append("first")
            return 1

        assert calls == []
    assert calls == ["first"]
    assert w.result.first == 1


def test_async_block_runs_sync_and_async_tasks() -> None:
    async def main() -> tuple[object, int]:
        async with weave() as w:

            @w.do
            async def a() -> int:
                await asyncio.sleep(0.01)
                return 1

            @w.do
            def b(a: int) -> int:
                return a + 10

            @w.do
            async def c(a: int, b: int) -> int:
                await asyncio.sleep(0)
                return a + b

        return w.result.final, w.result.b

    assert asyncio.run(main()) == (12, 11)


def _sync_helper() -> tuple[int, str]:
    with weave() as w:

        @w.do
        def base() -> int:
            return 20

        @w.do
        async def plus(base: int) -> int:
            await asyncio.sleep(0.01)
            return base + 1

        @w.do
        def doubled(plus: int) -> int:
            return plus * 2

        @w.do
        async def where() -> str:
            return threading.current_thread().name

    return w.result.doubled, w.result.where


def test_plain_with_inside_a_running_event_loop() -> None:
    async def main() -> tuple[int, str]:
        return _sync_helper()

    doubled, where = asyncio.run(main())
    assert doubled == 42
    # The async tasks could not run on the caller's loop (the caller blocks it).
    assert where != threading.current_thread().name


def test_plain_with_inside_a_running_loop_repeatedly() -> None:
    async def main() -> list[int]:
        results = []
        for _ in range(5):
            results.append(_sync_helper()[0])
            await asyncio.sleep(0)
        return results

    assert asyncio.run(main()) == [42] * 5


# --- sync and async tasks -----------------------------------------------------------------


def test_sync_tasks_run_in_worker_threads_and_async_on_the_loop() -> None:
    async def main() -> tuple[str, str, str]:
        async with weave() as w:

            @w.do
            def sync_thread() -> str:
                return threading.current_thread().name

            @w.do
            async def async_thread() -> str:
                return threading.current_thread().name

        return w.result.sync_thread, w.result.async_thread, threading.current_thread().name

    sync_thread, async_thread, caller = asyncio.run(main())
    assert async_thread == caller
    assert sync_thread != caller
    assert sync_thread.startswith("wove-")


class AsyncCallable:
    def __init__(self, name: str) -> None:
        self.__name__ = name
        self.calls = 0

    async def __call__(self, offset: int) -> tuple[int, int]:
        self.calls += 1
        asyncio.get_running_loop()  # raises outside a coroutine running on a loop
        await asyncio.sleep(0)
        return threading.get_ident(), offset + 1


def test_callable_object_with_async_call_is_an_async_task() -> None:
    fetched = AsyncCallable("fetched")

    async def main() -> tuple[tuple[int, int], int]:
        async with weave(offset=1) as w:
            w.do(fetched)
        return w.result.fetched, threading.get_ident()

    (thread_id, value), caller = asyncio.run(main())
    assert value == 2
    assert thread_id == caller  # on the event loop's thread, not a pool thread
    assert fetched.calls == 1


def test_callable_object_with_async_call_in_a_sync_weave_runs_on_a_loop_thread() -> None:
    fetched = AsyncCallable("fetched")
    with weave(offset=5) as w:
        w.do(fetched)

        @w.do
        def after(fetched: tuple[int, int]) -> int:
            return fetched[1]

    thread_id, value = w.result.fetched
    assert value == 6
    assert w.result.after == 6
    names = {t.ident: t.name for t in threading.enumerate()}
    assert names[thread_id].startswith("wove-loop")


def test_callable_object_with_sync_call_runs_in_a_pool_thread() -> None:
    class SyncCallable:
        __name__ = "sync_called"

        def __call__(self) -> str:
            return threading.current_thread().name

    with weave() as w:
        w.do(SyncCallable())
    assert w.result.sync_called.startswith("wove-")
    assert not w.result.sync_called.startswith("wove-loop")


# --- initialization data ------------------------------------------------------------------


def test_keywords_are_injected_by_name_and_data_gets_all_of_them() -> None:
    with weave(user_id=7, region="eu") as w:

        @w.do
        def user(user_id: int) -> str:
            return f"user-{user_id}"

        @w.do
        async def everything(data: dict[str, object]) -> dict[str, object]:
            return data

        @w.do
        def summary(user: str, region: str, data: dict[str, object]) -> str:
            return f"{user}@{region}/{sorted(data)}"

    assert w.result.user == "user-7"
    assert w.result.everything == {"user_id": 7, "region": "eu"}
    assert w.result.summary == "user-7@eu/['region', 'user_id']"
    assert w.result.user_id == 7


def test_keyword_named_data_is_refused() -> None:
    with pytest.raises(NameError, match="reserved"):
        weave(data={"a": 1})


# --- mapping ------------------------------------------------------------------------------


def test_mapping_over_a_literal_iterable() -> None:
    with weave() as w:

        @w.do([1, 2, 3])
        def squared(number: int) -> int:
            return number * number

        @w.do(range(3))
        async def halved(number: int) -> float:
            return number / 2

    assert w.result.squared == [1, 4, 9]
    assert w.result.halved == [0.0, 0.5, 1.0]


def test_mapping_over_a_task_value_with_other_dependencies() -> None:
    with weave(factor=10) as w:

        @w.do
        def numbers() -> list[int]:
            return [1, 2, 3]

        @w.do("numbers")
        def scaled(number: int, factor: int) -> int:
            return number * factor

        @w.do("scaled")
        async def labelled(value: int, numbers: list[int]) -> str:
            return f"{value}/{len(numbers)}"

    assert w.result.scaled == [10, 20, 30]
    assert w.result.labelled == ["10/3", "20/3", "30/3"]


def test_mapping_over_a_keyword_value() -> None:
    with weave(ids=(4, 5, 6)) as w:

        @w.do("ids")
        def users(user_id: int) -> str:
            return f"u{user_id}"

    assert w.result.users == ["u4", "u5", "u6"]


@pytest.mark.parametrize("is_async", [False, True])
def test_mapping_over_an_empty_iterable_gives_empty_list_and_no_call(is_async: bool) -> None:
    calls: list[object] = []
    with weave(ids=[]) as w:
        if is_async:

            @w.do("ids")
            async def each(item: object) -> object:
                calls.append(item)
                return item

        else:

            @w.do("ids")
            def each(item: object) -> object:
                calls.append(item)
                return item

        @w.do([])
        def literal(item: object) -> object:
            calls.append(item)
            return item

        @w.do
        def after(each: list[object], literal: list[object]) -> int:
            return len(each) + len(literal)

    assert w.result.each == []
    assert w.result.literal == []
    assert w.result.after == 0
    assert calls == []


def test_mapped_results_are_in_input_order_when_items_finish_out_of_order() -> None:
    finished: list[int] = []
    lock = threading.Lock()
    with weave() as w:

        @w.do([5, 4, 3, 2, 1, 0])
        def slept(step: int) -> int:
            time.sleep(step * 0.02)
            with lock:
                finished.append(step)
            return step

        @w.do([5, 4, 3, 2, 1, 0])
        async def awaited(step: int) -> int:
            await asyncio.sleep(step * 0.02)
            return step * 10

    assert finished[0] == 0  # the last item finished first
    assert w.result.slept == [5, 4, 3, 2, 1, 0]
    assert w.result.awaited == [50, 40, 30, 20, 10, 0]


# --- retries --------------------------------------------------------------------------------


@pytest.mark.parametrize("is_async", [False, True])
def test_retries_succeed_on_the_third_attempt(is_async: bool) -> None:
    attempts: list[int] = []

    def attempt() -> str:
        attempts.append(len(attempts))
        if len(attempts) < 3:
            raise ConnectionError(f"attempt {len(attempts)}")
        return "ok"

    with weave() as w:
        if is_async:

            @w.do(retries=2)
            async def flaky() -> str:
                return attempt()

        else:

            @w.do(retries=2)
            def flaky() -> str:
                return attempt()

    assert w.result.flaky == "ok"
    assert len(attempts) == 3


@pytest.mark.parametrize("is_async", [False, True])
def test_retries_exhausted_raise_the_original_exception(is_async: bool) -> None:
    raised: list[BaseException] = []

    def attempt() -> None:
        error = ConnectionError(f"attempt {len(raised) + 1}")
        raised.append(error)
        raise error

    with pytest.raises(ConnectionError) as caught, weave() as w:
        if is_async:

            @w.do(retries=2)
            async def flaky() -> None:
                attempt()

        else:

            @w.do(retries=2)
            def flaky() -> None:
                attempt()

    assert len(raised) == 3
    assert caught.value is raised[-1]
    assert w.result.exception is raised[-1]


def test_retries_apply_to_each_mapped_item() -> None:
    attempts: dict[int, int] = {}
    lock = threading.Lock()
    with weave() as w:

        @w.do([1, 2, 3], retries=1)
        def items(item: int) -> int:
            with lock:
                attempts[item] = attempts.get(item, 0) + 1
                count = attempts[item]
            if item == 2 and count == 1:
                raise ValueError("first try of item 2")
            return item

    assert w.result.items == [1, 2, 3]
    assert attempts == {1: 1, 2: 2, 3: 1}


# --- timeouts -------------------------------------------------------------------------------


def test_async_timeout_raises_task_timeout() -> None:
    with pytest.raises(wove.TaskTimeout) as caught, weave() as w:

        @w.do(timeout=0.05)
        async def slow() -> None:
            await asyncio.sleep(5)

    assert isinstance(caught.value, TimeoutError)
    assert isinstance(caught.value, wove.WoveError)
    assert "slow" in str(caught.value)
    assert w.result.exception is caught.value


def test_async_timeout_in_an_async_block() -> None:
    async def main() -> None:
        async with weave() as w:

            @w.do(timeout=0.05)
            async def slow() -> None:
                await asyncio.sleep(5)

    started = time.monotonic()
    with pytest.raises(wove.TaskTimeout):
        asyncio.run(main())
    assert time.monotonic() - started < 1.5


def test_sync_timeout_does_not_hold_the_block() -> None:
    returned = threading.Event()
    started = time.monotonic()
    with pytest.raises(wove.TaskTimeout) as caught, weave() as w:

        @w.do(timeout=0.2)
        def stuck() -> None:
            time.sleep(2)
            returned.set()

    elapsed = time.monotonic() - started
    assert elapsed < 1.5
    assert not returned.is_set()
    assert isinstance(caught.value, TimeoutError)
    assert w.result.exception is caught.value


def test_mapped_item_timeout() -> None:
    with pytest.raises(wove.TaskTimeout) as caught, weave() as w:

        @w.do([0.0, 5.0, 0.0], timeout=0.1)
        async def waits(seconds: float) -> float:
            await asyncio.sleep(seconds)
            return seconds

    assert caught.value.index == 1
    assert w.result.exception is caught.value


@pytest.mark.parametrize("is_async", [False, True])
def test_a_timeout_is_not_retried(is_async: bool) -> None:
    attempts: list[float] = []
    call_returned = threading.Event()

    with pytest.raises(wove.TaskTimeout), weave() as w:
        if is_async:

            @w.do(retries=3, timeout=0.05)
            async def slow() -> None:
                attempts.append(time.monotonic())
                try:
                    await asyncio.sleep(0.3)
                finally:
                    call_returned.set()

        else:

            @w.do(retries=3, timeout=0.05)
            def slow() -> None:
                attempts.append(time.monotonic())
                time.sleep(0.3)
                call_returned.set()

    assert call_returned.wait(2)
    time.sleep(0.1)  # room for a (wrong) retry to start after the abandoned call returns
    assert len(attempts) == 1
    assert isinstance(w.result.exception, wove.TaskTimeout)


# --- workers, limit_per_minute, max_workers ----------------------------------------------------


@pytest.mark.parametrize("is_async", [False, True])
def test_workers_bounds_concurrent_items(is_async: bool) -> None:
    overlap = Overlap()
    with weave() as w:
        if is_async:

            @w.do(range(12), workers=3)
            async def items(item: int) -> int:
                with overlap.running():
                    await asyncio.sleep(0.02)
                return item

        else:

            @w.do(range(12), workers=3)
            def items(item: int) -> int:
                with overlap.running():
                    time.sleep(0.02)
                return item

    assert w.result.items == list(range(12))
    assert overlap.calls == 12
    assert overlap.peak == 3


@pytest.mark.parametrize("is_async", [False, True])
def test_limit_per_minute_spaces_item_starts(is_async: bool) -> None:
    starts: list[float] = []
    lock = threading.Lock()

    def record() -> None:
        with lock:
            starts.append(time.monotonic())

    with weave() as w:
        if is_async:

            @w.do(range(4), limit_per_minute=600)
            async def items(item: int) -> int:
                record()
                return item

        else:

            @w.do(range(4), limit_per_minute=600)
            def items(item: int) -> int:
                record()
                return item

    assert w.result.items == [0, 1, 2, 3]
    starts.sort()
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert len(gaps) == 3
    assert all(gap >= 0.08 for gap in gaps), gaps


def test_max_workers_bounds_concurrent_sync_tasks() -> None:
    overlap = Overlap()

    def work() -> str:
        with overlap.running():
            time.sleep(0.03)
        return threading.current_thread().name

    with weave(max_workers=2) as w:
        for index in range(6):
            function = _named(work, f"task{index}")
            w.do(function)

        @w.do(range(6))
        def mapped(item: int) -> int:
            with overlap.running():
                time.sleep(0.03)
            return item

    assert overlap.calls == 12
    assert overlap.peak == 2
    assert w.result.mapped == list(range(6))


def _named(function: object, name: str) -> object:
    def wrapper() -> object:
        return function()  # type: ignore[operator]

    wrapper.__name__ = name
    return wrapper


# --- redefinition, debug, execution plan ---------------------------------------------------------


def test_redefining_a_name_replaces_the_earlier_task() -> None:
    calls: list[str] = []
    with weave() as w:

        @w.do
        def value() -> str:
            calls.append("first")
            return "first"

        @w.do
        def other(value: str) -> str:
            return value + "!"

        @w.do
        def value() -> str:  # noqa: F811
            calls.append("second")
            return "second"

    assert calls == ["second"]
    assert w.result.value == "second"
    assert w.result.other == "second!"
    assert w.result.final == "second!"  # the override keeps the replaced task's position


def test_redefinition_inherits_options_not_given_and_explicit_ones_win() -> None:
    attempts = {"inherited": 0, "explicit": 0}

    with weave() as w:

        @w.do(retries=2)
        def inherited() -> str:
            return "unused"

        @w.do
        def inherited() -> str:  # noqa: F811
            attempts["inherited"] += 1
            if attempts["inherited"] < 3:
                raise ValueError("again")
            return "ok"

    assert w.result.inherited == "ok"
    assert attempts["inherited"] == 3

    with pytest.raises(ValueError, match="once"), weave() as w2:

        @w2.do(retries=2)
        def explicit() -> str:
            return "unused"

        @w2.do(retries=0)
        def explicit() -> str:  # noqa: F811
            attempts["explicit"] += 1
            raise ValueError("once")

    assert attempts["explicit"] == 1


def _run_sample(debug: bool, calls: list[str]) -> tuple[object, ...]:
    lock = threading.Lock()

    def called(name: str) -> None:
        with lock:
            calls.append(name)

    with weave(debug=debug, base=3) as w:

        @w.do
        def numbers(base: int) -> list[int]:
            called("numbers")
            return [base, base + 1]

        @w.do("numbers", retries=1)
        async def tripled(number: int) -> int:
            called("tripled")
            return number * 3

        @w.do
        def total_sum(tripled: list[int], data: dict[str, int]) -> int:
            called("total_sum")
            return sum(tripled) + data["base"]

    return tuple(w.result), w.result.final


def test_debug_does_not_change_results(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    plain_calls: list[str] = []
    debug_calls: list[str] = []
    plain = _run_sample(False, plain_calls)
    assert capsys.readouterr() == ("", "")
    debugged = _run_sample(True, debug_calls)
    assert debugged == plain == (([3, 4], [9, 12], 24), 24)
    assert sorted(debug_calls) == sorted(plain_calls)
    report = capsys.readouterr().out
    for name in ("numbers", "tripled", "total_sum"):
        assert name in report


def test_debug_plan_says_kind_items_and_dependencies(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    with weave(debug=True, ids=[1, 2, 3]) as w:

        @w.do("ids")
        def fetched(user_id: int) -> int:
            return user_id

        @w.do
        async def counted(fetched: list[int]) -> int:
            return len(fetched)

    assert w.result.counted == 3
    report = capsys.readouterr().out
    fetched_line = next(line for line in report.splitlines() if "fetched [" in line)
    counted_line = next(line for line in report.splitlines() if "counted [" in line)
    assert "sync" in fetched_line
    assert "3" in fetched_line  # mapped over how many items
    assert "async" in counted_line
    assert "fetched" in counted_line  # its dependency


def test_debug_report_starts_like_the_published_one_on_stdout_and_the_logger(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="wove")
    with weave(debug=True, base=1) as w:

        @w.do
        def task_a() -> int:
            return 1

        @w.do
        def task_b(task_a: int, data: dict[str, int]) -> int:
            return task_a + data["base"]

    assert w.result.task_b == 2
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "--- Wove Debug Report ---"
    assert lines[1].startswith("Execution Plan")
    assert "task_b [sync] needs: task_a" in out
    logged = [r.getMessage() for r in caplog.records if r.name == "wove"]
    assert any(message.startswith("--- Wove Debug Report ---") for message in logged)


def test_execution_plan_lists_data_as_the_published_wove_does() -> None:
    with weave(base=1) as w:

        @w.do
        def task_a() -> int:
            return 1

        @w.do
        def task_b(task_a: int, data: dict[str, int]) -> int:
            return task_a + data["base"]

    plan = w.execution_plan
    assert plan["dependencies"] == {"data": set(), "task_a": set(), "task_b": {"task_a"}}
    assert plan["dependents"] == {"data": {"task_b"}, "task_a": {"task_b"}, "task_b": set()}
    assert plan["sorted_tasks"] == ["task_a", "task_b"]  # tasks only


def test_debug_reports_a_task_still_running(caplog: pytest.LogCaptureFixture) -> None:
    before = wove.settings().stuck_after
    wove.configure(stuck_after=0.1)
    try:
        with caplog.at_level("WARNING", logger="wove"), weave(debug=True) as w:

            @w.do
            def slow_lookup() -> int:
                time.sleep(0.35)
                return 1

            @w.do
            async def quick() -> int:
                return 2

    finally:
        wove.configure(stuck_after=before)
    assert w.result.slow_lookup == 1
    stuck = [r.getMessage() for r in caplog.records if "still running" in r.getMessage()]
    assert stuck
    assert "slow_lookup" in stuck[0]
    assert "quick" not in stuck[0]


def test_execution_plan() -> None:
    with weave() as w:

        @w.do
        def a() -> int:
            return 1

        @w.do
        def b() -> int:
            return 2

        @w.do
        def c(a: int) -> int:
            return a

        @w.do
        def d(b: int, c: int) -> int:
            return b + c

    plan = w.execution_plan
    assert plan["dependencies"] == {
        "data": set(),
        "a": set(),
        "b": set(),
        "c": {"a"},
        "d": {"b", "c"},
    }
    assert plan["dependents"] == {"data": set(), "a": {"c"}, "b": {"d"}, "c": {"d"}, "d": set()}
    assert [sorted(tier) for tier in plan["tiers"]] == [["a", "b"], ["c"], ["d"]]
    order = plan["sorted_tasks"]
    assert sorted(order) == ["a", "b", "c", "d"]
    for task, deps in plan["dependencies"].items():
        assert all(order.index(dep) < order.index(task) for dep in deps)


# --- contextvars --------------------------------------------------------------------------------


def test_caller_contextvars_reach_sync_and_async_tasks() -> None:
    token = request_id.set("req-1")
    try:
        with weave() as w:

            @w.do
            def in_thread() -> str:
                return request_id.get()

            @w.do
            async def on_loop() -> str:
                return request_id.get()

            @w.do([1, 2])
            def mapped(item: int) -> str:
                return request_id.get()

    finally:
        request_id.reset(token)
    assert w.result.in_thread == "req-1"
    assert w.result.on_loop == "req-1"
    assert w.result.mapped == ["req-1", "req-1"]


def test_caller_contextvars_reach_tasks_of_an_async_block() -> None:
    async def main() -> tuple[str, str]:
        request_id.set("req-async")
        async with weave() as w:

            @w.do
            def in_thread() -> str:
                return request_id.get()

            @w.do
            async def on_loop() -> str:
                return request_id.get()

        return w.result.in_thread, w.result.on_loop

    assert asyncio.run(main()) == ("req-async", "req-async")


def test_contextvar_set_in_a_sync_sibling_is_not_seen_by_another() -> None:
    was_set = threading.Event()
    with weave() as w:

        @w.do
        def setter() -> str:
            request_id.set("from-setter")
            was_set.set()
            return request_id.get()

        @w.do
        def reader() -> str:
            assert was_set.wait(2)
            return request_id.get()

    assert w.result.setter == "from-setter"
    assert w.result.reader == "unset"
    assert request_id.get() == "unset"


def test_contextvar_set_in_an_async_sibling_is_not_seen_by_another() -> None:
    was_set: list[bool] = []

    async def main() -> tuple[str, str, str]:
        async with weave() as w:

            @w.do
            async def setter() -> str:
                request_id.set("from-setter")
                was_set.append(True)
                await asyncio.sleep(0)
                return request_id.get()

            @w.do
            async def reader() -> str:
                while not was_set:
                    await asyncio.sleep(0.001)
                return request_id.get()

        return w.result.setter, w.result.reader, request_id.get()

    assert asyncio.run(main()) == ("from-setter", "unset", "unset")


# --- nesting and repetition ----------------------------------------------------------------


def test_nested_weave_inside_a_sync_task() -> None:
    with weave(base=2) as w:

        @w.do
        def outer(base: int) -> list[int]:
            with weave(base=base) as inner:

                @inner.do([1, 2, 3])
                def items(item: int, base: int) -> int:
                    return item * base

                @inner.do
                async def total(items: list[int]) -> int:
                    return sum(items)

            return [*inner.result.items, inner.result.total]

    assert w.result.outer == [2, 4, 6, 12]


def test_nested_weaves_inside_an_async_task() -> None:
    with weave() as w:

        @w.do
        async def with_async_block() -> int:
            async with weave() as inner:

                @inner.do
                async def x() -> int:
                    return 1

                @inner.do
                def y(x: int) -> int:
                    return x + 1

            return inner.result.y

        @w.do
        async def with_sync_block() -> int:
            with weave() as inner:

                @inner.do
                def x() -> int:
                    return 10

                @inner.do
                async def y(x: int) -> int:
                    await asyncio.sleep(0)
                    return x + 1

            return inner.result.y

    assert w.result.with_async_block == 2
    assert w.result.with_sync_block == 11


def test_the_same_block_runs_fifty_times() -> None:
    results = []
    for run in range(50):
        with weave(run=run) as w:

            @w.do
            def a(run: int) -> int:
                return run

            @w.do
            async def b(a: int) -> int:
                return a + 1

            @w.do([1, 2])
            def c(item: int, b: int) -> int:
                return item + b

            @w.do
            def d(c: list[int]) -> int:
                return sum(c)

        results.append(w.result.final)
    assert results == [2 * run + 5 for run in range(50)]


def test_the_same_async_block_runs_fifty_times() -> None:
    async def main() -> list[int]:
        results = []
        for run in range(50):
            async with weave(run=run) as w:

                @w.do
                async def a(run: int) -> int:
                    return run

                @w.do
                def b(a: int) -> int:
                    return a * 2

            results.append(w.result.b)
        return results

    assert asyncio.run(main()) == [2 * run for run in range(50)]


# --- values are freed with the result, not kept by deadlines, timers or cycles -------------


class Big:
    """A task value whose lifetime the tests below watch through a weak reference."""


def _freed(ref: weakref.ref[Big], seconds: float = 1.0) -> bool:
    """Whether the referent is gone within ``seconds`` (a pool thread may still be
    returning from the job that finished the run)."""
    deadline = time.monotonic() + seconds
    while ref() is not None and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.01)
    return ref() is None


def test_a_sync_timeout_that_was_not_reached_keeps_no_value_alive() -> None:
    refs: list[weakref.ref[Big]] = []
    for _ in range(3):
        with weave() as w:

            @w.do(timeout=3600)
            def made() -> Big:
                value = Big()
                refs.append(weakref.ref(value))
                return value

        assert isinstance(w.result.made, Big)
        del w
    gc.collect()
    assert all(_freed(ref) for ref in refs)  # not in an hour, when the deadline is due


def test_an_async_timeout_keeps_no_value_alive_on_a_loop_that_runs_on() -> None:
    refs: list[weakref.ref[Big]] = []

    async def server() -> bool:
        # An unrelated timer due earlier (a keep-alive) stays at the top of the loop's
        # timer heap, so cancelled timer handles of finished weaves stay in the heap.
        keepalive = asyncio.ensure_future(asyncio.sleep(1000))
        try:
            for _ in range(3):
                async with weave() as w:

                    @w.do(timeout=3600)
                    async def made() -> Big:
                        value = Big()
                        refs.append(weakref.ref(value))
                        return value

                assert isinstance(w.result.made, Big)
                del w
            await asyncio.sleep(0.02)
            deadline = time.monotonic() + 1.0
            while any(ref() is not None for ref in refs) and time.monotonic() < deadline:
                gc.collect()
                await asyncio.sleep(0.01)
            return all(ref() is None for ref in refs)
        finally:
            keepalive.cancel()

    assert asyncio.run(server())


def test_a_finished_block_is_freed_without_the_cyclic_collector() -> None:
    gc.collect()
    gc.disable()
    try:
        with weave() as w:

            @w.do
            def made() -> Big:
                return Big()

        ref = weakref.ref(w.result.made)
        block = weakref.ref(w)
        del w
        deadline = time.monotonic() + 1.0
        while ref() is not None and time.monotonic() < deadline:
            time.sleep(0.01)  # reference counting alone: no gc.collect() here
        assert block() is None
        assert ref() is None
    finally:
        gc.enable()
