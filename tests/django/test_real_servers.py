"""The Django adapter under real servers and a real PostgreSQL: no mocks, no test client.

gunicorn (WSGI, gthread workers) and uvicorn (ASGI) run the test project on a fresh
database each; these tests talk HTTP to them and look at PostgreSQL's own view of the
connections (``pg_stat_activity``) and at the server processes in /proc.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from servers import Reply, Server, Servers, children, create_user, log_in, state, wait_until_gone

pytestmark = pytest.mark.slow

NO_HYGIENE = "wove_testproject.settings_no_hygiene"
MANY = {"gunicorn": "/many-queries/", "uvicorn": "/many-queries-async/"}
TASKS = {"authors", "books", "priced", "named"}


def eventually(probe: Callable[[], Any], accept: Callable[[Any], bool], seconds: float) -> Any:
    """Call ``probe`` until ``accept`` takes its value or ``seconds`` pass; the last value."""
    deadline = time.monotonic() + seconds
    while True:
        value = probe()
        if accept(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def hammer(server: Server, path: str, count: int, clients: int) -> list[Reply]:
    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(lambda _: server.get(path), range(count)))


class PeakBackends:
    """Samples the connection count while requests run: the most seen at once."""

    def __init__(self, servers: Servers, server: Server) -> None:
        self.servers, self.server = servers, server
        self.peak = 0
        self._pool = ThreadPoolExecutor(1)
        self._running = True

    def __enter__(self) -> PeakBackends:
        self._future = self._pool.submit(self._sample)
        return self

    def _sample(self) -> None:
        with self.servers.postgres.connect() as probe:
            while self._running:
                self.peak = max(self.peak, self.servers.backends(self.server, probe))
                time.sleep(0.02)

    def __exit__(self, *exc_info: object) -> None:
        self._running = False
        self._future.result()
        self._pool.shutdown()


def trace_for(server: Server, path: str) -> dict[str, Any]:
    """The newest stored trace of ``path`` (the trace pages are open with DEBUG on)."""
    traces = server.ok_json("/wove/traces.json")["traces"]
    matching = [t for t in traces if t["path"] == path]
    assert matching, f"no trace of {path} among {[t['path'] for t in traces]}"
    return max(matching, key=lambda t: t["started_at"])


# --- connections ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gunicorn", "uvicorn"])
def test_parallel_orm_tasks_leave_no_connection_open(servers: Servers, kind: str) -> None:
    server = servers.start(kind, WOVE_TEST_DEBUG="1")
    baseline = servers.backends(server)
    with PeakBackends(servers, server) as sampled:
        replies = hammer(server, MANY[kind], count=50, clients=4)
    assert [r.status for r in replies] == [200] * 50
    # The tasks really ran on pool threads, each with a connection of its own.
    records = trace_for(server, MANY[kind])["records"]
    assert {r["task"] for r in records} == TASKS
    assert {r["lane"] for r in records} == {"thread"}
    assert all(r["extra"]["queries"] == 1 for r in records)
    assert sampled.peak > baseline, "the sampler never saw the tasks' connections"
    settled = eventually(lambda: servers.backends(server), lambda n: n == baseline, 15)
    assert settled == baseline, f"{settled} connections open, {baseline} before the requests"


@pytest.mark.parametrize("kind", ["gunicorn", "uvicorn"])
def test_without_hygiene_pool_threads_keep_their_connections(servers: Servers, kind: str) -> None:
    """The control for the test above: the same requests with CONNECTION_HYGIENE off."""
    server = servers.start(kind, DJANGO_SETTINGS_MODULE=NO_HYGIENE)
    baseline = servers.backends(server)
    replies = hammer(server, MANY[kind], count=50, clients=4)
    assert [r.status for r in replies] == [200] * 50
    time.sleep(1.0)
    assert servers.backends(server) > baseline


@pytest.mark.parametrize("kind", ["gunicorn", "uvicorn"])
def test_djangos_connection_pool_is_never_exhausted(servers: Servers, kind: str) -> None:
    """Pool of at most 4 connections, 8 concurrent clients, 4 ORM tasks per request."""
    server = servers.start(kind, WOVE_TEST_DB_POOL="1")
    replies = hammer(server, MANY[kind], count=100, clients=8)
    assert [r.status for r in replies] == [200] * 100  # a PoolTimeout would be a 500
    assert servers.backends(server) <= 4  # the pool's max_size, kept open by the pool


def test_without_hygiene_djangos_pool_runs_dry(servers: Servers) -> None:
    """The control: pool threads that keep their connection exhaust the pool."""
    server = servers.start(
        "gunicorn", WOVE_TEST_DB_POOL="1", WOVE_TEST_DEBUG="1", DJANGO_SETTINGS_MODULE=NO_HYGIENE
    )
    replies = hammer(server, MANY["gunicorn"], count=4, clients=4)
    failed = [r for r in replies if r.status == 500]
    assert failed, "the pool never ran dry"
    assert all(b"PoolTimeout" in r.body for r in failed)  # DEBUG's error page names it


# --- transactions --------------------------------------------------------------------------


def test_in_atomic_requests_tasks_share_the_requests_transaction(servers: Servers) -> None:
    server = servers.start("gunicorn", WOVE_TEST_ATOMIC_REQUESTS="1", WOVE_TEST_DEBUG="1")

    assert server.ok_json("/sensitive/") == {"seen": True}
    # The row is really uncommitted: a pool thread's own connection does not see it.
    assert server.ok_json("/sensitive-and-pool/") == {"seen_here": True, "seen_on_pool": False}
    lanes = {r["task"]: r["lane"] for r in trace_for(server, "/sensitive-and-pool/")["records"]}
    assert lanes == {"seen_here": "caller", "seen_on_pool": "thread"}

    # Tasks that name no lane default to the request's thread inside the transaction.
    assert server.ok_json("/atomic-default/") == {
        "in_atomic_block": True,
        "seen": True,
        "on_request_thread": True,
    }
    lanes = {r["task"]: r["lane"] for r in trace_for(server, "/atomic-default/")["records"]}
    assert lanes == {"seen": "caller", "on_request_thread": "caller"}

    # Outside a transaction the same view's tasks run in parallel on pool threads.
    plain = servers.start("gunicorn", WOVE_TEST_DEBUG="1")
    reply = plain.ok_json("/atomic-default/")
    assert reply["in_atomic_block"] is False
    assert reply["seen"] is True  # committed (autocommit) before the tasks ran
    assert reply["on_request_thread"] is False
    lanes = {r["task"]: r["lane"] for r in trace_for(plain, "/atomic-default/")["records"]}
    assert lanes == {"seen": "thread", "on_request_thread": "thread"}


# --- Server-Timing -------------------------------------------------------------------------


def parse_server_timing(value: str) -> list[tuple[str, dict[str, str]]]:
    """``name;param=value;param="quoted, \\"string\\""`` entries separated by commas."""
    entries: list[tuple[str, dict[str, str]]] = []
    at = 0

    def skip_space() -> None:
        nonlocal at
        while at < len(value) and value[at] in " \t":
            at += 1

    def token() -> str:
        nonlocal at
        start = at
        while at < len(value) and value[at] not in ',;=" \t':
            at += 1
        assert at > start, f"expected a token at {at} in {value!r}"
        return value[start:at]

    def quoted() -> str:
        nonlocal at
        at += 1  # the opening quote
        text: list[str] = []
        while True:
            assert at < len(value), f"unterminated quoted-string in {value!r}"
            char = value[at]
            at += 1
            if char == '"':
                return "".join(text)
            if char == "\\":
                char = value[at]
                at += 1
            text.append(char)

    while True:
        skip_space()
        name = token()
        params: dict[str, str] = {}
        skip_space()
        while at < len(value) and value[at] == ";":
            at += 1
            skip_space()
            key = token()
            skip_space()
            params[key] = ""
            if at < len(value) and value[at] == "=":
                at += 1
                skip_space()
                params[key] = quoted() if value[at : at + 1] == '"' else token()
                skip_space()
        entries.append((name, params))
        if at == len(value):
            return entries
        assert value[at] == ",", f"expected ',' at {at} in {value!r}"
        at += 1


def test_the_parser_reads_quoted_descriptions() -> None:
    header = 'app;dur=1, wove;dur=2.5;desc="a, \\"b\\"" ,wove.x;desc=plain;dur=0'
    assert parse_server_timing(header) == [
        ("app", {"dur": "1"}),
        ("wove", {"dur": "2.5", "desc": 'a, "b"'}),
        ("wove.x", {"desc": "plain", "dur": "0"}),
    ]


@pytest.mark.parametrize("kind", ["gunicorn", "uvicorn"])
def test_server_timing_from_a_real_response(servers: Servers, kind: str) -> None:
    server = servers.start(kind)
    reply = server.get(MANY[kind])
    assert reply.status == 200
    headers = reply.headers.get_all("Server-Timing")
    assert headers is not None
    assert len(headers) == 1, headers
    entries = parse_server_timing(headers[0])
    (first, summary), *tasks = entries
    assert first == "wove"
    assert summary["desc"] == "4 tasks, 1 weave"
    assert {name for name, _ in tasks} == {f"wove.{task}" for task in TASKS}
    assert all(params["desc"] == name.removeprefix("wove.") for name, params in tasks)
    weave_ms = float(summary["dur"])
    for _, params in tasks:
        assert 0 <= float(params["dur"]) <= weave_ms + 0.1  # a task runs within its weave


# --- the trace pages -----------------------------------------------------------------------


def test_the_trace_pages_are_for_staff_only(servers: Servers) -> None:
    server = servers.start("gunicorn")  # DEBUG off
    url = servers.url(server)
    create_user(url, "staff", "staff-password", staff=True)
    create_user(url, "visitor", "visitor-password", staff=False)
    assert server.get("/parallel/").status == 200

    for path in ("/wove/", "/wove/traces.json"):
        assert server.get(path).status == 404, path  # anonymous
    log_in(server, "visitor", "visitor-password")
    assert server.get("/wove/").status == 404

    server.cookies.clear()
    log_in(server, "staff", "staff-password")
    page = server.get("/wove/")
    assert page.status == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert b"/parallel/" in page.body
    traces = server.ok_json("/wove/traces.json")["traces"]
    [trace] = [t for t in traces if t["path"] == "/parallel/"]
    assert {r["task"] for r in trace["records"]} == {"authors", "books", "totals"}
    assert server.ok_json(f"/wove/{trace['id']}.json")["id"] == trace["id"]
    assert server.get(f"/wove/{trace['id']}/").status == 200


# --- detach --------------------------------------------------------------------------------


def no_zombies_under(server: Server) -> None:
    for worker in server.worker_pids():
        zombies = [pid for pid in children(worker) if state(pid) == "Z"]
        assert not zombies, f"zombie children of worker {worker}: {zombies}"


@pytest.mark.parametrize("mode", ["background", "fork"])
@pytest.mark.parametrize("kind", ["gunicorn", "uvicorn"])
def test_detached_work_starts_after_the_response(
    servers: Servers, tmp_path: Path, kind: str, mode: str
) -> None:
    server = servers.start(kind)
    [worker] = server.worker_pids()
    marker = tmp_path / "marker"
    reply = server.get(f"/detach/?marker={marker}&delay=1.0&mode={mode}")
    assert (reply.status, reply.body) == (200, b"sent")
    assert not marker.exists(), "the detached work finished before the response arrived"
    assert eventually(marker.exists, bool, 30), "the detached work never ran"
    pid = int(eventually(marker.read_text, bool, 5))
    if mode == "background":
        assert pid == worker
    else:
        assert pid != worker
        assert wait_until_gone(pid, 30)
    no_zombies_under(server)

    # The worker listened for the child's trace report; a graceful stop leaves no trace.
    assert server.tmpdir is not None
    reports = list(server.tmpdir.glob("wove-reports-*"))
    assert len(reports) == (1 if mode == "fork" else 0)
    server.stop()
    if kind == "gunicorn":  # uvicorn dies of the SIGTERM it re-raises: no exit handlers
        assert server.process.returncode == 0, server.log()
        assert list(server.tmpdir.iterdir()) == []


@pytest.mark.parametrize(
    ("path", "settings"),
    [
        pytest.param("/detach-query/", {"WOVE_TEST_CONN_MAX_AGE": "600"}, id="detach-persistent"),
        pytest.param("/detach-query/", {"WOVE_TEST_DB_POOL": "1"}, id="detach-pool"),
        pytest.param(
            "/fork-on-request-thread/", {"WOVE_TEST_CONN_MAX_AGE": "600"}, id="request-thread"
        ),
    ],
)
def test_a_forked_child_queries_and_leaves_the_workers_connection_working(
    servers: Servers, tmp_path: Path, path: str, settings: dict[str, str]
) -> None:
    """One worker thread whose connection (persistent, or from Django's pool) the forked
    child inherits: the child queries on a connection of its own, and after it exits the
    worker's connection still answers."""
    server = servers.start("gunicorn", threads=1, **settings)
    before = server.ok_json("/db-pid/")
    marker = tmp_path / "marker.json"
    started = server.ok_json(f"{path}?marker={marker}&delay=0.2")
    assert started["pid"] == before["pid"]
    pooled = "WOVE_TEST_DB_POOL" in settings  # the pool may lend another of its connections
    assert pooled or started["backend"] == before["backend"]

    assert eventually(marker.exists, bool, 30), "the detached query never ran"
    child = json.loads(marker.read_text())
    assert child["pid"] != before["pid"]
    assert child["backend"] != before["backend"]  # the child opened its own connection
    assert child["authors"] == 0
    assert wait_until_gone(child["pid"], 30)

    # The worker's connection survived the child's exit: its backend is still there and
    # answers (the same one, unless the pool hands out another of its connections).
    assert before["backend"] in servers.backend_pids(server)
    after = server.get("/db-pid/")
    assert after.status == 200, after.body[:2000]
    assert pooled or after.json() == before
    assert server.ok_json("/parallel/") == {"authors": 0, "books": 0}
    no_zombies_under(server)


def test_forked_detaches_go_through_the_fork_server_the_wsgi_module_started(
    servers: Servers, tmp_path: Path
) -> None:
    """wove.start_fork_server() in wsgi.py, before the worker's first request: the forked
    child comes from the server (a child of the worker), queries on a connection of its
    own, and its trace comes back to the worker; the server ends with the worker."""
    server = servers.start("gunicorn", WOVE_TEST_FORK_SERVER="1")
    [worker] = server.worker_pids()
    fork_server = server.ok_json("/fork-server/")["pid"]
    assert fork_server in children(worker)
    marker = tmp_path / "marker.json"
    server.ok_json(f"/detach-query/?marker={marker}&mode=fork")
    assert eventually(marker.exists, bool, 30), "the detached query never ran"
    child = json.loads(marker.read_text())
    assert child["pid"] not in (worker, fork_server)
    assert child["authors"] == 0
    assert wait_until_gone(child["pid"], 30)
    detached = eventually(lambda: server.ok_json("/fork-server/")["detached"], bool, 30)
    assert detached == [
        {
            "path": "_query_into_marker after GET /detach-query/",
            "error": None,
            "tasks": [["_query_into_marker", "ok"]],
        }
    ]
    no_zombies_under(server)
    server.stop()
    assert wait_until_gone(fork_server, 30), "the fork server outlived its worker"
