"""wove.contrib.traces: real weaves recorded per request, stored, and rendered."""

from __future__ import annotations

import asyncio
import dataclasses
import html
import json
import logging
import re
import threading
import time
import types

import pytest

import wove
import wove.contrib.traces as traces
from wove import TraceRecord, weave
from wove.contrib.traces import (
    RequestRecorder,
    RequestTrace,
    TraceStore,
    server_timing,
    trace_json,
    waterfall,
    waterfall_fragment,
    waterfall_html,
)


@pytest.fixture
def recorder() -> RequestRecorder:
    return RequestRecorder(TraceStore())


def _only(recorder: RequestRecorder) -> RequestTrace:
    assert recorder.store is not None
    (trace,) = recorder.store.recent()
    return trace


def _tasks(trace: RequestTrace) -> dict[str, list[TraceRecord]]:
    grouped: dict[str, list[TraceRecord]] = {}
    for record in trace.records:
        grouped.setdefault(record.task, []).append(record)
    return grouped


def _run_mixed_weave() -> None:
    """A sync task, an async task that waits for it, a mapped task and an annotation."""
    with weave() as w:

        @w.do
        def author() -> str:
            wove.annotate(queries=2)
            time.sleep(0.02)
            return "ann"

        @w.do
        async def price(author: str) -> int:
            await asyncio.sleep(0.01)
            return len(author)

        @w.do([1, 2, 3])
        def books(item: int) -> int:
            time.sleep(0.01)
            return item

    assert w.result.price == 3


def _fake(task: str, start: float, end: float, **fields: object) -> TraceRecord:
    values: dict[str, object] = {
        "weave": "views.py:1",
        "weave_id": 1,
        "task": task,
        "index": None,
        "lane": "thread",
        "thread": "wove-1",
        "start": start,
        "end": end,
        "attempt": 0,
        "status": "ok",
        "error": None,
    }
    values.update(fields)
    return TraceRecord(**values)  # type: ignore[arg-type]


def _trace(*records: TraceRecord, path: str = "/", duration: float = 1.0) -> RequestTrace:
    return RequestTrace(
        id="abc123",
        method="GET",
        path=path,
        status=200,
        started_at=time.time(),
        start=0.0,
        duration=duration,
        records=records,
        error=None,
    )


# --- recording ------------------------------------------------------------------------------


def test_a_sync_request_records_every_task_and_item(recorder: RequestRecorder) -> None:
    before = time.time()
    with recorder.recording("GET", "/authors/1") as active:
        _run_mixed_weave()
        active.finish(200)

    trace = _only(recorder)
    assert trace is active.trace
    assert (trace.method, trace.path, trace.status, trace.error) == ("GET", "/authors/1", 200, None)
    assert before <= trace.started_at <= time.time()
    assert re.fullmatch(r"[0-9a-f]{12}", trace.id)
    tasks = _tasks(trace)
    assert sorted(tasks) == ["author", "books", "price"]
    assert sorted(r.index for r in tasks["books"]) == [0, 1, 2]  # type: ignore[type-var]
    assert [r.lane for r in tasks["price"]] == ["loop"]
    assert trace.task_count == 3
    assert [r.start for r in trace.records] == sorted(r.start for r in trace.records)
    for record in trace.records:
        assert 0 <= trace.offset(record) <= trace.end_offset(record) <= trace.duration
    assert tasks["price"][0].start >= tasks["author"][0].end  # it waited for its input
    assert 0.02 <= trace.weave_time <= trace.duration


def test_records_from_worker_threads_are_captured(recorder: RequestRecorder) -> None:
    with recorder.recording("GET", "/"):
        _run_mixed_weave()

    thread_records = [r for r in _only(recorder).records if r.lane == "thread"]
    assert len(thread_records) == 4
    assert all(r.thread != threading.current_thread().name for r in thread_records)
    assert all(r.thread.startswith("wove-") for r in thread_records)


def test_an_async_request_records_its_own_weaves_only(recorder: RequestRecorder) -> None:
    """Concurrent requests on one loop: the collector is a contextvar, so no mixing."""

    async def request(number: int) -> None:
        with recorder.recording("GET", f"/{number}") as active:
            async with weave(number=number) as w:

                @w.do
                def sync_part(number: int) -> int:
                    time.sleep(0.01)
                    return number

                @w.do
                async def async_part(sync_part: int) -> int:
                    await asyncio.sleep(0.01)
                    return sync_part

            active.finish(200)

    async def main() -> None:
        await asyncio.gather(*(request(n) for n in range(5)))

    asyncio.run(main())
    assert recorder.store is not None
    stored = recorder.store.recent()
    assert sorted(t.path for t in stored) == [f"/{n}" for n in range(5)]
    for trace in stored:
        assert sorted(r.task for r in trace.records) == ["async_part", "sync_part"]
        assert len({r.weave_id for r in trace.records}) == 1
    assert len({r.weave_id for t in stored for r in t.records}) == 5


def test_concurrent_sync_requests_in_threads_stay_apart(recorder: RequestRecorder) -> None:
    def request(number: int) -> None:
        with recorder.recording("POST", f"/{number}"), weave() as w:

            @w.do([1, 2])
            def items(item: int) -> int:
                time.sleep(0.01)
                return item

    threads = [threading.Thread(target=request, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert recorder.store is not None
    stored = recorder.store.recent()
    assert len(stored) == 4
    assert all(len(t.records) == 2 and len({r.weave_id for r in t.records}) == 1 for t in stored)


def test_a_failing_task_is_recorded_and_the_exception_finishes_the_trace(
    recorder: RequestRecorder,
) -> None:
    with (
        pytest.raises(ValueError, match="no such author"),
        recorder.recording("GET", "/a"),
        weave() as w,
    ):

        @w.do
        def fine() -> int:
            return 1

        @w.do
        async def lookup() -> None:
            raise ValueError("no such author")

    trace = _only(recorder)
    assert trace.status is None
    assert trace.error == "ValueError: no such author"
    # `fine` may not have started when `lookup` failed: then it is in `failed` too, as
    # cancelled (the engine records the tasks a failed weave never started).
    (failed,) = [r for r in trace.failed if r.status != "cancelled"]
    assert {r.task for r in trace.failed if r.status == "cancelled"} <= {"fine"}
    assert (failed.task, failed.status, failed.lane) == ("lookup", "error", "loop")
    assert failed.error == "ValueError: no such author"


def test_nothing_is_captured_outside_the_block(recorder: RequestRecorder) -> None:
    def run(name: str) -> None:
        with weave() as w:

            @w.do
            def task() -> str:
                return name

    run("before")
    with recorder.recording("GET", "/"):
        run("inside")
    run("after")

    trace = _only(recorder)
    assert [r.task for r in trace.records] == ["task"]
    assert len({r.weave_id for r in trace.records}) == 1


def test_requests_without_weaves_are_kept_only_when_asked() -> None:
    store = TraceStore()
    with RequestRecorder(store).recording("GET", "/static/app.css") as active:
        pass
    assert active.trace is not None
    assert active.trace.records == ()
    assert len(store) == 0

    with RequestRecorder(store, keep_empty=True).recording("GET", "/health"):
        pass
    assert [t.path for t in store.recent()] == ["/health"]


def test_finish_twice_raises_and_the_block_does_not_finish_again(
    recorder: RequestRecorder,
) -> None:
    with recorder.recording("GET", "/") as active:
        _run_mixed_weave()
        first = active.finish(204)
        with pytest.raises(wove.WeaveStateError, match="already finished"):
            active.finish(500)
    assert active.trace is first
    assert _only(recorder).status == 204


def test_records_arriving_after_finish_are_dropped(
    recorder: RequestRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    """A background weave started by the request reports after the trace is frozen."""
    with wove.collect() as everything, recorder.recording("GET", "/later") as active:
        with weave() as now:

            @now.do
            def quick() -> int:
                return 1

        with weave(background=True) as later:

            @later.do
            def slow() -> int:
                time.sleep(0.1)
                return 2

        active.finish(202)

    assert later.wait(5)
    assert later.result.slow == 2
    assert sorted(r.task for r in everything) == ["quick", "slow"]  # it did report
    trace = _only(recorder)
    assert [r.task for r in trace.records] == ["quick"]
    assert active.snapshot().records == ()  # nothing was kept for a later look either
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_snapshot_shows_the_records_so_far_without_storing(recorder: RequestRecorder) -> None:
    with recorder.recording("GET", "/stream") as active:
        _run_mixed_weave()
        snapshot = active.snapshot(200)
        assert len(snapshot.records) == 5
        assert not active.finished
        assert recorder.store is not None
        assert len(recorder.store) == 0
    assert _only(recorder).records == snapshot.records


# --- store ----------------------------------------------------------------------------------


def test_the_store_keeps_the_newest_and_drops_the_oldest() -> None:
    store = TraceStore(max_requests=3)
    made = [RequestTrace(str(n), "GET", f"/{n}", 200, 0.0, 0.0, 0.0, (), None) for n in range(5)]
    for trace in made:
        store.add(trace)
    assert [t.id for t in store.recent()] == ["4", "3", "2"]
    assert store.get("0") is None
    assert store.get("3") is made[3]
    assert store.max_requests == len(store) == 3
    store.clear()
    assert store.recent() == []


def test_the_store_takes_concurrent_adds() -> None:
    store = TraceStore(max_requests=50)
    trace = _trace()

    def add_many() -> None:
        for _ in range(500):
            store.add(trace)
            store.recent()

    threads = [threading.Thread(target=add_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(store) == 50


@pytest.mark.parametrize("bad", [0, -1])
def test_the_store_rejects_a_bound_below_one(bad: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        TraceStore(max_requests=bad)


# --- Server-Timing --------------------------------------------------------------------------

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"(?:[^"\\\x00-\x1f\x7f]|\\[\x20-\x7e])*"'
_PARAM = re.compile(rf"\s*;\s*({_TOKEN})\s*=\s*({_TOKEN}|{_QUOTED})")
_NAME = re.compile(rf"\s*({_TOKEN})")


def _parse_server_timing(value: str) -> list[tuple[str, dict[str, str]]]:
    """The W3C grammar: metric *( ";" param ) joined by ","; quoted strings may hold both."""
    entries: list[tuple[str, dict[str, str]]] = []
    position = 0
    while position < len(value):
        name = _NAME.match(value, position)
        assert name, f"no metric name at {value[position:]!r}"
        params: dict[str, str] = {}
        position = name.end()
        while param := _PARAM.match(value, position):
            raw = param.group(2)
            if raw.startswith('"'):
                raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
            params[param.group(1)] = raw
            position = param.end()
        entries.append((name.group(1), params))
        rest = re.compile(r"\s*(,|$)").match(value, position)
        assert rest, f"junk after an entry at {value[position:]!r}"
        position = rest.end()
    return entries


def test_server_timing_of_a_real_request_parses(recorder: RequestRecorder) -> None:
    with recorder.recording("GET", "/"):
        _run_mixed_weave()
    trace = _only(recorder)

    header = server_timing(trace)
    entries = _parse_server_timing(header)
    names = [name for name, _ in entries]
    assert names[0] == "wove"
    assert names[-1] == "wove.price"  # task entries in start order; price waits for author
    assert sorted(names) == ["wove", "wove.author", "wove.books", "wove.price"]
    params = dict(entries)
    for _, values in entries:
        assert float(values["dur"]) >= 0
    assert float(params["wove"]["dur"]) == pytest.approx(trace.weave_time * 1000, abs=0.06)
    assert params["wove"]["desc"] == "3 tasks, 1 weave"
    assert params["wove.books"]["desc"] == "books (3 items)"
    assert float(params["wove.author"]["dur"]) >= 20
    header.encode("latin-1")  # a header value every server accepts


def test_server_timing_sanitizes_names_and_escapes_descriptions() -> None:
    odd = 'données "q" \\ x,y;z'
    trace = _trace(
        _fake(odd, 0.1, 0.2),
        _fake("fails", 0.1, 0.3, status="error", error="boom"),
        _fake("flaky", 0.0, 0.1, index=0, status="error", error="x"),
        _fake("flaky", 0.1, 0.2, index=0, attempt=1),
        _fake("flaky", 0.0, 0.1, index=1, status="timeout", error="y"),
    )
    entries = dict(_parse_server_timing(server_timing(trace)))
    assert entries["wove.donn_es__q____x_y_z"]["desc"] == 'donn?es "q" \\ x,y;z'
    assert entries["wove.fails"]["desc"] == "fails (error)"
    assert entries["wove.flaky"]["desc"] == "flaky (2 items, 1 retry, timeout)"
    assert float(entries["wove.fails"]["dur"]) == pytest.approx(200.0)


def test_server_timing_keeps_the_longest_tasks_within_max_entries() -> None:
    records = [_fake(f"t{n}", n * 0.01, n * 0.01 + 0.001 * (n + 1)) for n in range(10)]
    entries = _parse_server_timing(server_timing(_trace(*records), max_entries=4))
    assert [name for name, _ in entries] == ["wove", "wove.t7", "wove.t8", "wove.t9"]
    assert entries[0][1]["desc"] == "10 tasks, 1 weave, 3 shown"
    assert server_timing(_trace(*records), max_entries=1).startswith("wove;dur=")
    with pytest.raises(ValueError, match="at least 1"):
        server_timing(_trace(*records), max_entries=0)


def test_server_timing_is_empty_without_weaves() -> None:
    assert server_timing(_trace()) == ""


def test_weave_time_counts_overlapping_weaves_once() -> None:
    trace = _trace(
        _fake("a", 0.0, 0.4, weave_id=1),
        _fake("nested", 0.1, 0.2, weave_id=2),
        _fake("later", 0.5, 0.6, weave_id=3),
    )
    assert trace.weave_time == pytest.approx(0.5)


# --- JSON and HTML --------------------------------------------------------------------------


def test_trace_json_is_json_and_carries_every_field(recorder: RequestRecorder) -> None:
    with recorder.recording("GET", "/"):
        _run_mixed_weave()
    trace = _only(recorder)
    data = json.loads(json.dumps(trace_json(trace)))
    assert data["id"] == trace.id
    assert data["status"] is None
    assert len(data["records"]) == 5
    author = next(r for r in data["records"] if r["task"] == "author")
    assert author["extra"] == {"queries": 2}
    assert author["duration_ms"] >= 20
    assert set(author) >= {"task", "index", "lane", "thread", "offset_ms", "duration_ms"}
    assert set(author) >= {"attempt", "status", "error", "extra"}


def test_trace_json_survives_annotations_json_cannot_hold() -> None:
    odd = {"query": object(), "rows": (1, 2), "nan": float("nan"), "by": {1: {3}}}
    data = trace_json(_trace(_fake("a", 0.0, 0.1, extra=odd)))
    json.dumps(data, allow_nan=False)
    assert data["records"][0]["extra"]["rows"] == [1, 2]
    assert data["records"][0]["extra"]["by"] == {"1": [3]}


def test_the_page_escapes_paths_task_errors_and_titles(recorder: RequestRecorder) -> None:
    with (
        pytest.raises(RuntimeError),
        recorder.recording("GET", "/search?q=<b>x</b>"),
        weave() as w,
    ):

        @w.do
        def evil() -> None:
            raise RuntimeError('<script>alert("x")</script>')

    page = waterfall_html(recorder.store.recent() if recorder.store else [], title="<T>")
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "/search?q=&lt;b&gt;x&lt;/b&gt;" in page
    assert "<title>&lt;T&gt;</title>" in page
    errors = re.search(r'<ul class="errors">(.*?)</ul>', page)
    assert errors
    assert "RuntimeError: &lt;script&gt;" in errors.group(1)
    assert 'class="bar lane-thread status-error"' in page


def test_the_page_lists_requests_and_places_bars_inside_the_axis(
    recorder: RequestRecorder,
) -> None:
    for path in ("/one", "/two"):
        with recorder.recording("GET", path) as active:
            _run_mixed_weave()
            active.finish(200)
    assert recorder.store is not None
    stored = recorder.store.recent()
    page = waterfall_html(stored, base_url="/_wove/")

    for trace in stored:
        assert f'href="#req-{trace.id}"' in page
        assert f'id="req-{trace.id}"' in page
        assert f'href="/_wove/{trace.id}.json"' in page
    assert page.count('class="row task mapped"') == 2
    assert page.count("status-ok") >= 10
    assert "style=" not in page  # every place is a class, so a strict CSP lets it draw
    geometry = [placed(page, classes) for classes in re.findall(r'class="bar ([^"]*)"', page)]
    geometry = [g for g in geometry if "width" in g]  # the legend's bars have no place
    assert len(geometry) >= 2 * (5 + 2)  # every record, the request and the weave
    for place in geometry:
        assert 0 <= place["left"] <= 100
        assert 0 <= place["width"] <= 100 - place["left"] + 1e-3
    ticks = [placed(page, c)["left"] for c in re.findall(r'class="(tick [^"]*)"', page)]
    assert ticks
    assert all(0 <= tick <= 100 for tick in ticks)
    assert "<script" not in page
    assert "http" not in page.replace("http-equiv", "")  # no external assets


def placed(page: str, classes: str) -> dict[str, float]:
    """What the page's <style> rules make of the place classes (``wl-``, ``ww-``, ``wt-``)
    among ``classes``: {"left": percent, "width": percent, "--tick": percent}."""
    place = {}
    for name in classes.split():
        if re.fullmatch(r"w[lwt]-\d+", name):
            rule = re.search(rf"\.{name}\{{([-a-z]+):([\d.]+)%\}}", page)
            assert rule, f"no rule for .{name} in the page's <style>"
            place[rule.group(1)] = float(rule.group(2))
    return place


def test_the_fragment_has_no_style_attribute_and_puts_the_nonce_on_its_style() -> None:
    trace = _trace(_fake("ran", 0.0, 0.25), _fake("next", 0.25, 0.5), duration=1.0)
    fragment = waterfall_fragment([trace], nonce="abc123", within="#host")
    assert "style=" not in fragment
    assert fragment.count("<style") == 1
    assert '<style nonce="abc123">' in fragment
    assert "#host .wove-waterfall .wl-2500{left:25%}" in fragment
    page = waterfall_html([trace], nonce='"><b>')
    assert page.count('<style nonce="&quot;&gt;&lt;b&gt;">') == 2  # the page's and the fragment's
    assert "<style>" in waterfall_html([trace])  # no nonce: none given


def test_the_page_for_no_requests_says_so() -> None:
    page = waterfall_html([])
    assert "No request has run a weave yet" in page
    assert html.unescape(page).startswith("<!doctype html>")


def _selectors(css: str) -> list[str]:
    return [s.strip() for rule in re.findall(r"([^{}]+)\{[^{}]*\}", css) for s in rule.split(",")]


def test_the_fragment_is_the_page_body_with_every_style_scoped(
    recorder: RequestRecorder,
) -> None:
    with recorder.recording("GET", "/one") as active:
        _run_mixed_weave()
        active.finish(200)
    assert recorder.store is not None
    stored = recorder.store.recent()
    fragment = waterfall_fragment(stored, base_url="/_wove/", title="Wove traces")
    page = waterfall_html(stored, base_url="/_wove/")

    assert fragment in page  # the page is the fragment in a document: one drawing, one code
    assert fragment.startswith('<div class="wove-waterfall">')
    assert fragment.endswith("</div>")
    for tag in ("<html", "<head", "<body", "<title", "<script"):
        assert tag not in fragment
    assert page.count('class="bar lane-') == fragment.count('class="bar lane-') >= 5 + 4
    (css,) = re.findall(r"<style>(.*?)</style>", fragment, re.S)
    selectors = _selectors(css)
    assert len(selectors) > 40
    assert all(s.startswith(".wove-waterfall") for s in selectors), selectors
    assert ".wove-waterfall .bar.lane-thread" in selectors
    # Every rule of the source survived the scoping (none was dropped by the parser), and
    # then come the places the bars use: one rule each.
    places = [s for s in selectors if re.fullmatch(r"\.wove-waterfall \.w[lwt]-\d+", s)]
    assert places
    assert len(selectors) == len(_selectors(waterfall._CSS)) + len(places)


def test_the_fragment_can_outrank_a_host_pages_reset_and_refuses_markup() -> None:
    trace = _trace(_fake("a", 0.1, 0.3), _fake("b", 0.2, 0.9, lane="loop"))
    fragment = waterfall_fragment([trace], within="#djDebug")
    (css,) = re.findall(r"<style>(.*?)</style>", fragment, re.S)
    assert all(s.startswith("#djDebug .wove-waterfall") for s in _selectors(css))
    assert 'class="bar lane-loop status-ok wl-' in fragment
    assert "<h1>" not in fragment  # no title unless asked for
    assert "<h1>&lt;b&gt;</h1>" in waterfall_fragment([trace], title="<b>")
    with pytest.raises(ValueError, match="CSS selector"):
        waterfall_fragment([trace], within="</style><script>")
    assert "No request has run a weave yet" in waterfall_fragment([])


def test_the_package_exports_match_all() -> None:
    public = {
        name
        for name, value in vars(traces).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(traces.__all__)
    # ruff's order: constants first, then classes and functions
    assert traces.__all__ == sorted(traces.__all__, key=lambda name: (not name.isupper(), name))


def test_annotations_that_cannot_be_shown_do_not_break_the_views() -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no str")

    looped: dict[str, object] = {}
    looped["self"] = looped
    store = TraceStore()
    recorder = RequestRecorder(store)
    with recorder.recording("GET", "/odd") as active:
        with weave() as w:

            @w.do
            def odd() -> int:
                wove.annotate(looped=looped, odd=Unprintable())
                return 1

        active.finish(200)
    (trace,) = store.recent()
    assert w.result.odd == 1
    json.dumps(trace_json(trace))  # no RecursionError, no RuntimeError
    assert "odd" in waterfall_html([trace])


def test_detached_work_has_no_response_and_is_not_shown_as_failed_unless_it_failed() -> None:
    from dataclasses import replace

    from wove.contrib.traces import DETACHED

    done = replace(_trace(path="send after GET /x"), method=DETACHED, status=None)
    failed = replace(done, id="def456", error="LookupError: gone")
    page = waterfall_html([done, failed])
    assert "after the response" in page
    assert "no response" not in page
    assert page.count('<tr class="failed">') == 1
    assert '<span class="status-code s-detached">failed</span>' in page


def test_a_remote_task_is_drawn_in_the_remote_lane_colour_with_its_worker() -> None:
    record = _fake("royalties", 0.1, 0.4, lane="remote", extra={"worker": "celery@box"})
    fragment = waterfall_fragment([_trace(record)])
    assert 'class="bar lane-remote status-ok"' in fragment
    assert "remote task (worker)" in fragment  # the legend names the lane
    assert f"--remote:{traces.waterfall.COLOURS['remote']}" in fragment
    assert ".bar.lane-remote{--lane:var(--remote)}" in fragment.replace(" ", "")


# --- cancelled tasks, SQL statements, navigation ---------------------------------------------


def _failing_weave() -> None:
    """A task fails: a sibling still running is cancelled, a dependent never starts."""
    with weave() as w:

        @w.do
        def fails() -> None:
            time.sleep(0.02)
            raise LookupError("failed on purpose")

        @w.do
        async def slow() -> None:
            await asyncio.sleep(5)

        @w.do
        def never(fails: None) -> None:
            pass


def test_every_task_of_a_failed_weave_is_drawn_and_listed_with_its_status(
    recorder: RequestRecorder,
) -> None:
    # Needs the engine to record the tasks it never started (status "cancelled", zero
    # length, no thread, where the run ended): without that, `never` is missing here.
    with pytest.raises(LookupError), recorder.recording("GET", "/fails"):
        _failing_weave()
    trace = _only(recorder)
    tasks = _tasks(trace)
    assert sorted(tasks) == ["fails", "never", "slow"]
    assert trace.task_count == 3
    (never,) = tasks["never"]
    assert (never.status, never.attempt, never.thread, never.duration) == ("cancelled", 0, "", 0)
    assert [r.status for r in tasks["slow"]] == ["cancelled"]
    assert never.start >= tasks["fails"][0].end  # where the run ended, after the failure

    page = waterfall_html([trace])
    task_row = (
        r'<div class="row task"><div class="label" title="[^"]*">([^<]*)</div>(.*?)</div></div>'
    )
    rows = dict(re.findall(task_row, page, re.S))
    assert set(rows) == {"fails", "never", "slow"}
    marker = re.search(
        r'<span class="(bar lane-thread status-cancelled marker [^"]*)"', rows["never"]
    )
    assert marker, rows["never"]
    place = placed(page, marker.group(1))
    assert "width" not in place  # a marker, not a bar of some length
    left = place["left"]
    assert left == pytest.approx(trace.offset(never) / trace.span * 100, abs=0.01)
    # Listed under the waterfall with why, and counted in the request table.
    errors = re.search(r'<ul class="errors">(.*?)</ul>', page)
    assert errors
    items = re.findall(r"<li>(.*?)</li>", errors.group(1))
    assert len(items) == 3
    (never_item,) = [i for i in items if "<code>never</code>" in i]
    assert "status-cancelled" in never_item
    assert "not started: the weave failed (LookupError: failed on purpose)" in never_item
    assert "attempt" not in never_item  # it never had an attempt
    (row,) = re.findall(r'<tr class="failed">(.*?)</tr>', page)
    assert re.findall(r'<td class="num">([^<]*)</td>', row)[-3:] == ["3", "1", "2"]
    assert "never · cancelled: never started" in html.unescape(page)  # its tooltip


def test_a_zero_length_cancelled_record_is_a_marker_at_its_offset() -> None:
    trace = _trace(
        _fake("ran", 0.0, 0.5),
        _fake("broke", 0.1, 0.5, status="error", error="KeyError: x"),
        _fake("skipped", 0.5, 0.5, status="cancelled", thread="", error="CancelledError: no"),
        _fake("stopped", 0.2, 0.5, lane="loop", status="cancelled", error="CancelledError"),
        duration=1.0,
    )
    fragment = waterfall_fragment([trace])
    assert 'class="bar lane-thread status-cancelled marker wl-5000"' in fragment
    # A task cancelled while it ran keeps its bar, from its start to its cancellation.
    assert 'class="bar lane-loop status-cancelled wl-2000 ww-3000"' in fragment
    assert placed(fragment, "wl-2000 ww-3000") == {"left": 20.0, "width": 30.0}
    assert "attempt 1: cancelled</li>" in fragment
    assert "cancelled: never started, or at once" in fragment  # the legend's marker
    assert "skipped</code> no</li>" in fragment


def test_a_request_page_says_1_task_and_links_to_its_page_and_back_to_the_list() -> None:
    trace = _trace(_fake("only", 0.1, 0.2))
    listing = waterfall_html([trace, replace_id(trace, "def456")], base_url="/wove/")
    assert "· 1 task ·" in listing
    assert "1 tasks" not in listing
    assert 'href="/wove/abc123/"' in listing
    assert 'href="/wove/def456/"' in listing
    assert "All recent requests" not in listing

    page = waterfall_html([trace], title="GET /", base_url="/wove/", back_link=True)
    body = page.split("<body>", 1)[1]
    nav = re.search(r'<p class="nav"><a href="([^"]+)">', body)
    assert nav
    assert nav.group(1) == "/wove/"
    assert body.index('class="nav"') < body.index("<h1>")  # at the top
    assert "All recent requests" not in waterfall_html([trace], back_link=True)  # no base_url


def replace_id(trace: RequestTrace, new: str) -> RequestTrace:
    from dataclasses import replace

    return replace(trace, id=new)


def _with_sql(task: str, start: float, end: float, sql: object, **extra: object) -> TraceRecord:
    return _fake(task, start, end, extra={"queries": 3, "query_ms": 1.5, "sql": sql, **extra})


def test_each_tasks_sql_statements_are_listed_in_order_escaped_with_the_rest_counted() -> None:
    statements = [
        ('SELECT "name" FROM author WHERE id = %s', 0.25, "(1,)"),
        ("SELECT 1 WHERE '<script>alert(1)</script>'", 1.0, None),
    ]
    records = (
        _with_sql("authors", 0.1, 0.2, statements, sql_omitted=1),
        _with_sql("books", 0.1, 0.3, [list(s) for s in statements[1:]], queries=1),  # as JSON
        _fake("plain", 0.1, 0.2, extra={"sql": "not ours"}),  # someone else's annotation
    )
    one = waterfall_fragment([_trace(*records)])
    assert "<script>" not in one
    section = one.split('<div class="sql">', 1)[1]
    assert section.startswith("<h3>SQL by task</h3>")
    blocks = re.findall(r"<details([^>]*)><summary>(.*?)</summary>(.*?)</details>", section)
    assert [html.unescape(re.sub("<[^>]+>", "", b[1])) for b in blocks] == [
        "authors · 3 statements · 1.50 ms",
        "books · 1 statement · 1.50 ms",
    ]
    assert all(b[0] == ' class="sql-task" open' for b in blocks)  # one request: unfolded
    texts = [html.unescape(t) for t in re.findall(r'<code class="sql-text">(.*?)</code>', one)]
    assert texts == [statements[0][0], statements[1][0], statements[1][0]]
    assert re.findall(r'<span class="sql-ms">(.*?)</span>', one) == [
        "0.25 ms",
        "1.00 ms",
        "1.00 ms",
    ]
    assert re.findall(r'<code class="sql-params">(.*?)</code>', one) == ["(1,)"]  # None: none
    assert "and 1 more statement, counted but not listed" in one
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in one
    # The tooltip says where they are rather than repeating the list.
    (tooltip,) = re.findall(r'<span class="bar[^"]*" title="([^"]*)"', one)[:1]
    assert "SQL: 2 statements listed below the waterfall" in html.unescape(tooltip)
    assert "sql_omitted" not in html.unescape(tooltip)
    # Several requests: folded.
    many = waterfall_fragment([_trace(*records), replace_id(_trace(*records), "x")])
    assert re.findall(r"<details([^>]*)>", many) == [' class="sql-task"'] * 4
    assert '<div class="sql">' not in waterfall_fragment([_trace(_fake("a", 0.1, 0.2))])
    assert "sql = not ours" in html.unescape(one)  # a foreign annotation stays in its tooltip
    none_kept = waterfall_fragment([_trace(_fake("a", 0.1, 0.2, extra={"sql_omitted": 4}))])
    assert "4 statements, counted but not listed" in none_kept
    assert "<ol" not in none_kept


def test_a_detached_weave_is_named_after_the_given_call_site() -> None:
    from wove.contrib.traces.detached import weave_at

    with wove.collect() as records, weave_at("/srv/shop/views.py:42")() as w:

        @w.do
        def receipt() -> int:
            return 1

    assert [r.weave for r in records] == ["/srv/shop/views.py:42"]
    assert w.result.receipt == 1
    for unusable in ("views.py", "views.py:x", ""):
        assert weave_at(unusable) is weave  # then it is named after its real caller


def _plain_weave(tasks: int) -> None:
    with weave() as w:
        for n in range(tasks):

            def task(n: int = n) -> int:
                return n

            task.__name__ = f"t{n}"
            w.do(task)


def test_a_kept_traces_records_are_made_when_first_read(recorder: RequestRecorder) -> None:
    with recorder.recording("GET", "/"):
        _plain_weave(3)
    trace = _only(recorder)
    pending = traces.request.deferred(trace)
    assert pending is not None  # nothing read yet: only the raw tuples
    assert len(pending.raw) == 3
    records = trace.records
    assert traces.request.deferred(trace) is None
    assert trace.records is records  # made once
    assert sorted(r.task for r in records) == ["t0", "t1", "t2"]
    assert [r.start for r in records] == sorted(r.start for r in records)
    assert all(r.status == "ok" and r.lane == "thread" for r in records)
    assert dataclasses.replace(trace, id="other").records == records
    with pytest.raises(dataclasses.FrozenInstanceError):
        trace.records = ()  # type: ignore[misc]


def test_a_trace_with_a_failed_attempt_makes_its_records_at_once(
    recorder: RequestRecorder,
) -> None:
    def broken() -> None:
        raise LookupError("gone")

    with pytest.raises(LookupError), recorder.recording("GET", "/"), weave() as w:
        w.do(broken)
    trace = _only(recorder)
    # The raw tuple holds the exception (and its frames): not kept past the request.
    assert traces.request.deferred(trace) is None
    (record,) = trace.records
    assert record.status == "error"
    assert record.error == "LookupError: gone"


@pytest.mark.parametrize("tasks", [1, 5])
def test_server_timing_from_raw_attempts_is_the_header_of_the_records(
    recorder: RequestRecorder, tasks: int
) -> None:
    with recorder.recording("GET", "/"):
        _plain_weave(tasks)
    trace = _only(recorder)
    assert traces.request.deferred(trace) is not None
    from_raw = server_timing(trace)
    assert traces.request.deferred(trace) is not None  # the header made no record
    built = dataclasses.replace(trace, records=trace.records)
    assert server_timing(built) == from_raw
    names = [name for name, _ in _parse_server_timing(from_raw)]
    assert names == ["wove", *(f"wove.{r.task}" for r in trace.records)]
