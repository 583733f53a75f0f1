"""``detach()`` in process: after the last body message, on Wove's pool or the loop,
traced as its own entry, errors logged and traced, dropped when the endpoint raises."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
import threading
import time
import traceback
from typing import Any

import pytest
import starlette_testapp
from starlette.applications import Starlette
from starlette_support import client, run, watching

from wove import InvalidOptionError, WeaveStateError
from wove.contrib.starlette import detach
from wove.contrib.traces import DETACHED, TraceStore
from wove.contrib.traces import after_response as core


def store_of(app: Starlette) -> TraceStore:
    store: TraceStore = app.state.wove_traces
    return store


def get(app: Starlette, path: str, **params: Any) -> Any:
    async def main() -> Any:
        async with client(watching(app, starlette_testapp.ran)) as c:
            return await c.get(path, params=params)

    return run(main())


def test_detached_work_runs_after_the_response_was_sent() -> None:
    app = starlette_testapp.build()
    reply = get(app, "/detach", kind="note")
    assert reply.text == "sent"
    ran = starlette_testapp.ran
    assert [name for name, _ in ran] == ["body sent", "sync note", "async note"]
    assert ran[1][1].startswith("wove-")  # a sync function: Wove's pool, not anyio's
    detached = [t for t in store_of(app).recent() if t.method == DETACHED]
    assert sorted(t.path for t in detached) == [
        "note after GET /detach",
        "note_async after GET /detach",
    ]
    for trace in detached:
        assert trace.error is None
        assert [r.task for r in trace.records] == [trace.path.split()[0]]  # named after it


def test_a_weave_class_detached_runs_its_tasks_traced() -> None:
    app = starlette_testapp.build()
    get(app, "/detach", kind="weave")
    assert [name for name, _ in starlette_testapp.ran] == [
        "body sent",
        "counted A1",
        "ordered 3",
    ]
    (trace,) = [t for t in store_of(app).recent() if t.method == DETACHED]
    assert trace.path == "Restock after GET /detach"
    assert [r.task for r in trace.records] == ["counted", "ordered"]


def test_detach_as_a_decorator() -> None:
    app = starlette_testapp.build()
    get(app, "/detach", kind="decorator")
    assert [name for name, _ in starlette_testapp.ran] == ["body sent", "decorated"]


def test_a_failure_is_logged_and_traced(caplog: pytest.LogCaptureFixture) -> None:
    app = starlette_testapp.build()
    with caplog.at_level(logging.ERROR, logger="wove"):
        reply = get(app, "/detach", kind="fail")
    assert reply.status_code == 200
    (record,) = [r for r in caplog.records if "detached work" in r.getMessage()]
    assert record.getMessage() == "wove: detached work fail after GET /detach failed"
    assert record.exc_info is not None
    (trace,) = [t for t in store_of(app).recent() if t.method == DETACHED]
    assert trace.error == "ValueError: broken on purpose"
    assert [(r.task, r.status) for r in trace.records] == [("fail", "error")]


def test_work_of_an_endpoint_that_raised_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    app = starlette_testapp.build()
    with caplog.at_level(logging.WARNING, logger="wove"):
        reply = get(app, "/detach-then-raise")
    assert reply.status_code == 500
    assert starlette_testapp.ran == [("body sent", "")]  # the 500 page, and nothing else
    messages = [r.getMessage() for r in caplog.records]
    assert (
        "wove: detached work note of GET /detach-then-raise was not started: "
        "the endpoint raised RuntimeError" in messages
    )


def test_without_recording_detached_work_still_runs() -> None:
    app = starlette_testapp.build(record=False, keep_empty_traces=True)
    get(app, "/detach", kind="note")
    assert [name for name, _ in starlette_testapp.ran] == ["body sent", "sync note", "async note"]
    assert store_of(app).recent() == []


def test_detach_outside_a_request_says_what_to_add() -> None:
    with pytest.raises(WeaveStateError, match="WoveMiddleware"):
        detach(print, "x")


def test_detach_refuses_bad_calls() -> None:
    app = starlette_testapp.build()
    errors: list[BaseException] = []

    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    async def misuse(request: Request) -> Response:
        for attempt in (
            lambda: detach(print, mode="thread"),
            lambda: detach("not callable"),
            lambda: detach(mode="fork", extra=1),
            lambda: detach(starlette_testapp.Restock, "positional"),
        ):
            try:
                attempt()
            except InvalidOptionError as exc:
                errors.append(exc)
        return PlainTextResponse("ok")

    app.router.routes.append(Route("/misuse", misuse))
    get(app, "/misuse")
    assert len(errors) == 4
    assert "must be one of 'background', 'fork'" in str(errors[0])


def test_a_detach_racing_with_the_end_is_run_or_refused_by_the_shared_core() -> None:
    """A thread the endpoint started keeps calling detach() while the request finishes:
    each call is either taken with the rest (and runs) or refused, under the lock of the
    core the Django adapter uses too; none is accepted and then lost. Many rounds, as
    the end can fall anywhere in a detach() call."""
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    accepted: list[int] = []
    ran: list[int] = []
    refused: list[WeaveStateError] = []
    threads: list[threading.Thread] = []

    def keep_detaching() -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                detach(ran.append, len(accepted))
            except WeaveStateError as exc:
                refused.append(exc)
                return
            accepted.append(len(accepted))
            time.sleep(0)  # let the request go on: this call and its end interleave

    async def racing(request: Request) -> Response:
        context = contextvars.copy_context()  # what a thread of a background weave sees
        thread = threading.Thread(target=context.run, args=(keep_detaching,), daemon=True)
        threads.append(thread)
        thread.start()
        while not accepted:
            await asyncio.sleep(0)
        return PlainTextResponse("ok")

    app = starlette_testapp.build(record=False)
    app.router.routes.append(Route("/race", racing))

    async def rounds() -> None:
        async with client(app) as c:
            for _ in range(30):
                accepted.clear()
                ran.clear()
                refused.clear()
                assert (await c.get("/race")).text == "ok"
                await asyncio.to_thread(threads[-1].join, 5)
                assert not threads[-1].is_alive()
                assert refused, "detach() was still accepted 5 s after the request was over"
                assert sorted(ran) == accepted  # run before the request ended, none lost

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often: open the race's window wide
    try:
        run(rounds())
    finally:
        sys.setswitchinterval(interval)
    assert "after the response of GET /race was sent" in str(refused[0])
    assert traceback.extract_tb(refused[0].__traceback__)[-1].filename == core.__file__


def _line_of(text: str) -> str:
    """``file:line`` of the line of starlette_testapp.py that holds ``text``."""
    path = starlette_testapp.__file__
    with open(path) as source:
        [number] = [n for n, line in enumerate(source, 1) if text in line]
    return f"{path}:{number}"


@pytest.mark.parametrize(
    ("kind", "call"),
    [
        ("note", 'detach(note, "sync note", mode=mode)'),
        ("weave", 'detach(Restock, shelf="A1", mode=mode)'),
        ("decorator", "        @detach"),
    ],
)
def test_detached_work_is_labelled_with_the_endpoints_detach_call(kind: str, call: str) -> None:
    app = starlette_testapp.build(debug=True)
    get(app, "/detach", kind=kind)
    where = _line_of(call)
    traces = [t for t in store_of(app).recent() if t.method == DETACHED]
    first = min(traces, key=lambda t: t.start)
    assert {r.weave for r in first.records} == {where}  # not a file of wove/contrib
    page = get(app, f"/wove/{first.id}/").text
    assert f'title="{where}">starlette_testapp.py:{where.rsplit(":", 1)[1]} (' in page
    assert "wove/contrib" not in page


def test_a_failure_is_logged_and_traced_whatever_the_default_error_mode(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import wove

    before = wove.defaults().error_mode
    wove.config(error_mode="return")  # the weave detach() starts relies on raising
    try:
        app = starlette_testapp.build()
        with caplog.at_level(logging.ERROR, logger="wove"):
            get(app, "/detach", kind="fail")
    finally:
        wove.config(error_mode=before)
    assert [r for r in caplog.records if "detached work" in r.getMessage()]
    (trace,) = [t for t in store_of(app).recent() if t.method == DETACHED]
    assert trace.error == "ValueError: broken on purpose"
