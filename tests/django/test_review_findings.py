"""Defects found in review of the Django adapter, each shown by a test that failed first."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest
from django.test import Client, override_settings
from django.test.client import RequestFactory

import wove
from wove import WeaveStateError, weave
from wove.contrib.django import detach
from wove.contrib.django.middleware import WoveMiddleware
from wove.contrib.django.recording import store

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _empty_store() -> None:
    store().clear()


def _wait_for(path: Path, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.01)
    return False


def test_detach_after_the_response_was_closed_is_refused_not_lost(tmp_path: Path) -> None:
    """A background weave started by the view inherits the request's context; a detach()
    it makes once the response has been closed used to be appended to a list nobody
    would ever start again: the work was silently lost."""
    marker = tmp_path / "marker"
    closed = threading.Event()
    outcome: list[object] = []

    def view(request: object) -> object:
        from django.http import HttpResponse

        def later() -> None:
            closed.wait(5)
            try:
                detach(marker.write_text, "ran")
            except WeaveStateError as exc:
                outcome.append(exc)
            else:
                outcome.append("accepted")

        with weave(background=True) as w:
            w.do(later)
        return HttpResponse("sent")

    response = WoveMiddleware(view)(RequestFactory().get("/bg/"))  # type: ignore[arg-type]
    response.close()
    closed.set()
    deadline = time.monotonic() + 5
    while not outcome and time.monotonic() < deadline:
        time.sleep(0.01)
    assert outcome, "the background task did not finish"
    if outcome[0] == "accepted":
        # Accepted: then it must run (it is after the response, as promised).
        assert _wait_for(marker), "detach() accepted the work after the response and lost it"
    else:
        assert isinstance(outcome[0], WeaveStateError)
        assert "response" in str(outcome[0])


def test_max_threads_is_restored_when_the_override_ends() -> None:
    """WOVE['MAX_THREADS'] is applied on reload; once the override is gone (None: leave
    Wove's default) the bound it set used to stay in force for the rest of the process."""
    before = wove.settings().max_threads
    with override_settings(WOVE={"MAX_THREADS": 3}):
        assert wove.settings().max_threads == 3
    assert wove.settings().max_threads == before


def test_a_forked_detach_failure_reaches_the_parent_log_without_recording(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """With RECORD off, a forked child's error went only to the child's own log handlers
    (its stderr is /dev/null): the docs promise it in the parent's log."""
    with (
        override_settings(WOVE={"RECORD": False}),
        caplog.at_level(logging.ERROR, logger="wove"),
    ):
        assert client.get("/detach-fails/", {"mode": "fork"}).status_code == 200
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if any("failed on purpose" in r.getMessage() for r in caplog.records):
                break
            time.sleep(0.02)
    assert any("failed on purpose" in r.getMessage() for r in caplog.records)


def test_an_async_view_that_raises_drops_its_detached_work(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio

    from django.test import AsyncClient

    marker = tmp_path / "marker"
    client = AsyncClient(raise_request_exception=False)
    with caplog.at_level(logging.WARNING, logger="wove"):
        response = asyncio.run(client.get("/detach-raises-async/", {"marker": str(marker)}))  # type: ignore[arg-type]
    assert response.status_code == 500
    time.sleep(0.3)
    assert not marker.exists()
    assert any("was not started" in r.message for r in caplog.records)


def test_a_load_racing_with_a_settings_change_does_not_bring_back_old_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A thread that read WOVE just before override_settings changed it used to store
    what it loaded after the reload had cleared the cache: the old settings then stayed
    in force, with the new ones never read again."""
    from wove.contrib.django import conf

    conf.wove_settings()
    monkeypatch.setattr(conf, "_loaded", None)
    real_load = conf.load
    reading, changed = threading.Event(), threading.Event()
    slow_thread: list[int] = []

    def slow_load(raw: object, *, debug: bool) -> conf.WoveSettings:
        if threading.get_ident() in slow_thread:
            reading.set()  # this thread has read the old WOVE; the change happens now
            changed.wait(5)
        return real_load(raw, debug=debug)

    monkeypatch.setattr(conf, "load", slow_load)
    go = threading.Event()

    def read() -> None:
        go.wait(5)
        conf.wove_settings()

    thread = threading.Thread(target=read)
    thread.start()
    slow_thread.append(thread.ident or 0)
    go.set()
    assert reading.wait(5)
    with override_settings(WOVE={"SERVER_TIMING": True, "SERVER_TIMING_ENTRIES": 7}):
        changed.set()
        thread.join(5)
        assert conf.wove_settings().server_timing_entries == 7
    assert conf.wove_settings().server_timing_entries == 20
