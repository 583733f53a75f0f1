"""The django-debug-toolbar panel: in-process against real requests, then in a real
toolbar (the test project with the toolbar installed, wove_testproject.settings_toolbar,
under ``manage.py runserver`` and uvicorn).

This session's settings do not install the toolbar (its store imports a model), so the
in-process tests give the panel a stand-in for the toolbar object that keeps the panel's
stats as JSON, as the toolbar's stores do; the slow tests use the real one.
"""

from __future__ import annotations

import html
import importlib
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from browser import dev_server, manage, project_env
from django.http import HttpRequest, HttpResponseBase
from django.test import Client, RequestFactory, override_settings

from wove.contrib.django.panels import TOOLBAR_MIDDLEWARE, WovePanel
from wove.contrib.django.recording import store

WOVE_MIDDLEWARE = "wove.contrib.django.middleware.WoveMiddleware"
TOOLBAR_SETTINGS = "wove_testproject.settings_toolbar"
TASKS = ("authors", "books", "totals")


@pytest.fixture(autouse=True)
def _empty_store() -> None:
    store().clear()


class StandInToolbar:
    """What a panel uses of ``DebugToolbar``: the request, the stats, and a store that
    keeps each panel's stats as JSON (``debug_toolbar.store.MemoryStore`` does the same)."""

    def __init__(self, request: HttpRequest) -> None:
        self.request = request
        self.request_id = "stand-in"
        self.stats: dict[str, Any] = {}
        self.server_timing_stats: dict[str, Any] = {}
        self.store = self
        self.saved: dict[str, str] = {}

    def save_panel(self, request_id: str, panel_id: str, data: Any) -> None:
        self.saved[panel_id] = json.dumps(data)


def _panel(request: HttpRequest, response: HttpResponseBase) -> tuple[WovePanel, StandInToolbar]:
    toolbar = StandInToolbar(request)
    panel = WovePanel(toolbar, lambda _: response)
    panel.generate_stats(request, response)
    return panel, toolbar


def _task_rows(content: str) -> dict[str, str]:
    """Each task row of the waterfall, by its label: the row's HTML."""
    rows = {}
    for piece in content.split('<div class="row ')[1:]:
        if piece.startswith('task"'):
            label = re.search(r'<div class="label" title="[^"]*">([^<]*)</div>', piece)
            assert label, piece
            rows[label.group(1)] = piece
    return rows


def _place(content: str, name: str) -> float:
    """The percentage the fragment's <style> gives the place class ``name`` (wl-, ww-)."""
    rule = re.search(rf"\.{name}\{{(?:left|width):([\d.]+)%\}}", content)
    assert rule, f"no rule for .{name}"
    return float(rule.group(1))


def _assert_bars_of_parallel(content: str) -> None:
    """The waterfall of /parallel/: one bar per task, on its row, placed in the track."""
    rows = _task_rows(content)
    assert set(rows) == set(TASKS), content
    for task in TASKS:
        bars = re.findall(r'<span class="bar lane-thread status-ok ([^"]*)"', rows[task])
        assert len(bars) == 1, rows[task]
        left, width = (_place(content, name) for name in bars[0].split())
        assert left >= 0
        assert width >= 0
        assert left + width <= 100.001


@pytest.mark.django_db(transaction=True)
def test_the_panel_draws_this_requests_tasks_and_survives_the_json_store(client: Client) -> None:
    response = client.get("/parallel/")
    assert response.status_code == 200
    request = response.wsgi_request
    trace = request.wove_trace  # type: ignore[attr-defined]

    panel, toolbar = _panel(request, response)
    content = panel.content
    _assert_bars_of_parallel(content)
    assert f"id {trace.id}" in content
    assert f'href="/wove/{trace.id}.json"' in content  # the trace pages hold it too
    assert "2 SQL queries" in content  # authors and books, on pool threads
    (css,) = re.findall(r"<style>(.*?)</style>", content, re.S)
    selectors = [s.strip() for rule in re.findall(r"([^{}]+)\{", css) for s in rule.split(",")]
    assert selectors
    assert all(s.startswith("#djDebug .wove-waterfall") for s in selectors)
    assert re.fullmatch(r"3 tasks in [\d.]+ ms", panel.nav_subtitle)

    # What the toolbar's history and its later panel loads show: the stats from the store.
    reloaded = WovePanel(StandInToolbar(request), lambda _: response)
    reloaded.load_stats_from_store(json.loads(toolbar.saved["WovePanel"]))
    assert reloaded.from_store
    assert reloaded.content == content
    assert reloaded.nav_subtitle == panel.nav_subtitle


@pytest.mark.django_db(transaction=True)
def test_a_request_without_weaves_says_so(client: Client) -> None:
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    panel, _ = _panel(response.wsgi_request, response)
    assert panel.nav_subtitle == "no weaves"
    assert "ran no weave" in panel.content


@pytest.mark.parametrize(
    ("middleware", "says"),
    [
        ([WOVE_MIDDLEWARE, TOOLBAR_MIDDLEWARE], "listed before DebugToolbarMiddleware"),
        ([TOOLBAR_MIDDLEWARE], f"add '{WOVE_MIDDLEWARE}' to MIDDLEWARE"),
        ([TOOLBAR_MIDDLEWARE, WOVE_MIDDLEWARE], "did not come through WoveMiddleware"),
    ],
)
def test_without_a_trace_the_panel_says_why(middleware: list[str], says: str) -> None:
    request = RequestFactory().get("/somewhere/")
    response = HttpResponseBase()
    with override_settings(MIDDLEWARE=middleware):
        panel, _ = _panel(request, response)
    assert panel.nav_subtitle == "no trace"
    assert says in html.unescape(panel.content)


def test_the_panel_warns_at_startup_when_wove_is_above_the_toolbar() -> None:
    with override_settings(MIDDLEWARE=[WOVE_MIDDLEWARE, TOOLBAR_MIDDLEWARE]):
        [warning] = WovePanel.run_checks()
    assert warning.id == "wove.W002"
    with override_settings(MIDDLEWARE=[TOOLBAR_MIDDLEWARE, WOVE_MIDDLEWARE]):
        assert WovePanel.run_checks() == []


@pytest.mark.django_db(transaction=True)
def test_the_panel_hands_the_responses_server_timing_back_to_the_toolbar(client: Client) -> None:
    response = client.get("/parallel/")
    value = response["Server-Timing"]
    assert "wove.authors;dur=" in value
    panel, _ = _panel(response.wsgi_request, response)
    panel.generate_server_timing(response.wsgi_request, response)
    assert panel.get_headers(response.wsgi_request) == {"Server-Timing": value}


def test_without_the_toolbar_importing_the_panel_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "debug_toolbar.panels", None)  # import fails
    monkeypatch.delitem(sys.modules, "wove.contrib.django.panels")
    with pytest.raises(ImportError, match="install django-debug-toolbar"):
        importlib.import_module("wove.contrib.django.panels")


# --- the real toolbar ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("asgi", [False, True], ids=["wsgi", "asgi"])
def test_the_real_toolbar_shows_this_requests_bars(tmp_path: Path, asgi: bool) -> None:
    server = dev_server(tmp_path, TOOLBAR_SETTINGS, asgi=asgi)
    try:
        reply = server.get("/parallel/")
        assert reply.status == 200, reply.body
        # The toolbar replaces Server-Timing with its panels' entries; the panel keeps Wove's.
        timing = reply.headers["Server-Timing"]
        assert "TimerPanel_total" in timing
        assert "wove.authors;dur=" in timing
        assert "wove.books;dur=" in timing

        # The toolbar's own view for a panel, fed from its store (JSON), as its script asks.
        request_id = reply.headers["djdt-request-id"]
        loaded = server.get(f"/__debug__/render_panel/?request_id={request_id}&panel_id=WovePanel")
        assert loaded.status == 200, loaded.body
        content = loaded.json()["content"]
        _assert_bars_of_parallel(content)
        assert content.count('<code class="sql-text">SELECT COUNT(*)') == 2  # each task's SQL
        # ... and it is this request's trace, as the trace pages have it.
        (trace_id,) = re.findall(r"id ([0-9a-f]{12}) ", content)
        trace = server.get(f"/wove/{trace_id}.json").json()
        assert trace["path"] == "/parallel/"
        assert {r["task"] for r in trace["records"]} == set(TASKS)

        page = server.get("/toolbar-page/")
        assert page.status == 200
        body = page.body.decode()
        assert 'id="djdt-WovePanel"' in body
        assert re.search(r"3 tasks in [\d.]+ ms", body), body[-5000:]
    except BaseException:
        print(server.log())
        raise
    finally:
        server.stop()


@pytest.mark.slow
def test_wove_middleware_above_the_toolbar_leaves_the_panel_empty_and_is_reported(
    tmp_path: Path,
) -> None:
    server = dev_server(tmp_path, TOOLBAR_SETTINGS, WOVE_TEST_TOOLBAR_ORDER="before")
    try:
        reply = server.get("/parallel/")
        assert reply.status == 200, reply.body
        request_id = reply.headers["djdt-request-id"]
        loaded = server.get(f"/__debug__/render_panel/?request_id={request_id}&panel_id=WovePanel")
        content = loaded.json()["content"]
        assert "listed before DebugToolbarMiddleware" in content
        assert "wove-waterfall" not in content
    except BaseException:
        print(server.log())
        raise
    finally:
        server.stop()

    database = tmp_path / "check.sqlite3"
    before = project_env(database, TOOLBAR_SETTINGS, WOVE_TEST_TOOLBAR_ORDER="before")
    wrong = manage(before, "check")
    assert "wove.W002" in wrong.stderr + wrong.stdout
    right = manage(project_env(database, TOOLBAR_SETTINGS), "check")
    assert "wove.W002" not in right.stderr + right.stdout
    assert "no issues" in right.stdout
