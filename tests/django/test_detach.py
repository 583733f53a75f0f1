"""detach() in-process: after the response is closed, in each mode, and its mistakes."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest
from django.test import Client, override_settings

from wove import InvalidOptionError, WeaveStateError
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
        ("/detach/", "thread", "_write_marker"),
        ("/detach-decorated/", "thread", "write"),
        ("/detach/", "fork", "_write_marker"),
    ],
)
def test_detached_work_runs_and_is_traced_under_its_name(
    client: Client, tmp_path: Path, url: str, mode: str, task: str
) -> None:
    marker = tmp_path / "marker"
    assert client.get(url, {"marker": str(marker), "mode": mode}).content == b"sent"
    pid = int(_wait_for(marker))
    assert (pid == os.getpid()) is (mode == "thread")
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


@pytest.mark.parametrize("mode", ["thread", "fork"])
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
        with pytest.raises(InvalidOptionError, match="'thread', 'fork', 'tasks'"):
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
