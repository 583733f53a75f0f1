"""``wove.collect()``: one TraceRecord per attempt of each task (or item)."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time

import pytest
from guards import finishes_within

import wove
from wove import TraceRecord, weave


def _by_task(records: list[TraceRecord]) -> dict[str, list[TraceRecord]]:
    grouped: dict[str, list[TraceRecord]] = {}
    for record in records:
        grouped.setdefault(record.task, []).append(record)
    return grouped


def test_one_record_per_task_and_item_with_lane_and_index() -> None:
    with wove.collect() as records, weave() as w:

        @w.do
        def in_thread() -> int:
            return 1

        @w.do
        async def on_loop(in_thread: int) -> int:
            return in_thread + 1

        @w.do([10, 20, 30])
        def mapped(item: int) -> int:
            return item

        @w.do(["a", "b"])
        async def mapped_async(item: str) -> str:
            return item

    assert w.result.on_loop == 2
    tasks = _by_task(records)
    assert set(tasks) == {"in_thread", "on_loop", "mapped", "mapped_async"}
    assert len(records) == 1 + 1 + 3 + 2

    (thread_record,) = tasks["in_thread"]
    assert thread_record.lane == "thread"
    assert thread_record.thread.startswith("wove-")
    assert thread_record.index is None
    assert thread_record.status == "ok"
    assert thread_record.attempt == 0
    assert thread_record.error is None
    assert thread_record.end >= thread_record.start
    assert thread_record.duration >= 0

    (loop_record,) = tasks["on_loop"]
    assert loop_record.lane == "loop"
    assert loop_record.index is None
    assert loop_record.start >= thread_record.end  # it waited for its input

    assert sorted(r.index for r in tasks["mapped"]) == [0, 1, 2]  # type: ignore[type-var]
    assert {r.lane for r in tasks["mapped"]} == {"thread"}
    assert sorted(r.index for r in tasks["mapped_async"]) == [0, 1]  # type: ignore[type-var]
    assert {r.lane for r in tasks["mapped_async"]} == {"loop"}

    assert {r.weave_id for r in records} == {records[0].weave_id}
    assert all(r.weave.startswith(__file__) or "test_tracing.py:" in r.weave for r in records)


def test_records_of_an_async_block_run_on_the_callers_thread() -> None:
    async def main() -> tuple[list[TraceRecord], str]:
        with wove.collect() as records:
            async with weave() as w:

                @w.do
                async def on_loop() -> int:
                    return 1

                @w.do
                def in_thread(on_loop: int) -> int:
                    return on_loop

            assert w.result.in_thread == 1
        return records, threading.current_thread().name

    records, caller = asyncio.run(main())
    tasks = _by_task(records)
    assert tasks["on_loop"][0].lane == "loop"
    assert tasks["on_loop"][0].thread == caller
    assert tasks["in_thread"][0].lane == "thread"
    assert tasks["in_thread"][0].thread != caller


@pytest.mark.parametrize("is_async", [False, True])
def test_one_record_per_attempt_with_attempt_numbers(is_async: bool) -> None:
    attempts: list[int] = []

    def attempt() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError(f"try {len(attempts)}")
        return "ok"

    with wove.collect() as records, weave() as w:
        if is_async:

            @w.do(retries=3)
            async def flaky() -> str:
                return attempt()

        else:

            @w.do(retries=3)
            def flaky() -> str:
                return attempt()

    assert w.result.flaky == "ok"
    flaky_records = sorted(_by_task(records)["flaky"], key=lambda r: r.attempt)
    assert [r.attempt for r in flaky_records] == [0, 1, 2]
    assert [r.status for r in flaky_records] == ["error", "error", "ok"]
    assert flaky_records[0].error == "ConnectionError: try 1"
    assert flaky_records[1].error == "ConnectionError: try 2"
    assert flaky_records[2].error is None
    assert {r.lane for r in flaky_records} == {"loop" if is_async else "thread"}


def test_mapped_item_retries_carry_index_and_attempt() -> None:
    seen: set[int] = set()
    lock = threading.Lock()
    with wove.collect() as records, weave() as w:

        @w.do([0, 1, 2], retries=1)
        def items(item: int) -> int:
            with lock:
                first = item not in seen
                seen.add(item)
            if item == 1 and first:
                raise ValueError("once")
            return item

    assert w.result.items == [0, 1, 2]
    keyed = sorted((r.index, r.attempt, r.status) for r in records)  # type: ignore[type-var]
    assert keyed == [(0, 0, "ok"), (1, 0, "error"), (1, 1, "ok"), (2, 0, "ok")]


def test_a_failure_is_recorded_as_error() -> None:
    with wove.collect() as records, pytest.raises(KeyError), weave() as w:

        @w.do
        def broken() -> None:
            raise KeyError("row")

        @w.do
        async def broken_async(broken: None) -> None:
            return None

    record, unstarted = records  # the dependent never ran: recorded as cancelled
    assert (unstarted.task, unstarted.status, unstarted.lane) == (
        "broken_async",
        "cancelled",
        "loop",
    )
    assert record.task == "broken"
    assert record.status == "error"
    assert record.lane == "thread"
    assert record.error == "KeyError: 'row'"


def test_an_async_timeout_is_recorded_as_timeout() -> None:
    with wove.collect() as records, pytest.raises(wove.TaskTimeout), weave() as w:

        @w.do(timeout=0.05, retries=2)
        async def slow() -> None:
            await asyncio.sleep(5)

    (record,) = _by_task(records)["slow"]
    assert record.status == "timeout"
    assert record.lane == "loop"
    assert record.attempt == 0
    assert record.error is not None
    assert record.error.startswith("TaskTimeout")
    assert isinstance(w.result.exception, wove.TaskTimeout)


def test_a_sync_timeout_is_recorded_as_timeout() -> None:
    returned = threading.Event()
    with wove.collect() as records, pytest.raises(wove.TaskTimeout), weave() as w:

        @w.do(timeout=0.05)
        def stuck() -> None:
            time.sleep(0.3)
            returned.set()

    assert returned.wait(2)  # the abandoned call has returned by now
    time.sleep(0.05)
    stuck_records = _by_task(records)["stuck"] if records else []
    assert len(stuck_records) == 1, records
    (record,) = stuck_records
    assert record.status == "timeout"
    assert record.lane == "thread"
    assert record.attempt == 0
    assert isinstance(w.result.exception, wove.TaskTimeout)


def test_no_records_outside_collect() -> None:
    with wove.collect() as records, weave() as w:

        @w.do
        def inside() -> int:
            return 1

    count = len(records)
    assert count == 1
    assert w.result.inside == 1

    with weave() as later:

        @later.do
        def outside() -> int:
            return 2

        @later.do
        async def outside_async() -> int:
            return 3

    assert later.result.outside == 2
    time.sleep(0.02)
    assert len(records) == count


def test_collectors_nest_and_reach_nested_weaves() -> None:
    with wove.collect() as outer:
        with weave() as w:

            @w.do
            def parent() -> int:
                with weave() as inner:

                    @inner.do
                    def child() -> int:
                        return 1

                return inner.result.child  # type: ignore[no-any-return]

        with wove.collect() as inner_records, weave() as w2:

            @w2.do
            async def second() -> int:
                return 2

    assert w.result.parent == 1
    assert w2.result.second == 2
    assert sorted(r.task for r in outer) == ["child", "parent", "second"]
    assert [r.task for r in inner_records] == ["second"]
    parent_id = next(r.weave_id for r in outer if r.task == "parent")
    child_id = next(r.weave_id for r in outer if r.task == "child")
    assert parent_id != child_id


class Payload:
    """A result value that records must never hold."""


def test_records_do_not_hold_results() -> None:
    payload = Payload()
    with wove.collect() as records, pytest.raises(ValueError, match="after"), weave() as w:

        @w.do
        def value() -> Payload:
            return payload

        @w.do([payload])
        async def items(item: Payload) -> Payload:
            return item

        @w.do
        def failing(value: Payload, items: list[Payload]) -> None:
            raise ValueError("after reading the payload")

    assert w.result.value is payload
    assert sorted(r.task for r in records) == ["failing", "items", "value"]
    for record in records:
        fields = list(record)  # a named tuple: its fields, in order
        assert record.extra == {}  # only what a call annotates, and nothing did
        fields.remove(record.extra)
        assert all(isinstance(v, str | int | float | type(None)) for v in fields), record
        assert payload not in gc.get_referents(record)
        assert not any(isinstance(v, BaseException) for v in fields)
    assert not hasattr(records[0], "__dict__")  # a frozen slotted value, nothing hangs off it


# --- a collector that raises ---------------------------------------------------------------


def _broken_collector(record: TraceRecord) -> None:
    raise ValueError("collector bug")


def _collector_failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name == "wove" and "trace collector" in record.getMessage()
    ]


def test_a_raising_collector_does_not_stop_a_sync_task(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="wove")

    def run() -> int:
        with wove.collecting(_broken_collector), weave() as w:

            @w.do
            def a() -> int:
                return 1

        return w.result.a  # type: ignore[no-any-return]

    assert finishes_within(5, run) == 1
    failures = _collector_failures(caplog)
    assert failures, caplog.text
    assert "_broken_collector" in failures[0].getMessage()
    assert failures[0].exc_info is not None
    assert isinstance(failures[0].exc_info[1], ValueError)


def test_a_raising_collector_does_not_stop_async_mapped_items(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="wove")

    def run() -> list[int]:
        with wove.collecting(_broken_collector), weave() as w:

            @w.do([1, 2], retries=1)
            async def a(item: int) -> int:
                return item

        return w.result.a  # type: ignore[no-any-return]

    assert finishes_within(5, run) == [1, 2]
    assert len(_collector_failures(caplog)) == 2, caplog.text  # one per item


def test_a_raising_collector_does_not_stop_a_sync_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="wove")
    release = threading.Event()

    def run() -> None:
        with wove.collecting(_broken_collector), weave() as w:

            @w.do(timeout=0.05)
            def a() -> None:
                release.wait(5)

    try:
        with pytest.raises(wove.TaskTimeout):
            finishes_within(5, run)
    finally:
        release.set()
    failures = _collector_failures(caplog)
    assert failures, caplog.text
    assert isinstance(failures[0].exc_info[1], ValueError)  # type: ignore[index]


def test_annotations_reach_the_record_of_the_call_that_made_them() -> None:
    def sync_call() -> int:
        wove.annotate(queries=3, db="default")
        return 1

    async def async_call() -> int:
        wove.annotate(queries=1)
        wove.annotate(queries=2)  # a later value for a key replaces the earlier one
        return 2

    with wove.collect() as records, weave() as w:

        @w.do
        def counted() -> int:
            return sync_call()

        @w.do
        async def awaited() -> int:
            return await async_call()

        @w.do
        def plain(counted: int, awaited: int) -> int:
            return counted + awaited

    by_task = {record.task: record for record in records}
    assert dict(by_task["counted"].extra) == {"queries": 3, "db": "default"}
    assert dict(by_task["awaited"].extra) == {"queries": 2}
    assert dict(by_task["plain"].extra) == {}
    assert w.result.plain == 3


def test_annotate_outside_a_traced_call_does_nothing() -> None:
    wove.annotate(ignored=True)  # no task call: no error, nothing recorded
    with weave() as w:

        @w.do
        def untraced() -> int:
            wove.annotate(ignored=True)
            return 1

    assert w.result.untraced == 1


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_every_task_of_a_failed_weave_has_a_record_with_its_status(is_async: bool) -> None:
    # Tasks that never started (a dependent of the failure, a task queued behind it) are
    # in the trace too, as "cancelled", so a waterfall shows the whole weave.
    class Broken(Exception):
        pass

    with wove.collect() as records, pytest.raises(Broken), weave(max_workers=1) as w:
        if is_async:

            @w.do
            async def failing() -> None:
                raise Broken("no")

        else:

            @w.do
            def failing() -> None:
                raise Broken("no")

        @w.do
        def dependent(failing: None) -> None:
            pass

        @w.do
        def queued() -> None:  # behind `failing` under max_workers=1 (sync case)
            time.sleep(0.2)

    by_task: dict[str, list[TraceRecord]] = {}
    for record in records:
        by_task.setdefault(record.task, []).append(record)
    assert set(by_task) == {"failing", "dependent", "queued"}
    assert [r.status for r in by_task["failing"]] == ["error"]
    unstarted = by_task["dependent"]
    assert [(r.status, r.attempt, r.thread, r.duration) for r in unstarted] == [
        ("cancelled", 0, "", 0.0)
    ]
    assert unstarted[0].error is not None
    assert "Broken: no" in unstarted[0].error
