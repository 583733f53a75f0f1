"""The Django workloads: Wove's adapter on a real request path, against the issue's targets.

- ``django-pg``: the author page of the issue, five independent 50 ms queries
  (``pg_sleep``) under PostgreSQL, through Django's WSGI handler: the Wove version's
  median latency / the slowest single query run alone (target <= 1.3; sequential is
  about 5). Twice: with Django's connection pool (``django-pg``) and without one
  (``django-pg-nopool``, ``CONN_MAX_AGE = 0``: each task opens its own connection).
- ``django-async-pg``: the same page as an async view, five async tasks each running
  one async-ORM query, through Django's ASGI handler in-process (target <= 1.3; with
  one thread for the request's async ORM, about 5): with Django's pool and without.
- ``django-mw``: a view with a 10-task weave (trivial tasks) through a handler with
  ``WoveMiddleware`` / the same handler without it (target <= 1.05), in-process.
- ``django-mw-query``: the same with ten tasks each running one fast query.
- ``django-server-pg``, ``django-server-mw``: the same two questions through a real
  gunicorn (gthread) server on 127.0.0.1, hit by a keep-alive client;
  ``django-server-async-pg``: the async page through a real uvicorn.

Django is configured only in the processes these start (``bench/django/child.py`` and
the servers, with ``DJANGO_SETTINGS_MODULE=bench.django.settings``), never in the
benchmark's own process. PostgreSQL is a throwaway cluster started for each workload
that needs it by ``tests/django/pgserver.py`` in a temporary directory, and stopped (by
its PID) when the workload ends; without PostgreSQL's server programs these workloads
are reported as skipped.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from ..harness import MIN_RUNS, Row, Skipped, Workload
from .servers import Client, Gunicorn, Uvicorn
from .timing import interleaved, per_call

REPO = Path(__file__).resolve().parents[2]
PGSERVER = REPO / "tests" / "django" / "pgserver.py"
MARKER = "BENCH-ROWS "  # child.py's line of results
QUERY_SECONDS = 0.05  # views.QUERY_SECONDS (views imports Django, so not imported here)
PARTS = ("author", "books", "ratings", "related", "stock")
SERVER_REQUESTS = 25  # requests per timed batch against a real server, a side
SERVER_BATCHES = 100  # at least, interleaved (see timing.interleaved)


def _pgserver() -> ModuleType:
    """``tests/django/pgserver.py``, loaded by path (the tests' directory is no package)."""
    if "_wove_bench_pgserver" in sys.modules:
        return sys.modules["_wove_bench_pgserver"]
    spec = importlib.util.spec_from_file_location("_wove_bench_pgserver", PGSERVER)
    if spec is None or spec.loader is None or not PGSERVER.exists():
        raise Skipped(f"no PostgreSQL launcher at {PGSERVER}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def _postgres() -> Iterator[Any]:
    """A throwaway PostgreSQL server for one workload; ``Skipped`` without one."""
    pgserver = _pgserver()
    try:
        import psycopg  # noqa: F401  (Django's PostgreSQL backend needs it too)
    except ImportError as exc:
        raise Skipped(f"psycopg is not installed ({exc})") from None
    try:
        server = pgserver.start_postgres(tempfile.gettempdir())
    except pgserver.PostgresUnavailable as exc:
        raise Skipped(f"PostgreSQL is not installed: {exc}") from None
    try:
        yield server
    finally:
        server.stop()


def _child(what: str, runs: int, **env: str) -> list[Row]:
    """Rows measured by ``python -m bench.django.child WHAT RUNS`` in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.django.child", what, str(runs)],
        cwd=REPO,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "bench.django.settings", **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARKER)]
    if done.returncode or not lines:
        raise RuntimeError(
            f"python -m bench.django.child {what} failed ({done.returncode}):\n"
            f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return [Row(**row) for row in json.loads(lines[-1][len(MARKER) :])]


# --- in-process: Django's WSGI handler called directly ----------------------------------


def _measure_mw(runs: int) -> list[Row]:
    return _child("overhead", runs)


def _measure_mw_query(runs: int) -> list[Row]:
    with _postgres() as server:
        return _child("overhead-query", runs, BENCH_DATABASE_URL=server.url)


def _measure_pg(runs: int) -> list[Row]:
    with _postgres() as server:
        return [
            *_child("pg", runs, BENCH_DATABASE_URL=server.url, BENCH_DB_POOL="1"),
            *_child("pg", runs, BENCH_DATABASE_URL=server.url, BENCH_DB_POOL="0"),
        ]


def _measure_async_pg(runs: int) -> list[Row]:
    with _postgres() as server:
        return [
            *_child("async-pg", runs, BENCH_DATABASE_URL=server.url, BENCH_DB_POOL="1"),
            *_child("async-pg", runs, BENCH_DATABASE_URL=server.url, BENCH_DB_POOL="0"),
        ]


# --- a real server: gunicorn on 127.0.0.1 -----------------------------------------------


def _measure_server_mw(runs: int) -> list[Row]:
    path, expected = "/ten-tasks/", str(sum(range(10))).encode()
    servers: dict[str, Gunicorn] = {}
    try:
        # Both at once, idle in turn: each batch has the machine to itself and its server.
        servers["wove"] = Gunicorn({"BENCH_WOVE_MIDDLEWARE": "1"})
        servers["plain"] = Gunicorn({"BENCH_WOVE_MIDDLEWARE": "0"})
        clients = {side: Client(server.port) for side, server in servers.items()}
        for client in clients.values():
            if client.get(path) != expected:
                raise AssertionError(f"{path}: wrong body")
            per_call(functools.partial(client.get, path), 200)  # warm-up
        batches = max(runs, SERVER_BATCHES)
        wove, plain = interleaved(
            lambda: clients["wove"].get(path),
            lambda: clients["plain"].get(path),
            batches=batches,
            count=SERVER_REQUESTS,
        )
        for client in clients.values():
            client.close()
    finally:
        for server in servers.values():
            server.stop()
    return [
        Row(
            name="django-server-mw",
            wove=wove,
            baseline=plain,
            unit="s",
            target=1.05,
            runs=batches,
            note="10 trivial tasks; with / without WoveMiddleware, gunicorn gthread, "
            f"keep-alive client on 127.0.0.1, per request: +{(wove - plain) * 1e6:.0f} µs",
        )
    ]


def _raw_query(connection: Any) -> float:
    start = time.perf_counter()
    connection.execute("SELECT %s::text, pg_sleep(%s)", ["author", QUERY_SECONDS]).fetchone()
    return time.perf_counter() - start


def _measure_server_pg(runs: int) -> list[Row]:
    with _postgres() as pg:
        server = Gunicorn({"BENCH_DATABASE_URL": pg.url, "BENCH_DB_POOL": "1"})
        try:
            client = Client(server.port)
            expected = {part: part for part in PARTS}
            for page in ("wove", "sequential"):
                if json.loads(client.get(f"/author/{page}/")) != expected:
                    raise AssertionError(f"/author/{page}/: wrong body")
            times: dict[str, list[float]] = {"single": [], "wove": [], "sequential": []}
            with pg.connect() as connection:
                _raw_query(connection)
                for _ in range(max(runs, MIN_RUNS) * 3):
                    times["single"].append(_raw_query(connection))
                    for page in ("wove", "sequential"):
                        get = functools.partial(client.get, f"/author/{page}/")
                        times[page].append(per_call(get, 1))
            client.close()
        finally:
            server.stop()
    median = {key: statistics.median(values) for key, values in times.items()}
    single = median["single"]
    return [
        Row(
            name="django-server-pg",
            wove=median["wove"],
            baseline=single,
            unit="s",
            target=1.3,
            runs=len(times["wove"]),
            note=f"Django's connection pool; 5 x pg_sleep({QUERY_SECONDS}), gunicorn gthread, "
            f"client on 127.0.0.1; sequential {median['sequential'] * 1e3:.1f} ms = "
            f"{median['sequential'] / single:.2f} x the single query (psycopg, no Django)",
        )
    ]


def _measure_server_async_pg(runs: int) -> list[Row]:
    with _postgres() as pg:
        env = {"BENCH_DATABASE_URL": pg.url, "BENCH_DB_POOL": "1"}
        servers = {
            "wove": Uvicorn(env),
            "shared": Uvicorn({**env, "BENCH_ASYNC_TASK_THREADS": "0"}),
        }
        try:
            clients = {side: Client(server.port) for side, server in servers.items()}
            expected = {part: part for part in PARTS}
            for client in clients.values():
                for page in ("async", "async-sequential"):
                    if json.loads(client.get(f"/author/{page}/")) != expected:
                        raise AssertionError(f"/author/{page}/: wrong body")
            paths = {
                "wove": (clients["wove"], "/author/async/"),
                "sequential": (clients["wove"], "/author/async-sequential/"),
                "shared": (clients["shared"], "/author/async/"),  # before: one thread
            }
            times: dict[str, list[float]] = {"single": [], **{key: [] for key in paths}}
            with pg.connect() as connection:
                _raw_query(connection)
                for _ in range(max(runs, MIN_RUNS) * 3):
                    times["single"].append(_raw_query(connection))
                    for key, (client, path) in paths.items():
                        times[key].append(per_call(functools.partial(client.get, path), 1))
            for client in clients.values():
                client.close()
        finally:
            for server in servers.values():
                server.stop()
    median = {key: statistics.median(values) for key, values in times.items()}
    single = median["single"]
    return [
        Row(
            name="django-server-async-pg",
            wove=median["wove"],
            baseline=single,
            unit="s",
            target=1.3,
            runs=len(times["wove"]),
            note=f"Django's connection pool; 5 async tasks x async-ORM pg_sleep({QUERY_SECONDS}), "
            f"uvicorn, client on 127.0.0.1; before (ASYNC_TASK_THREADS off) "
            f"{median['shared'] * 1e3:.1f} ms = {median['shared'] / single:.2f} x; sequential "
            f"awaits {median['sequential'] * 1e3:.1f} ms = {median['sequential'] / single:.2f} x "
            "the single query (psycopg, no Django)",
        )
    ]


WORKLOADS = [
    Workload(
        "django-pg",
        "Django author view, 5 independent pg_sleep(0.05) queries in a weave, median "
        "latency / the slowest single query alone (PostgreSQL; with and without a pool)",
        _measure_pg,
    ),
    Workload(
        "django-async-pg",
        "the author view as an async view, 5 async tasks each running one async-ORM "
        "pg_sleep(0.05) query, median latency / the single query (in-process ASGI)",
        _measure_async_pg,
    ),
    Workload(
        "django-mw",
        "Django view with a 10-task weave (trivial tasks), per request, with "
        "WoveMiddleware / without it (in-process WSGI handler)",
        _measure_mw,
    ),
    Workload(
        "django-mw-query",
        "the same, each of the 10 tasks running one fast query (PostgreSQL, pool)",
        _measure_mw_query,
    ),
    Workload(
        "django-server-pg",
        "the author view through gunicorn (gthread) on 127.0.0.1 / the single query",
        _measure_server_pg,
    ),
    Workload(
        "django-server-async-pg",
        "the async author view through uvicorn on 127.0.0.1 / the single query",
        _measure_server_async_pg,
    ),
    Workload(
        "django-server-mw",
        "the 10-task view through gunicorn, with WoveMiddleware / without it",
        _measure_server_mw,
    ),
]

__all__ = ["WORKLOADS"]
