"""Sync ORM tasks past their ``timeout``: the query is cancelled on the database server,
so the abandoned thread and its connection come back at once, and a call abandoned
before it got a connection never runs its query.

In-process against a real PostgreSQL (the session's server, on an alias added for the
test) and a SQLite file; then a real gunicorn under sustained timeouts, whose threads
(``/proc/<pid>/task``) and PostgreSQL connections (``pg_stat_activity``) must stay within
``processes x (server threads + MAX_THREADS)``.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from django.db import OperationalError, connections
from pgserver import PgServer
from servers import Reply, Server, Servers
from wove_testproject.shop.models import Author

from wove import TaskTimeout, weave
from wove.contrib.django.cancel import QueryAfterTimeout

pytestmark = pytest.mark.slow

_aliases = itertools.count(1)

# How soon an abandoned call's thread must be back: the cancel is one round trip to a
# local server, far below the 5 s the uncancelled query would take.
BACK_WITHIN = 2.0


def eventually(probe: Callable[[], Any], accept: Callable[[Any], bool], seconds: float) -> Any:
    """Call ``probe`` until ``accept`` takes its value or ``seconds`` pass; the last value."""
    deadline = time.monotonic() + seconds
    while True:
        value = probe()
        if accept(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


class Database:
    """A Django alias added for one test (unique, so no pool thread reuses a stale
    wrapper of an earlier test's alias), removed with its connections afterwards."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.alias = f"budget_{next(_aliases)}"
        configured = connections.configure_settings({"default": {}, self.alias: settings})
        connections.settings[self.alias] = configured[self.alias]

    @property
    def connection(self) -> Any:
        return connections[self.alias]

    def remove(self) -> None:
        try:
            self.connection.close()
            if self.connection.vendor == "postgresql":
                self.connection.close_pool()
        finally:
            del connections[self.alias]
            del connections.settings[self.alias]


@pytest.fixture
def database(django_db_blocker: Any) -> Iterator[Callable[[dict[str, Any]], Database]]:
    """Add Django aliases (database access allowed on every thread while the test runs)."""
    made: list[Database] = []

    def make(settings: dict[str, Any]) -> Database:
        made.append(Database(settings))
        return made[-1]

    with django_db_blocker.unblock():
        try:
            yield make
        finally:
            for added in made:
                added.remove()


def postgres_settings(server: PgServer, name: str, **options: Any) -> dict[str, Any]:
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "USER": server.role,
        "HOST": "127.0.0.1",
        "PORT": str(server.port),
        "OPTIONS": options,
    }


class Activity:
    """PostgreSQL's view of one database, from a connection of the test's own."""

    def __init__(self, server: PgServer, name: str) -> None:
        self.name = name
        self.probe = server.connect(name)

    def close(self) -> None:
        self.probe.close()

    def backends(self) -> set[int]:
        rows = self.probe.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s "
            "AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
            (self.name,),
        ).fetchall()
        return {int(row[0]) for row in rows}

    def running(self, prefix: str) -> int:
        """Active queries starting with ``prefix`` (the probe's own excluded)."""
        row = self.probe.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND state = 'active' "
            "AND query LIKE %s AND pid <> pg_backend_pid()",
            (self.name, prefix.replace("%", r"\%") + "%"),
        ).fetchone()
        return int(row[0])

    def authors(self) -> int:
        row = self.probe.execute("SELECT count(*) FROM shop_author").fetchone()
        return int(row[0])


@pytest.fixture
def activity(postgres: PgServer, fresh_database: Callable[[], str]) -> Iterator[Activity]:
    watched = Activity(postgres, fresh_database())
    try:
        yield watched
    finally:
        watched.close()


class Outcome:
    """What an abandoned task call did, told by the call itself as it returns."""

    def __init__(self) -> None:
        self.returned = threading.Event()
        self.error: BaseException | None = None
        self.returned_at = 0.0
        self.facts: dict[str, Any] = {}

    def run(self, body: Callable[[], Any]) -> Any:
        try:
            return body()
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            self.returned_at = time.monotonic()
            self.returned.set()


def timed_out_task(timeout: float, outcome: Outcome, body: Callable[[], Any]) -> float:
    """Run ``body`` as the one task of a weave with ``timeout``; the block must raise
    TaskTimeout. Returns when the block started."""
    started = time.monotonic()
    with pytest.raises(TaskTimeout), weave() as w:

        @w.do(timeout=timeout)
        def slow() -> Any:
            return outcome.run(body)

    raised_after = time.monotonic() - started
    assert raised_after < timeout + 0.5, f"TaskTimeout after {raised_after:.3f} s"
    return started


# --- in-process: PostgreSQL --------------------------------------------------------------

SLEEP_5 = "SELECT 1 AS id, pg_sleep(5)"


def test_a_timed_out_query_is_cancelled_on_postgresql(
    postgres: PgServer, activity: Activity, database: Callable[..., Database]
) -> None:
    db = database(postgres_settings(postgres, activity.name))
    baseline = activity.backends()
    outcome = Outcome()

    def body() -> int:
        outcome.facts["connection"] = connections[db.alias]
        return len(list(Author.objects.using(db.alias).raw(SLEEP_5)))

    started = timed_out_task(0.2, outcome, body)
    assert outcome.returned.wait(BACK_WITHIN), "the abandoned call is still in its query"
    back_after = outcome.returned_at - started
    assert isinstance(outcome.error, OperationalError)
    assert "canceling statement due to user request" in str(outcome.error)
    assert back_after < BACK_WITHIN
    # The server's view: the query is gone, and so is the call's connection (closed by
    # the hygiene once the call returned).
    assert eventually(lambda: activity.running(SLEEP_5), lambda n: n == 0, 2.0) == 0
    assert eventually(activity.backends, lambda pids: pids == baseline, 2.0) == baseline
    assert (
        eventually(lambda: outcome.facts["connection"].connection, lambda c: c is None, 2.0) is None
    )


def test_a_call_abandoned_while_waiting_for_a_pooled_connection_never_runs_its_query(
    postgres: PgServer, activity: Activity, database: Callable[..., Database]
) -> None:
    pool_options = {"min_size": 2, "max_size": 2, "timeout": 10}
    db = database(postgres_settings(postgres, activity.name, pool=pool_options))
    pool = db.connection.pool
    pool.open(wait=True, timeout=10)
    held = [pool.getconn(), pool.getconn()]  # every connection of the pool is out
    outcome = Outcome()
    try:

        def body() -> None:
            Author.objects.using(db.alias).create(name="written after its timeout")

        timed_out_task(0.2, outcome, body)
        assert not outcome.returned.is_set()  # still waiting for the pool
    finally:
        for connection in held:
            pool.putconn(connection)
    assert outcome.returned.wait(BACK_WITHIN), "the abandoned call never got a connection"
    assert isinstance(outcome.error, QueryAfterTimeout)
    assert isinstance(outcome.error, OperationalError)  # what ORM callers already catch
    assert activity.authors() == 0  # an INSERT sent before the call returned is committed
    assert activity.running("INSERT") == 0
    # The refused call's connection went back to the pool, whole: both are there.
    assert eventually(lambda: pool.get_stats()["pool_available"], lambda n: n == 2, 2.0) == 2


def test_a_cancelled_pooled_connection_is_discarded_not_reused(
    postgres: PgServer, activity: Activity, database: Callable[..., Database]
) -> None:
    pool_options = {"min_size": 1, "max_size": 2, "timeout": 10}
    db = database(postgres_settings(postgres, activity.name, pool=pool_options))
    outcome = Outcome()

    def body() -> int:
        with connections[db.alias].cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            outcome.facts["backend"] = cursor.fetchone()[0]
        return len(list(Author.objects.using(db.alias).raw(SLEEP_5)))

    started = timed_out_task(0.2, outcome, body)
    assert outcome.returned.wait(BACK_WITHIN)
    assert outcome.returned_at - started < BACK_WITHIN
    assert "canceling statement" in str(outcome.error)
    cancelled_backend = outcome.facts["backend"]
    assert eventually(
        activity.backends, lambda pids: cancelled_backend not in pids, 2.0
    ).isdisjoint({cancelled_backend}), "the cancelled connection went back to the pool"
    # The pool replaced it and still serves.
    with weave() as w:

        @w.do(timeout=5)
        def count() -> int:
            return Author.objects.using(db.alias).count()

    assert w.result["count"] == 0


# --- in-process: SQLite ------------------------------------------------------------------


def test_a_timed_out_query_is_interrupted_on_sqlite(
    tmp_path: Path, database: Callable[..., Database]
) -> None:
    db = database({"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp_path / "db.sqlite3")})
    outcome = Outcome()
    naps = itertools.count()

    def nap(value: int) -> int:
        next(naps)
        time.sleep(0.01)
        return value

    def body() -> Any:
        connection = connections[db.alias]
        outcome.facts["connection"] = connection
        connection.ensure_connection()
        connection.connection.create_function("nap", 1, nap)
        with connection.cursor() as cursor:
            # 1,000 rows of 10 ms each: 10 s unless interrupted.
            cursor.execute(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000) "
                "SELECT max(nap(i)) FROM n"
            )
            return cursor.fetchone()

    started = timed_out_task(0.2, outcome, body)
    assert outcome.returned.wait(BACK_WITHIN), "the abandoned call is still in its query"
    assert outcome.returned_at - started < BACK_WITHIN
    assert isinstance(outcome.error, OperationalError)
    assert "interrupted" in str(outcome.error)
    assert next(naps) < 100  # the query stopped within a few rows of the timeout
    assert (
        eventually(lambda: outcome.facts["connection"].connection, lambda c: c is None, 2.0) is None
    )


# --- a real gunicorn under sustained timeouts -----------------------------------------------

WORKERS, SERVER_THREADS, MAX_THREADS = 2, 4, 8
# Threads of a worker besides the server's and Wove's pool: the main thread, Wove's
# timer thread and the Django adapter's cancel thread.
SERVICE_THREADS = 3
SLOW, NORMAL = "/slow-queries-timeout/", "/many-queries/"


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


class Sampler:
    """Samples, while the load runs, each worker's threads, the connections to the
    server's database, and the age of the oldest slow query still running."""

    def __init__(self, servers: Servers, server: Server, workers: list[int]) -> None:
        self.servers, self.server, self.workers = servers, server, workers
        self.peak_threads = dict.fromkeys(workers, 0)
        self.peak_backends = 0
        self.oldest_query = 0.0
        self.samples = 0
        self._running = True
        self._thread = threading.Thread(target=self._sample, name="budget-sampler")

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._running = False
        self._thread.join(30)
        assert not self._thread.is_alive()

    def _sample(self) -> None:
        name = self.servers.database[self.server.port]
        with self.servers.postgres.connect() as probe:
            while self._running:
                for pid in self.workers:
                    self.peak_threads[pid] = max(self.peak_threads[pid], threads_of(pid))
                self.peak_backends = max(
                    self.peak_backends, self.servers.backends(self.server, probe)
                )
                row = probe.execute(
                    "SELECT coalesce(max(extract(epoch FROM clock_timestamp() - query_start)), 0) "
                    "FROM pg_stat_activity WHERE datname = %s AND state = 'active' "
                    "AND query LIKE 'SELECT 1 AS id, pg_sleep%%'",
                    (name,),
                ).fetchone()
                self.oldest_query = max(self.oldest_query, float(row[0]))
                self.samples += 1
                time.sleep(0.01)


def load(server: Server, path: str, clients: int, seconds: float) -> list[tuple[Reply, float]]:
    """``clients`` threads requesting ``path`` back to back for ``seconds``."""
    deadline = time.monotonic() + seconds

    def client(_: int) -> list[tuple[Reply, float]]:
        replies = []
        while time.monotonic() < deadline:
            sent = time.monotonic()
            reply = server.get(path, timeout=30)
            replies.append((reply, reply.received_at - sent))
        return replies

    with ThreadPoolExecutor(clients) as pool:
        return [reply for replies in pool.map(client, range(clients)) for reply in replies]


def test_threads_and_connections_stay_within_the_budget_under_sustained_timeouts(
    servers: Servers,
) -> None:
    server = servers.start(
        "gunicorn",
        threads=SERVER_THREADS,
        workers=WORKERS,
        WOVE_TEST_MAX_THREADS=str(MAX_THREADS),
    )
    workers = server.worker_pids()
    assert len(workers) == WORKERS
    budget_threads = SERVER_THREADS + MAX_THREADS + SERVICE_THREADS
    budget_backends = WORKERS * (SERVER_THREADS + MAX_THREADS)

    # Warm up until every worker runs all the threads it will keep: the server's, a full
    # Wove pool (idle pool threads stay for a minute) and the service threads. That is
    # the budget, and the count the workers must come back to. Which worker takes a
    # request is up to the kernel, so it can take a few rounds.
    baseline_threads: dict[int, int] = {}
    for _ in range(30):
        paths = [f"{SLOW}?sleep=1"] * (2 * WORKERS)  # start each worker's cancel thread
        paths += [f"/fill-pool/?count={MAX_THREADS}"] * (2 * WORKERS * SERVER_THREADS)
        with ThreadPoolExecutor(len(paths)) as pool:
            replies = list(pool.map(lambda path: server.get(path, timeout=30), paths))
        assert {r.status for r in replies} <= {200, 504}
        baseline_threads = {pid: threads_of(pid) for pid in workers}
        if set(baseline_threads.values()) == {budget_threads}:
            break
    reports = [server.ok_json("/thread-report/") for _ in range(4)]
    assert set(baseline_threads.values()) == {budget_threads}, (baseline_threads, reports)
    baseline_backends = eventually(lambda: servers.backends(server), lambda n: n == 0, 10)
    assert baseline_backends == 0

    with Sampler(servers, server, workers) as sampled, ThreadPoolExecutor(2) as both:
        slow_future = both.submit(load, server, SLOW, 6, 4.0)
        normal_future = both.submit(load, server, NORMAL, 4, 4.0)
        slow, normal = slow_future.result(), normal_future.result()

    report = (
        f"threads per worker: baseline {baseline_threads}, peak {sampled.peak_threads}, "
        f"budget {budget_threads}; connections: peak {sampled.peak_backends}, budget "
        f"{budget_backends}; oldest slow query seen {sampled.oldest_query:.3f} s; "
        f"{len(slow)} slow requests (max {max(t for _, t in slow):.3f} s), {len(normal)} "
        f"normal ones (max {max(t for _, t in normal):.3f} s); {sampled.samples} samples"
    )
    assert sampled.samples > 50, report
    assert slow, report
    assert [r.status for r, _ in slow] == [504] * len(slow), report
    assert [r.status for r, _ in normal] == [200] * len(normal), report
    assert max(sampled.peak_threads.values()) <= budget_threads, report
    assert sampled.peak_backends <= budget_backends, report
    # Each slow query (3 s if left alone) was cancelled soon after its 0.3 s timeout.
    assert sampled.oldest_query < 1.0, report

    after_backends = eventually(lambda: servers.backends(server), lambda n: n == 0, 10)
    after_threads = eventually(
        lambda: {pid: threads_of(pid) for pid in workers},
        lambda now: now == baseline_threads,
        10,
    )
    assert after_backends == baseline_backends, report
    assert after_threads == baseline_threads, report
    # And no pool thread is still in a task: every abandoned call has returned.
    busy: dict[int, int] = {}
    deadline = time.monotonic() + 10
    while (len(busy) < WORKERS or any(busy.values())) and time.monotonic() < deadline:
        reply = server.ok_json("/thread-report/")
        busy[reply["pid"]] = reply["busy_pool_threads"]
    assert busy == dict.fromkeys(workers, 0), report
