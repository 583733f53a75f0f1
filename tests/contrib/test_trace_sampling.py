"""Sampled request traces: a share of requests recorded in full; a failed or slow request
always kept; the raw collection path of the adapters (``wove.lowlevel.collecting_raw``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

import wove
from wove import weave
from wove.contrib.traces import RequestRecorder, TraceStore, server_timing
from wove.lowlevel import RawRecord, build_record, collecting_raw


def _sampler(*draws: float) -> Callable[[], float]:
    values: Iterator[float] = iter(draws)
    return lambda: next(values)


def _recorder(rate: float, slow_ms: float | None = None, **options: object) -> RequestRecorder:
    return RequestRecorder(TraceStore(), sample_rate=rate, slow_ms=slow_ms, **options)  # type: ignore[arg-type]


def _two_tasks(*, fail: bool = False, sleep: float = 0.0, note: bool = False) -> None:
    with weave() as w:

        @w.do
        def first() -> int:
            if note:
                wove.annotate(queries=1)
            if sleep:
                time.sleep(sleep)
            return 1

        @w.do
        def second() -> int:
            if fail:
                raise ValueError("boom")
            return 2


def _request(recorder: RequestRecorder, status: int = 200, **weave_options: object) -> object:
    with recorder.recording("GET", "/") as active:
        _two_tasks(**weave_options)  # type: ignore[arg-type]
        return active.finish(status)


def _stored(recorder: RequestRecorder) -> int:
    assert recorder.store is not None
    return len(recorder.store)


def test_rate_one_keeps_every_request() -> None:
    recorder = _recorder(1.0)
    for _ in range(3):
        trace = _request(recorder, note=True)
        assert trace is not None
    assert _stored(recorder) == 3
    (trace,) = recorder.store.recent()[:1]  # type: ignore[union-attr]
    assert {r.task for r in trace.records} == {"first", "second"}
    assert dict(next(r for r in trace.records if r.task == "first").extra) == {"queries": 1}


def test_rate_zero_drops_a_fast_successful_request() -> None:
    recorder = _recorder(0.0)
    with recorder.recording("GET", "/") as active:
        _two_tasks()
        assert active.finish(200) is None
    assert active.trace is None
    assert active.finished
    assert _stored(recorder) == 0


@pytest.mark.parametrize("status", [500, 503])
def test_rate_zero_keeps_a_5xx_with_its_task_timings(status: int) -> None:
    recorder = _recorder(0.0)
    trace = _request(recorder, status, note=True)
    assert trace is not None
    assert _stored(recorder) == 1
    tasks = {r.task: r for r in trace.records}  # type: ignore[attr-defined]
    assert set(tasks) == {"first", "second"}
    assert tasks["first"].end >= tasks["first"].start
    assert not tasks["first"].extra  # not sampled: timings only, no annotations


def test_rate_zero_keeps_a_request_that_raised() -> None:
    recorder = _recorder(0.0)
    with pytest.raises(ValueError, match="boom"), recorder.recording("GET", "/boom"):
        _two_tasks(fail=True)
    (trace,) = recorder.store.recent()  # type: ignore[union-attr]
    assert trace.error is not None
    assert "ValueError" in trace.error
    assert {r.task: r.status for r in trace.records}["second"] == "error"


def test_rate_zero_keeps_a_request_whose_task_failed_even_if_it_answered_200() -> None:
    recorder = _recorder(0.0)
    with recorder.recording("GET", "/") as active:
        with pytest.raises(ValueError, match="boom"):
            _two_tasks(fail=True)
        trace = active.finish(200)
    assert trace is not None
    assert trace.status == 200
    assert _stored(recorder) == 1


def test_rate_zero_keeps_a_slow_request_and_drops_a_fast_one() -> None:
    recorder = _recorder(0.0, slow_ms=30)
    assert _request(recorder) is None
    slow = _request(recorder, sleep=0.05)
    assert slow is not None
    assert slow.duration >= 0.03
    assert _stored(recorder) == 1


def test_slow_ms_none_never_keeps_for_being_slow() -> None:
    recorder = _recorder(0.0, slow_ms=None)
    assert _request(recorder, sleep=0.02) is None


def test_the_sampler_draws_which_requests_are_recorded_in_full() -> None:
    recorder = _recorder(0.25, sampler=_sampler(0.1, 0.9, 0.24, 0.25))
    kept = [_request(recorder, note=True) is not None for _ in range(4)]
    assert kept == [True, False, True, False]
    assert _stored(recorder) == 2
    for trace in recorder.store.recent():  # type: ignore[union-attr]
        assert {r.task for r in trace.records} == {"first", "second"}


def test_rate_one_and_zero_never_draw() -> None:
    def never() -> float:
        raise AssertionError("no draw expected")

    assert _recorder(1.0, sampler=never).begin("GET", "/").sampled
    assert not _recorder(0.0, sampler=never).begin("GET", "/").sampled


def test_not_sampled_tasks_are_not_annotating() -> None:
    seen: list[bool] = []
    for rate in (1.0, 0.0):
        recorder = _recorder(rate)
        with recorder.recording("GET", "/"), weave() as w:

            @w.do
            def probe() -> None:
                seen.append(wove.lowlevel.annotating())

    assert seen == [True, False]


def test_without_unsampled_timings_a_kept_request_has_no_rows_but_is_stored() -> None:
    recorder = _recorder(0.0, unsampled_timings=False)
    assert _request(recorder) is None
    trace = _request(recorder, 500)
    assert trace is not None
    assert trace.records == ()
    assert _stored(recorder) == 1


def test_detached_work_is_recorded_whatever_the_rate() -> None:
    active = _recorder(0.0).begin("DETACH", "work", sample=False)
    assert active.sampled


def test_sampling_can_change_for_the_next_requests() -> None:
    recorder = _recorder(1.0)
    recorder.configure_sampling(0.0, None)
    assert _request(recorder) is None


def test_server_timing_of_a_sampled_request_is_the_same_as_before() -> None:
    recorder = _recorder(1.0)
    trace = _request(recorder)
    value = server_timing(trace)  # type: ignore[arg-type]
    assert value.startswith("wove;dur=")
    assert 'desc="2 tasks, 1 weave"' in value
    assert "wove.first;dur=" in value
    assert 'desc="first"' in value


def test_raw_records_build_the_same_records_as_the_public_collector() -> None:
    raw: list[RawRecord] = []
    with (
        wove.collect() as records,
        collecting_raw(raw.append),
        pytest.raises(ValueError, match="boom"),
    ):
        _two_tasks(fail=True, note=True)
    assert sorted(map(build_record, raw)) == sorted(records)
    statuses = {r.task: r.status for r in records}
    assert statuses["second"] == "error"


def test_a_broken_raw_collector_does_not_break_the_weave(caplog: pytest.LogCaptureFixture) -> None:
    def broken(raw: RawRecord) -> None:
        raise RuntimeError("collector broke")

    with collecting_raw(broken), weave() as w:

        @w.do
        def fine() -> int:
            return 1

    assert w.result["fine"] == 1
    assert "trace collector" in caplog.text
