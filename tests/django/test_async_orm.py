"""The async ORM of async tasks: each task's thread-sensitive calls on a thread of its
own, so independent tasks query in parallel, each with its own connection, while the
calls of one task stay in order on one thread; inside a transaction, on the
transaction's connection.

In-process first (the test project's database, overlap counters and barriers, never the
clock), then a real uvicorn against a real PostgreSQL: the five queries overlap (as
PostgreSQL itself saw them, in ``pg_stat_activity``) and the connection count comes back
after 50 requests, with and without Django's connection pool and ``CONN_MAX_AGE``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connections, transaction
from django.test import Client, override_settings
from servers import Reply, Server, Servers
from wove_testproject.shop.models import Author

import wove
from wove import weave

TASKS = ("first", "second", "third", "fourth", "fifth")


class Overlap:
    """The most calls inside ``running()`` at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = self.peak = self.calls = 0

    def enter(self) -> None:
        with self._lock:
            self.now += 1
            self.calls += 1
            self.peak = max(self.peak, self.now)

    def leave(self) -> None:
        with self._lock:
            self.now -= 1


async def _in_order_on_one_thread(barrier: threading.Barrier) -> list[tuple[int, int]]:
    """Four thread-sensitive calls, the first of which waits at ``barrier`` (only tasks
    running at the same time can pass it): each call's index and thread, in order."""
    seen: list[tuple[int, int]] = []

    def step(index: int) -> None:
        if index == 0:
            barrier.wait()
        seen.append((index, threading.get_ident()))

    for index in range(4):
        await sync_to_async(step, thread_sensitive=True)(index)
    return seen


@pytest.mark.timeout(60)
@pytest.mark.django_db(transaction=True)
def test_each_async_task_has_a_thread_of_its_own_and_its_calls_stay_on_it_in_order() -> None:
    barrier = threading.Barrier(3, timeout=20)  # broken if the calls ran one at a time

    async def view() -> wove.WoveResult:
        async with weave() as w:

            @w.do
            async def a() -> list[tuple[int, int]]:
                return await _in_order_on_one_thread(barrier)

            @w.do
            async def b() -> list[tuple[int, int]]:
                return await _in_order_on_one_thread(barrier)

            @w.do
            async def c() -> list[tuple[int, int]]:
                return await _in_order_on_one_thread(barrier)

        return w.result

    result = asyncio.run(view())
    threads = []
    for name in ("a", "b", "c"):
        seen = result[name]
        assert [index for index, _ in seen] == [0, 1, 2, 3]
        assert len({ident for _, ident in seen}) == 1, f"task {name} changed threads: {seen}"
        threads.append(seen[0][1])
    assert len(set(threads)) == 3
    assert threading.get_ident() not in threads


@pytest.mark.timeout(60)
@pytest.mark.django_db(transaction=True)
def test_the_threads_count_against_max_threads() -> None:
    overlap = Overlap()
    before = wove.settings().max_threads
    wove.configure(max_threads=2)
    try:

        async def view() -> wove.WoveResult:
            async with weave() as w:

                @w.do(range(6))
                async def items(item: int) -> int:
                    def work() -> int:
                        overlap.enter()
                        try:
                            time.sleep(0.05)  # (long enough for the items to meet)
                        finally:
                            overlap.leave()
                        return item

                    return await sync_to_async(work, thread_sensitive=True)()

            return w.result

        result = asyncio.run(view())
    finally:
        wove.configure(max_threads=before)
    assert result["items"] == list(range(6))
    assert overlap.calls == 6
    assert overlap.peak == 2  # in parallel, and never above the bound


@pytest.mark.timeout(60)
@pytest.mark.django_db(transaction=True)
def test_one_tasks_orm_calls_share_its_connection_which_is_closed_after_it() -> None:
    async def view() -> wove.WoveResult:
        async with weave() as w:

            @w.do
            async def queries() -> tuple[int, Any, bool]:
                await Author.objects.acreate(name="by the task")
                count = await Author.objects.acount()

                def connection() -> tuple[Any, bool]:
                    wrapper = connections["default"]
                    return wrapper, wrapper.connection is not None

                return (count, *(await sync_to_async(connection)()))

        return w.result

    count, wrapper, open_during = asyncio.run(view())["queries"]
    assert count == 1
    assert open_during  # the task's connection, still open between its calls
    assert wrapper.connection is None  # closed by the hygiene when the task ended


@pytest.mark.timeout(60)
@pytest.mark.django_db(transaction=True)
def test_an_async_tasks_queries_are_counted_in_its_trace_record() -> None:
    records: list[wove.TraceRecord] = []

    async def view() -> None:
        async with weave() as w:

            @w.do
            async def two_queries() -> int:
                await Author.objects.acreate(name="counted")
                return await Author.objects.acount()

            @w.do
            async def none() -> int:
                return 0

        assert w.result["two_queries"] == 1

    with wove.collecting(records.append):
        asyncio.run(view())
    extra = {r.task: r.extra for r in records}
    assert extra["two_queries"]["queries"] == 2
    assert len(extra["two_queries"]["sql"]) == 2
    assert "queries" not in (extra["none"] or {})


@pytest.mark.timeout(60)
@pytest.mark.django_db(transaction=True)
def test_inside_atomic_async_tasks_use_the_transactions_connection(client: Client) -> None:
    reply = client.get("/async-orm-in-atomic/")
    assert reply.json() == {"seen": True, "counted": True, "committed": False}


@pytest.mark.timeout(60)
@pytest.mark.django_db(transaction=True)
def test_with_atomic_parallel_async_tasks_query_on_their_own_connection() -> None:
    with override_settings(WOVE={"ATOMIC": "parallel"}), transaction.atomic():
        Author.objects.create(name="uncommitted")
        with weave() as w:

            @w.do
            async def seen() -> bool:
                return await Author.objects.filter(name="uncommitted").aexists()

        transaction.set_rollback(True)
    assert w.result["seen"] is False  # another connection: the row is not committed


@pytest.mark.timeout(60)
@pytest.mark.django_db(transaction=True)
def test_where_a_sync_thread_waits_for_the_loop_the_calls_go_to_that_thread(
    client: Client,
) -> None:
    """The sync test client runs an async view through async_to_sync, as WSGI does: asgiref
    sends thread-sensitive calls to the waiting thread (in a test, its transaction)."""
    reply = client.get("/async-task-threads/").json()
    assert reply == {"one": threading.get_ident(), "two": threading.get_ident()}


# --- a real uvicorn and PostgreSQL ---------------------------------------------------------


def eventually(probe: Callable[[], Any], accept: Callable[[Any], bool], seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = probe()
        if accept(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def hammer(server: Server, path: str, count: int, clients: int) -> list[Reply]:
    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(lambda _: server.get(path), range(count)))


def _overlap(server: Server) -> tuple[int, int]:
    """One request of five 1 s queries: how many distinct connections ran them, and the
    most of them running at once, as PostgreSQL saw it."""
    reply = server.ok_json("/async-orm/?sleep=1.0")
    assert set(reply) == set(TASKS)
    return len({reply[t]["backend"] for t in TASKS}), max(reply[t]["seen"] for t in TASKS)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({}, id="plain"),
        pytest.param({"WOVE_TEST_CONN_MAX_AGE": "600"}, id="conn-max-age"),
    ],
)
def test_async_orm_queries_overlap_and_leave_no_connection_open_under_uvicorn(
    servers: Servers, settings: dict[str, str]
) -> None:
    server = servers.start("uvicorn", **settings)
    baseline = servers.backends(server)
    assert _overlap(server) == (5, 5)
    replies = hammer(server, "/async-orm/?sleep=0.01", count=50, clients=4)
    assert [r.status for r in replies] == [200] * 50
    if "WOVE_TEST_CONN_MAX_AGE" in settings:
        # Persistent connections stay with their threads (closed when a thread leaves
        # the pool): reused, so a second round opens none beyond the threads it needs.
        after_first = servers.backends(server)
        replies = hammer(server, "/async-orm/?sleep=0.01", count=50, clients=4)
        assert [r.status for r in replies] == [200] * 50
        threads = server.ok_json("/thread-report/")["threads"]
        pool_threads = [t for t in threads if t.startswith("wove-") and t[5:].isdigit()]
        assert servers.backends(server) <= len(pool_threads)
        assert servers.backends(server) <= max(after_first, 4 * 5)
        return
    settled = eventually(lambda: servers.backends(server), lambda n: n == baseline, 15)
    assert settled == baseline, f"{settled} connections open, {baseline} before the requests"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_async_orm_with_djangos_pool_returns_every_connection_under_uvicorn(
    servers: Servers,
) -> None:
    """The pool holds at most 4 connections: four of the five queries overlap, the fifth
    waits for a connection, and 50 requests of 4 clients never exhaust it."""
    server = servers.start("uvicorn", WOVE_TEST_DB_POOL="1")
    connections_used, most_at_once = _overlap(server)
    assert most_at_once == 4
    assert connections_used == 4
    replies = hammer(server, "/async-orm/?sleep=0.01", count=50, clients=4)
    assert [r.status for r in replies] == [200] * 50  # a PoolTimeout would be a 500
    assert servers.backends(server) <= 4  # the pool's max_size, kept open by the pool
    # Every connection went back: a request needing all four still gets them.
    assert _overlap(server) == (4, 4)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_async_orm_inside_a_transaction_under_uvicorn(servers: Servers) -> None:
    server = servers.start("uvicorn")
    baseline = servers.backends(server)
    reply = server.ok_json("/async-orm-in-atomic/")
    assert reply == {"seen": True, "counted": True, "committed": False}
    settled = eventually(lambda: servers.backends(server), lambda n: n == baseline, 15)
    assert settled == baseline


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_under_atomic_requests_async_tasks_query_in_the_requests_transaction(
    servers: Servers,
) -> None:
    server = servers.start("gunicorn", WOVE_TEST_ATOMIC_REQUESTS="1")
    baseline = servers.backends(server)
    assert server.ok_json("/atomic-async-tasks/") == {
        "in_atomic_block": True,
        "seen": True,  # the uncommitted row: the transaction's own connection
        "on_request_thread": True,
    }
    # Outside a transaction the same tasks query on threads of their own.
    plain = servers.start("gunicorn")
    assert plain.ok_json("/atomic-async-tasks/") == {
        "in_atomic_block": False,
        "seen": True,  # committed (autocommit) before the tasks ran
        "on_request_thread": False,
    }
    settled = eventually(lambda: servers.backends(server), lambda n: n == baseline, 15)
    assert settled == baseline
