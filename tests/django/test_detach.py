"""detach() in-process: after the response is closed, in each mode, and its mistakes."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import pytest
from django.test import Client, override_settings

import wove
from wove import InvalidOptionError, Weave, WeaveStateError
from wove.contrib.django import detach
from wove.contrib.django.recording import store

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _empty_store() -> None:
    store().clear()


def _wait_for(path: Path, seconds: float = 10.0) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.01)
    raise AssertionError(f"{path} was not written within {seconds} s")


def _nothing() -> None:
    pass


def _wait_for_trace(path_fragment: str, seconds: float = 10.0) -> object:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for trace in store().recent():
            if trace.method == "DETACH" and path_fragment in trace.path:
                return trace
        time.sleep(0.01)
    raise AssertionError(f"no DETACH trace for {path_fragment!r}")


def test_work_starts_only_when_the_response_is_closed(tmp_path: Path) -> None:
    from django.test.client import RequestFactory

    from wove.contrib.django.middleware import WoveMiddleware

    marker = tmp_path / "marker"
    request = RequestFactory().get("/detach/", {"marker": str(marker)})
    from wove_testproject.shop.views import detach_view

    response = WoveMiddleware(detach_view)(request)
    assert response.content == b"sent"
    time.sleep(0.2)
    assert not marker.exists()  # the server has not closed the response yet
    response.close()
    assert _wait_for(marker)


@pytest.mark.parametrize(
    ("url", "mode", "task"),
    [
        ("/detach/", "background", "_write_marker"),
        ("/detach-decorated/", "background", "write"),
        ("/detach/", "fork", "_write_marker"),
    ],
)
def test_detached_work_runs_and_is_traced_under_its_name(
    client: Client, tmp_path: Path, url: str, mode: str, task: str
) -> None:
    marker = tmp_path / "marker"
    assert client.get(url, {"marker": str(marker), "mode": mode}).content == b"sent"
    pid = int(_wait_for(marker))
    assert (pid == os.getpid()) is (mode == "background")
    trace = _wait_for_trace(f"after GET {url}")
    assert trace.error is None  # type: ignore[attr-defined]
    assert [(r.task, r.status) for r in trace.records] == [(task, "ok")]  # type: ignore[attr-defined]


def test_an_async_view_can_detach(async_client: Client, tmp_path: Path) -> None:
    import asyncio

    marker = tmp_path / "marker"
    response = asyncio.run(async_client.get("/detach-async/", {"marker": str(marker)}))  # type: ignore[arg-type]
    assert response.content == b"sent"
    assert _wait_for(marker)


def test_tasks_mode_enqueues_a_django_task(client: Client, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    assert client.get("/detach-task/", {"marker": str(marker)}).content == b"sent"
    assert _wait_for(marker) == "from a task"  # the default backend runs it at once


@pytest.mark.parametrize("mode", ["background", "fork"])
def test_failing_detached_work_is_logged_and_traced(
    client: Client, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    with caplog.at_level(logging.ERROR, logger="wove"):
        assert client.get("/detach-fails/", {"mode": mode}).status_code == 200
        trace = _wait_for_trace("after GET /detach-fails/")
    assert trace.error == "LookupError: detached work failed on purpose"  # type: ignore[attr-defined]
    assert [r.status for r in trace.records] == ["error"]  # type: ignore[attr-defined]
    logged = [f"{r.getMessage()} {r.exc_info}" for r in caplog.records]
    assert any("detached work failed on purpose" in line for line in logged)


_stuck = threading.Lock()  # held by a test's thread at the fork: the child waits forever
_armed = False


@wove.at_detached_child
def _wait_for_the_stuck_lock() -> None:  # a no-op unless a test arms it
    if _armed:
        _stuck.acquire()


@pytest.mark.timeout(60)
def test_a_forked_child_that_never_starts_is_killed_logged_and_traced(
    client: Client, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    global _armed
    marker = tmp_path / "marker"
    _stuck.acquire()
    _armed = True
    try:
        with (
            override_settings(WOVE={"FORK_START_TIMEOUT": 0.5}),
            caplog.at_level(logging.ERROR, logger="wove"),
        ):
            assert wove.settings().fork_start_timeout == 0.5
            response = client.get("/detach/", {"marker": str(marker), "mode": "fork"})
            assert response.content == b"sent"
            trace = _wait_for_trace("after GET /detach/", seconds=30)
    finally:
        _armed = False
        _stuck.release()
    assert wove.settings().fork_start_timeout == 5.0  # the default again
    error = trace.error  # type: ignore[attr-defined]
    assert error.startswith("DetachError: the detached child (pid "), error
    assert "did not start its work within 0.5 s, so it was killed" in error
    records = trace.records  # type: ignore[attr-defined]
    assert [(r.task, r.status, r.error) for r in records] == [("_write_marker", "cancelled", error)]
    assert any("did not start its work" in r.getMessage() for r in caplog.records)
    assert not marker.exists()


def test_work_detached_by_a_view_that_raises_is_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "marker"
    client = Client(raise_request_exception=False)
    with caplog.at_level(logging.WARNING, logger="wove"):
        response = client.get("/detach-raises/", {"marker": str(marker)})
    assert response.status_code == 500
    time.sleep(0.3)
    assert not marker.exists()
    assert any("was not started: the view raised RuntimeError" in r.message for r in caplog.records)


def test_detach_outside_a_request_says_what_is_missing() -> None:
    with pytest.raises(WeaveStateError, match="WoveMiddleware"):
        detach(print, "never")


def test_a_bad_mode_and_a_plain_function_in_tasks_mode_are_refused() -> None:
    from wove.contrib.django.after_response import close_pending, open_pending

    _, token = open_pending("GET", "/")
    try:
        with pytest.raises(InvalidOptionError, match="'background', 'fork', 'tasks'"):
            detach(print, mode="later")  # type: ignore[call-overload]
        with pytest.raises(InvalidOptionError, match="needs a task made with @task"):
            detach(print, mode="tasks")
        with pytest.raises(InvalidOptionError, match="no function"):
            detach(None, 1)  # type: ignore[call-overload]
        with (
            override_settings(WOVE={"DETACH_MODE": "sometime"}),
            pytest.raises(Exception, match="DETACH_MODE"),
        ):
            detach(print)
    finally:
        close_pending(token)


class Restock(Weave):
    @Weave.do
    def counted(self, shelf: str) -> int:
        return len(shelf)

    @Weave.do
    def ordered(self, counted: int) -> int:
        return counted * 2


def test_a_weave_class_detached_runs_its_tasks_traced() -> None:
    """The shared core runs a Weave class as a weave of its own, keyword data only."""
    from django.http import HttpRequest, HttpResponse
    from django.test.client import RequestFactory

    from wove.contrib.django.middleware import WoveMiddleware

    def view(request: HttpRequest) -> HttpResponse:
        detach(Restock, shelf="A1")
        with pytest.raises(InvalidOptionError, match="keyword data only"):
            detach(Restock, "A1")
        return HttpResponse("sent")

    WoveMiddleware(view)(RequestFactory().get("/restock/")).close()
    trace = _wait_for_trace("Restock after GET /restock/")
    assert trace.error is None  # type: ignore[attr-defined]
    assert [(r.task, r.status) for r in trace.records] == [  # type: ignore[attr-defined]
        ("counted", "ok"),
        ("ordered", "ok"),
    ]


def test_the_old_mode_name_thread_still_runs_in_process_and_warns(tmp_path: Path) -> None:
    """mode="thread" was renamed "background": it still works, and the warning points at
    the caller's line (the call and the decorator form), not into Wove."""
    from django.http import HttpRequest, HttpResponse
    from django.test.client import RequestFactory

    from wove.contrib.django.middleware import WoveMiddleware

    marker = tmp_path / "marker"

    def view(request: HttpRequest) -> HttpResponse:
        detach(lambda: marker.write_text(str(os.getpid())), mode="thread")
        detach(mode="thread")(_nothing)
        return HttpResponse("sent")

    with pytest.warns(DeprecationWarning, match='use mode="background"') as caught:
        response = WoveMiddleware(view)(RequestFactory().get("/old-name/"))
    assert [(w.category, w.filename) for w in caught] == [(DeprecationWarning, __file__)] * 2
    response.close()
    assert int(_wait_for(marker)) == os.getpid()


def test_a_detach_racing_with_the_close_is_run_or_refused_by_the_shared_core() -> None:
    """A thread the view started keeps calling detach() while the server closes the
    response: each call is either taken with the rest (and runs) or refused, by the core
    the Starlette adapter uses too; none is accepted and then lost. Many rounds, as the
    close can fall anywhere in a detach() call."""
    import contextvars
    import sys
    import threading
    import traceback

    from django.http import HttpRequest, HttpResponse
    from django.test.client import RequestFactory

    from wove.contrib.django.middleware import WoveMiddleware
    from wove.contrib.traces import after_response as core

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
            time.sleep(0)  # let the server go on: this call and the close interleave

    def view(request: HttpRequest) -> HttpResponse:
        context = contextvars.copy_context()  # what a background weave's thread sees
        thread = threading.Thread(target=context.run, args=(keep_detaching,), daemon=True)
        threads.append(thread)
        thread.start()
        while not accepted:
            time.sleep(0)
        return HttpResponse("sent")

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often: open the race's window wide
    try:
        for _ in range(30):
            accepted.clear()
            ran.clear()
            refused.clear()
            WoveMiddleware(view)(RequestFactory().get("/race/")).close()
            threads[-1].join(5)
            assert not threads[-1].is_alive()
            assert refused, "detach() was still accepted 5 s after the response was closed"
            deadline = time.monotonic() + 10
            while sorted(ran) != accepted and time.monotonic() < deadline:
                time.sleep(0.001)
            assert sorted(ran) == accepted  # every accepted call ran, none twice
    finally:
        sys.setswitchinterval(interval)
    assert "after the response of GET /race/ was sent" in str(refused[0])
    assert traceback.extract_tb(refused[0].__traceback__)[-1].filename == core.__file__
