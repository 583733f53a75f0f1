"""What the trace pages and the panel show of a request: each task's SQL statements
(capped, parameters only with DEBUG), every task of a failed weave with its status, the
links between the pages, and where detached work was detached."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
from django.test import Client, override_settings
from test_panel import _panel

from wove.contrib.django.recording import store
from wove.contrib.traces import RequestTrace

pytestmark = pytest.mark.django_db(transaction=True)

AUTHOR_QUERY = re.compile(r'SELECT COUNT\(\*\) AS "__count" FROM "shop_author" WHERE .*"name" = ')


@pytest.fixture(autouse=True)
def _empty_store() -> None:
    store().clear()


def _only_trace() -> RequestTrace:
    [trace] = store().recent()
    return trace


def _record(trace: RequestTrace, task: str) -> object:
    [record] = [r for r in trace.records if r.task == task]
    return record


def test_each_query_of_a_task_is_annotated_in_order_without_parameters(client: Client) -> None:
    answer = client.get("/sql-and-cancelled/", {"n": "3", "fail": "0"}).json()
    trace = _only_trace()
    assert answer == {"failed": False, "trace": trace.id}  # request.wove_trace_id
    extra = _record(trace, "lookups").extra  # type: ignore[attr-defined]
    assert extra["queries"] == 3
    statements = extra["sql"]
    assert len(statements) == 3
    for sql, ms, params in statements:
        assert AUTHOR_QUERY.search(sql), sql
        assert 0 <= ms <= extra["query_ms"]
        assert params is None  # DEBUG is off in this session
    assert "sql_omitted" not in extra
    assert "sql" not in _record(trace, "fails").extra  # type: ignore[attr-defined]


def test_parameters_are_kept_only_with_debug_and_the_statements_are_capped(
    client: Client,
) -> None:
    with override_settings(DEBUG=True, WOVE={"MAX_SQL_STATEMENTS": 2}):
        client.get("/sql-and-cancelled/", {"n": "5", "fail": "0"})
    extra = _record(_only_trace(), "lookups").extra  # type: ignore[attr-defined]
    assert extra["queries"] == 5
    assert [params for _, _, params in extra["sql"]] == ["('<b>0</b>',)", "('<b>1</b>',)"]
    assert extra["sql_omitted"] == 3

    store().clear()
    with override_settings(DEBUG=True):
        client.get("/parallel/")  # queries without parameters: nothing to show
    [(_, _, params)] = _record(_only_trace(), "authors").extra["sql"]  # type: ignore[attr-defined]
    assert params is None

    store().clear()
    with override_settings(WOVE={"MAX_SQL_STATEMENTS": 0}):
        client.get("/sql-and-cancelled/", {"n": "2", "fail": "0"})
    extra = _record(_only_trace(), "lookups").extra  # type: ignore[attr-defined]
    assert (extra["queries"], extra["sql_omitted"]) == (2, 2)
    assert "sql" not in extra

    store().clear()
    client.get("/sql-and-cancelled/", {"n": "1", "fail": "0"})  # the settings are back
    [(_, _, params)] = _record(_only_trace(), "lookups").extra["sql"]  # type: ignore[attr-defined]
    assert params is None


def test_the_request_page_shows_sql_cancelled_tasks_and_links_back(client: Client) -> None:
    with override_settings(DEBUG=True):
        answer = client.get("/sql-and-cancelled/", {"n": "2"}).json()
        assert answer["failed"] is True
        page = client.get(f"/wove/{answer['trace']}/")
        listing = client.get("/wove/").content.decode()
    assert page.status_code == 200
    body = page.content.decode()
    # Back to the list, at the top.
    assert re.search(r'<p class="nav"><a href="/wove/">[^<]*All recent requests</a></p>', body)
    assert "· 4 tasks ·" in body
    # Every task, with its status: the dependent never started, a marker where the weave
    # ended (needs the engine's records of tasks it never started).
    assert 'class="bar lane-thread status-cancelled marker"' in body
    assert "not started: the weave failed (LookupError: failed on purpose)" in body
    assert 'class="bar lane-thread status-error"' in body
    assert re.search(r'class="bar lane-loop status-cancelled[^"]*"', body)  # slow
    # The SQL, escaped, with its parameters (DEBUG is on).
    assert "<b>0</b>" not in body
    sql = re.search(r'<div class="sql">(.*?)</div></section>', body, re.S)
    assert sql, body
    assert "<code>lookups</code> · 2 statements ·" in sql.group(1)
    texts = [html.unescape(t) for t in re.findall(r'<code class="sql-text">(.*?)</code>', body)]
    assert len(texts) == 2
    assert all(AUTHOR_QUERY.search(t) for t in texts), texts
    params = re.findall(r'<code class="sql-params">(.*?)</code>', body)
    assert params == ["(&#x27;&lt;b&gt;0&lt;/b&gt;&#x27;,)", "(&#x27;&lt;b&gt;1&lt;/b&gt;&#x27;,)"]

    assert f'href="/wove/{answer["trace"]}/"' in listing  # the list links to each page
    assert "All recent requests" not in listing


def test_the_panel_lists_the_statements_of_pool_threads(client: Client) -> None:
    response = client.get("/parallel/")
    panel, _ = _panel(response.wsgi_request, response)
    content = panel.content
    assert "2 SQL queries" in content
    assert "statements are listed below the waterfall" in content
    summaries = re.findall(r"<summary><code>(\w+)</code> · 1 statement ·", content)
    assert sorted(summaries) == ["authors", "books"]
    texts = [html.unescape(t) for t in re.findall(r'<code class="sql-text">(.*?)</code>', content)]
    assert sorted(texts) == [
        'SELECT COUNT(*) AS "__count" FROM "shop_author"',
        'SELECT COUNT(*) AS "__count" FROM "shop_book"',
    ]
    trace = response.wsgi_request.wove_trace  # type: ignore[attr-defined]
    assert f'href="/wove/{trace.id}/"' in content  # this request's page


def _line_of(path: str, text: str) -> str:
    lines = Path(path).read_text().splitlines()
    [number] = [n for n, line in enumerate(lines, 1) if text in line]
    return f"{path}:{number}"


@pytest.mark.parametrize(
    ("url", "mode", "call"),
    [
        ("/detach/", "background", "detach(_write_marker, marker, delay"),
        ("/detach/", "fork", "detach(_write_marker, marker, delay"),
        ("/detach-decorated/", "background", "    @detach"),
    ],
)
def test_detached_work_is_labelled_with_the_views_detach_call(
    client: Client, tmp_path: Path, url: str, mode: str, call: str
) -> None:
    from test_detach import _wait_for, _wait_for_trace
    from wove_testproject.shop import views

    marker = tmp_path / "marker"
    client.get(url, {"marker": str(marker), "mode": mode})
    _wait_for(marker)
    trace = _wait_for_trace(f"after GET {url}")
    where = _line_of(views.__file__, call)
    assert [r.weave for r in trace.records] == [where]  # type: ignore[attr-defined]
    with override_settings(DEBUG=True):
        page = client.get(f"/wove/{trace.id}/").content.decode()  # type: ignore[attr-defined]
    assert f'title="{where}">views.py:{where.rsplit(":", 1)[1]} (1 task)</div>' in page
    assert "wove/contrib" not in page
