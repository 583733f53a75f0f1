"""``python -m bench.django.child WHAT RUNS``: the in-process Django measurements.

Run by ``bench/django/__init__.py`` in a fresh interpreter with
``DJANGO_SETTINGS_MODULE=bench.django.settings`` (and ``BENCH_DATABASE_URL`` when a
PostgreSQL server is up), so Django is configured in this process only. Requests go
through Django's real WSGI handler, called directly the way a WSGI server calls it
(``start_response``, the body read, then ``close()``, which ends the request), with no
socket in between. The last line of output is the JSON list of result rows.

``WHAT``:

- ``overhead``: a view with a 10-task weave of trivial tasks through a handler with
  ``WoveMiddleware`` against one without it, in the same process, interleaved.
- ``overhead-query``: the same with a view whose ten tasks run one fast query each.
- ``pg``: the author page (five 50 ms ``pg_sleep`` queries) with Wove and sequentially,
  against the slowest single query run alone.
- ``async-pg``: the same page as an async view of five async tasks, one async-ORM query
  each, through Django's ASGI handler called on an event loop of this process; with the
  async tasks' threads of their own, and without them (``ASYNC_TASK_THREADS`` off).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import io
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.django.settings")
django.setup()

from django.conf import settings  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402
from django.core.handlers.wsgi import WSGIHandler  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import override_settings  # noqa: E402

from wove.contrib.django.recording import store  # noqa: E402

from ..harness import MIN_RUNS, Row  # noqa: E402
from .timing import interleaved, per_call  # noqa: E402
from .views import PARTS, QUERY_SECONDS  # noqa: E402

#: The overhead comparison: medians over (at least) this many batches a side,
#: interleaved, each of about 40 ms of requests; the difference sought is a few percent,
#: about what two identical handlers differ by over a few dozen batches on a busy machine.
OVERHEAD_BATCHES = 100
MARKER = "BENCH-ROWS "


def handler(*, wove_middleware: bool) -> WSGIHandler:
    """Django's WSGI handler, its middleware chain built with or without Wove's."""
    middleware = list(settings.BASE_MIDDLEWARE)
    if wove_middleware:
        middleware.insert(0, settings.WOVE_MIDDLEWARE)
    with override_settings(MIDDLEWARE=middleware):
        return WSGIHandler()


def get(app: WSGIHandler, path: str) -> bytes:
    """One GET through ``app``, as a WSGI server would make it; the body."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    status: list[str] = []

    def start_response(value: str, headers: Any, exc_info: Any = None) -> Callable[[bytes], None]:
        status.append(value)
        return lambda data: None

    response = app(environ, start_response)
    try:
        body = b"".join(response)
    finally:
        response.close()
    if not status or not status[0].startswith("200"):
        raise AssertionError(f"GET {path}: {status} {body[:500]!r}")
    return body


def _recorded(path: str, tasks: int) -> None:
    """Fail unless the middleware really recorded ``path`` with its ``tasks`` tasks."""
    traces = [trace for trace in store().recent() if trace.path == path]
    if not traces or len(traces[-1].records) < tasks:
        found = len(traces[-1].records) if traces else "no trace"
        raise AssertionError(f"WoveMiddleware did not record {path}: {found}")


def overhead(
    runs: int, path: str, name: str, what: str, *, requests: int, control: bool
) -> list[Row]:
    with_wove = handler(wove_middleware=True)
    without = handler(wove_middleware=False)
    expected = str(sum(range(10))).encode()
    for app in (with_wove, without):
        if get(app, path) != expected:
            raise AssertionError(f"{path}: wrong body")
        per_call(functools.partial(get, app, path), requests)  # warm-up
    store().clear()
    for _ in range(1000):  # with WOVE["TRACE_SAMPLE_RATE"] < 1, until one is sampled
        get(with_wove, path)
        if store().recent():
            break
    _recorded(path, 10)
    batches = max(runs, OVERHEAD_BATCHES)
    wove, plain = interleaved(
        lambda: get(with_wove, path),
        lambda: get(without, path),
        batches=batches,
        count=requests,
    )
    note = (
        f"{what}; with / without WoveMiddleware, in-process WSGI, per request: "
        f"+{(wove - plain) * 1e6:.0f} µs"
    )
    if control:
        # The same comparison between two identical handlers without Wove's middleware:
        # how far from 1.00 the method itself lands on this machine, now.
        twin = handler(wove_middleware=False)
        one, other = interleaved(
            lambda: get(twin, path),
            lambda: get(without, path),
            batches=batches,
            count=requests,
        )
        note += f"; control (two handlers without it) {one / other:.3f}"
        # And with Wove's middleware not recording traces (WOVE["RECORD"] = False): what
        # is left is its detach() bookkeeping.
        with override_settings(WOVE={"RECORD": False}):
            quiet, plain_too = interleaved(
                lambda: get(with_wove, path),
                lambda: get(without, path),
                batches=batches,
                count=requests,
            )
        note += f"; with RECORD off {quiet / plain_too:.3f}"
    return [
        Row(name=name, wove=wove, baseline=plain, unit="s", target=1.05, runs=batches, note=note)
    ]


def single_query() -> float:
    """Seconds of the slowest single query run alone, on this thread's connection."""
    with connection.cursor() as cursor:
        start = time.perf_counter()
        cursor.execute("SELECT %s::text, pg_sleep(%s)", ["author", QUERY_SECONDS])
        cursor.fetchone()
        return time.perf_counter() - start


def author_page(runs: int, name: str, how: str) -> list[Row]:
    app = handler(wove_middleware=True)
    plain = handler(wove_middleware=False)
    pages = {p: get(app, f"/author/{p}/") for p in ("wove", "sequential", "one-query")}
    expected = json.dumps({part: part for part in PARTS}).encode()
    if pages["wove"] != pages["sequential"] or json.loads(pages["wove"]) != json.loads(expected):
        raise AssertionError(f"author pages differ: {pages}")
    get(plain, "/author/wove/")
    single_query()
    requests = {
        "wove": (app, "/author/wove/"),
        "sequential": (app, "/author/sequential/"),
        "one-query": (app, "/author/one-query/"),
        "no-middleware": (plain, "/author/wove/"),  # the Wove view, without WoveMiddleware
    }
    times: dict[str, list[float]] = {"single": [], **{key: [] for key in requests}}
    for _ in range(max(runs, MIN_RUNS) * 3):  # cheap enough: 0.4 s a round
        times["single"].append(single_query())
        for key, (handler_, path) in requests.items():
            times[key].append(per_call(functools.partial(get, handler_, path), 1))
    connection.close()
    median = {key: statistics.median(values) for key, values in times.items()}
    single = median["single"]
    note = (
        f"{how}; 5 x pg_sleep({QUERY_SECONDS}), in-process WSGI; sequential "
        f"{median['sequential'] * 1e3:.1f} ms = {median['sequential'] / single:.2f} x, "
        f"one-query view {median['one-query'] * 1e3:.1f} ms = "
        f"{median['one-query'] / single:.2f} x the single query; the Wove view without "
        f"WoveMiddleware {median['no-middleware'] * 1e3:.1f} ms"
    )
    return [
        Row(
            name=name,
            wove=median["wove"],
            baseline=single,
            unit="s",
            target=1.3,
            runs=len(times["wove"]),
            note=note,
        )
    ]


async def aget(app: ASGIHandler, path: str) -> bytes:
    """One GET through ``app``, as an ASGI server would make it; the body."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    sent: list[dict[str, Any]] = []
    received = False
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def receive() -> dict[str, Any]:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await never  # no disconnect: Django cancels this wait when it has responded
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    status = next((m["status"] for m in sent if m["type"] == "http.response.start"), None)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    if status != 200:
        raise AssertionError(f"GET {path}: {status} {body[:500]!r}")
    return body


def async_author_page(runs: int, name: str, how: str) -> list[Row]:
    app = ASGIHandler()
    loop = asyncio.new_event_loop()
    expected = {part: part for part in PARTS}
    shared = {**settings.WOVE, "ASYNC_TASK_THREADS": False}

    def timed(path: str, expect: dict[str, str] = expected) -> float:
        start = time.perf_counter()
        body = loop.run_until_complete(aget(app, path))
        took = time.perf_counter() - start
        if json.loads(body) != expect:
            raise AssertionError(f"{path}: wrong body {body[:300]!r}")
        return took

    try:
        for path in ("/author/async/", "/author/async-sequential/"):
            timed(path)
        single_query()
        times: dict[str, list[float]] = {
            "single": [],
            "wove": [],
            "sequential": [],
            "shared": [],
            "one-query": [],
        }
        for _ in range(max(runs, MIN_RUNS) * 3):
            times["single"].append(single_query())
            times["wove"].append(timed("/author/async/"))
            times["sequential"].append(timed("/author/async-sequential/"))
            times["one-query"].append(timed("/author/async-one-query/", {"author": "author"}))
            with override_settings(WOVE=shared):
                times["shared"].append(timed("/author/async/"))
        connection.close()
    finally:
        loop.close()
    median = {key: statistics.median(values) for key, values in times.items()}
    single = median["single"]
    note = (
        f"{how}; 5 async tasks x async-ORM pg_sleep({QUERY_SECONDS}), in-process ASGI; "
        f"before (ASYNC_TASK_THREADS off: one thread for the request) "
        f"{median['shared'] * 1e3:.1f} ms = {median['shared'] / single:.2f} x; sequential "
        f"awaits {median['sequential'] * 1e3:.1f} ms = {median['sequential'] / single:.2f} x, "
        f"one-query async view {median['one-query'] * 1e3:.1f} ms = "
        f"{median['one-query'] / single:.2f} x the single query"
    )
    return [
        Row(
            name=name,
            wove=median["wove"],
            baseline=single,
            unit="s",
            target=1.3,
            runs=len(times["wove"]),
            note=note,
        )
    ]


def main(argv: list[str]) -> None:
    what, runs = argv[0], int(argv[1])
    if what == "overhead":
        rows = overhead(
            runs, "/ten-tasks/", "django-mw", "10 trivial tasks", requests=50, control=True
        )
    elif what == "overhead-query":
        rows = overhead(
            runs,
            "/ten-queries/",
            "django-mw-query",
            "10 tasks, SELECT n each",
            requests=10,
            control=False,
        )
    elif what == "pg":
        pooled = os.environ.get("BENCH_DB_POOL", "1") != "0"
        rows = author_page(
            runs,
            "django-pg" if pooled else "django-pg-nopool",
            "Django's connection pool" if pooled else "no pool, CONN_MAX_AGE=0",
        )
    elif what == "async-pg":
        pooled = os.environ.get("BENCH_DB_POOL", "1") != "0"
        rows = async_author_page(
            runs,
            "django-async-pg" if pooled else "django-async-pg-nopool",
            "Django's connection pool" if pooled else "no pool, CONN_MAX_AGE=0",
        )
    else:
        raise SystemExit(f"unknown measurement {what!r}")
    print(MARKER + json.dumps([dataclasses.asdict(row) for row in rows]))


if __name__ == "__main__":
    main(sys.argv[1:])
