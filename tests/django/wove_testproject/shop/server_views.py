"""Views for the tests against real servers (tests/django/test_real_servers.py)."""

from __future__ import annotations

import json
import os
import sys
import threading
import time

from django.contrib.auth import authenticate, login
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse

from wove import weave
from wove.contrib.django import detach

from .models import Author, Book


def ping(request: HttpRequest) -> HttpResponse:
    """Readiness probe: no database, no weave."""
    return HttpResponse("ok")


def log_in(request: HttpRequest) -> HttpResponse:
    """POST username and password: a session cookie for that user (403 if they are wrong)."""
    user = authenticate(
        request, username=request.POST.get("username"), password=request.POST.get("password")
    )
    if user is None:
        return HttpResponse("wrong credentials", status=403)
    login(request, user)
    return HttpResponse("logged in")


def _backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        row = cursor.fetchone()
    assert row is not None
    return int(row[0])


def many_queries(request: HttpRequest) -> JsonResponse:
    """Four ORM tasks in parallel on Wove's pool threads, each with its own connection."""
    with weave() as w:

        @w.do
        def authors() -> int:
            return Author.objects.count()

        @w.do
        def books() -> int:
            return Book.objects.count()

        @w.do
        def priced() -> int:
            return Book.objects.filter(price__gt=0).count()

        @w.do
        def named() -> int:
            return Author.objects.filter(name__startswith="a").count()

    return JsonResponse({name: w.result[name] for name in ("authors", "books", "priced", "named")})


async def many_queries_async(request: HttpRequest) -> JsonResponse:
    """The same from an async view: its sync tasks still run on Wove's pool threads."""
    async with weave() as w:

        @w.do
        def authors() -> int:
            return Author.objects.count()

        @w.do
        def books() -> int:
            return Book.objects.count()

        @w.do
        def priced() -> int:
            return Book.objects.filter(price__gt=0).count()

        @w.do
        def named() -> int:
            return Author.objects.filter(name__startswith="a").count()

    return JsonResponse({name: w.result[name] for name in ("authors", "books", "priced", "named")})


def atomic_default(request: HttpRequest) -> JsonResponse:
    """Writes a row, then reads it from sync tasks that name no lane.

    Under ``ATOMIC_REQUESTS`` the row is uncommitted; with the default ``WOVE["ATOMIC"]``
    the tasks run on the request's thread and see it.
    """
    name = f"row of request {time.monotonic_ns()}"
    Author.objects.create(name=name)
    request_thread = threading.get_ident()
    with weave() as w:

        @w.do
        def seen() -> bool:
            return Author.objects.filter(name=name).exists()

        @w.do
        def on_request_thread() -> bool:
            return threading.get_ident() == request_thread

    return JsonResponse(
        {
            "in_atomic_block": connection.in_atomic_block,
            "seen": w.result["seen"],
            "on_request_thread": w.result["on_request_thread"],
        }
    )


def sensitive_and_pool(request: HttpRequest) -> JsonResponse:
    """The uncommitted row from the request's connection and from a pool thread's own."""
    name = f"uncommitted {time.monotonic_ns()}"
    Author.objects.create(name=name)
    with weave() as w:

        @w.do(thread_sensitive=True)
        def seen_here() -> bool:
            return Author.objects.filter(name=name).exists()

        @w.do(thread_sensitive=False)
        def seen_on_pool() -> bool:
            return Author.objects.filter(name=name).exists()

    return JsonResponse(
        {"seen_here": w.result["seen_here"], "seen_on_pool": w.result["seen_on_pool"]}
    )


def db_pid(request: HttpRequest) -> JsonResponse:
    """This worker's pid and thread, and the backend of the request thread's connection."""
    return JsonResponse(
        {"pid": os.getpid(), "thread": threading.get_ident(), "backend": _backend_pid()}
    )


def _query_into_marker(path: str, delay: float) -> None:
    time.sleep(delay)
    report = {"pid": os.getpid(), "authors": Author.objects.count(), "backend": _backend_pid()}
    with open(path + ".tmp", "w") as marker:
        json.dump(report, marker)
    os.rename(path + ".tmp", path)  # the marker appears whole


def detach_query(request: HttpRequest) -> JsonResponse:
    """Uses the request thread's connection, then detaches work that runs a query too."""
    backend = _backend_pid()
    detach(
        _query_into_marker,
        request.GET["marker"],
        float(request.GET.get("delay", "0")),
        mode=request.GET.get("mode", "fork"),
    )
    return JsonResponse({"pid": os.getpid(), "backend": backend})


def fork_server(request: HttpRequest) -> JsonResponse:
    """The worker's fork server (wsgi.py starts it with WOVE_TEST_FORK_SERVER=1), and the
    detached work its children reported back."""
    from wove.contrib.django.recording import store
    from wove.lowlevel import running_fork_server

    server = running_fork_server()
    detached = [
        {"path": t.path, "error": t.error, "tasks": [(r.task, r.status) for r in t.records]}
        for t in store().recent()
        if t.method == "DETACH"
    ]
    return JsonResponse({"pid": None if server is None else server.pid, "detached": detached})


def fork_on_request_thread(request: HttpRequest) -> JsonResponse:
    """A forked weave whose thread-sensitive task queries: in the child it runs on the
    thread that forked, which holds the request's (inherited) connection."""
    backend = _backend_pid()
    marker, delay = request.GET["marker"], float(request.GET.get("delay", "0"))
    with weave(background=True, fork=True) as w:

        @w.do(thread_sensitive=True)
        def report() -> None:
            _query_into_marker(marker, delay)

    return JsonResponse({"pid": os.getpid(), "backend": backend})


def slow_queries_timeout(request: HttpRequest) -> JsonResponse:
    """Three ORM tasks whose query (``pg_sleep``, 3 s by default) outlasts their timeout
    (0.3 s): 504 once they time out; their queries are cancelled on the server."""
    seconds = float(request.GET.get("sleep", "3"))
    sql = f"SELECT 1 AS id, pg_sleep({seconds:g})"
    try:
        with weave() as w:

            @w.do(timeout=0.3)
            def first() -> int:
                return len(list(Author.objects.raw(sql)))

            @w.do(timeout=0.3)
            def second() -> int:
                return len(list(Author.objects.raw(sql)))

            @w.do(timeout=0.3)
            def third() -> int:
                return len(list(Author.objects.raw(sql)))

    except TimeoutError as error:
        return JsonResponse({"timed_out": str(error)}, status=504)
    return JsonResponse({"timed_out": None})


def fill_pool(request: HttpRequest) -> JsonResponse:
    """``count`` sync tasks that sleep at once, without a database: grows Wove's pool of
    this worker to ``count`` threads (a test's baseline is then the full pool)."""
    count = int(request.GET.get("count", "8"))
    with weave() as w:

        @w.do(range(count))
        def nap(item: int) -> int:
            time.sleep(0.3)
            return item

    return JsonResponse({"pid": os.getpid(), "tasks": len(w.result["nap"])})


def thread_report(request: HttpRequest) -> JsonResponse:
    """This worker's threads by name, and how many of Wove's pool threads are running a
    task of this module (an abandoned call still in its query, say)."""
    frames = sys._current_frames()
    busy = 0
    for thread in threading.enumerate():
        if not thread.name.startswith("wove-") or not thread.name[5:].isdigit():
            continue
        frame = frames.get(thread.ident or 0)
        while frame is not None:
            if frame.f_code.co_filename == __file__:
                busy += 1
                break
            frame = frame.f_back
    names = sorted(thread.name for thread in threading.enumerate())
    return JsonResponse({"pid": os.getpid(), "threads": names, "busy_pool_threads": busy})


# tests/django/test_async_orm.py: the async ORM of async tasks, in parallel.

#: One query per task that sleeps, after counting the queries of its kind running at
#: that moment (itself included): the last of overlapping queries to start sees them all.
OVERLAP_SQL = (
    "SELECT 1 AS id, pg_backend_pid() AS backend, (SELECT count(*) FROM pg_stat_activity "
    "WHERE datname = current_database() AND state = 'active' "
    "AND query LIKE 'SELECT 1 AS id, pg_backend_pid() AS backend%%') AS seen, "
    "pg_sleep(%s) AS nap"
)


async def _overlapping_query(seconds: float) -> dict[str, int]:
    [row] = [row async for row in Author.objects.raw(OVERLAP_SQL, [seconds])]
    return {"backend": row.backend, "seen": row.seen}


async def async_orm(request: HttpRequest) -> JsonResponse:
    """Five async tasks, each one async-ORM query: each on a connection of its own, at the
    same time. Returns each task's backend and how many of the queries it saw running."""
    seconds = float(request.GET.get("sleep", "0.3"))
    async with weave() as w:

        @w.do
        async def first() -> dict[str, int]:
            return await _overlapping_query(seconds)

        @w.do
        async def second() -> dict[str, int]:
            return await _overlapping_query(seconds)

        @w.do
        async def third() -> dict[str, int]:
            return await _overlapping_query(seconds)

        @w.do
        async def fourth() -> dict[str, int]:
            return await _overlapping_query(seconds)

        @w.do
        async def fifth() -> dict[str, int]:
            return await _overlapping_query(seconds)

    names = ("first", "second", "third", "fourth", "fifth")
    return JsonResponse({name: w.result[name] for name in names})


def _atomic_weave(name: str) -> dict[str, bool]:
    """Inside transaction.atomic: write a row, then read it from async tasks."""
    from django.db import transaction

    with transaction.atomic():
        Author.objects.create(name=name)
        with weave() as w:

            @w.do
            async def seen() -> bool:
                return await Author.objects.filter(name=name).aexists()

            @w.do
            async def counted() -> int:
                return await Author.objects.filter(name=name).acount()

        transaction.set_rollback(True)  # the row was never committed
    return {"seen": w.result["seen"], "counted": w.result["counted"] == 1}


async def async_orm_in_atomic(request: HttpRequest) -> JsonResponse:
    """An async view whose sync code opens a transaction and runs a weave of async tasks:
    their async ORM calls run on the transaction's connection."""
    from asgiref.sync import sync_to_async

    name = f"uncommitted {time.monotonic_ns()}"
    result = await sync_to_async(_atomic_weave)(name)
    committed = await Author.objects.filter(name=name).aexists()
    return JsonResponse({**result, "committed": committed})


async def async_task_threads(request: HttpRequest) -> JsonResponse:
    """The threads two async tasks' thread-sensitive calls ran on."""
    from asgiref.sync import sync_to_async

    async with weave() as w:

        @w.do
        async def one() -> int:
            return await sync_to_async(threading.get_ident)()

        @w.do
        async def two() -> int:
            return await sync_to_async(threading.get_ident)()

    return JsonResponse({"one": w.result["one"], "two": w.result["two"]})


def atomic_async_tasks(request: HttpRequest) -> JsonResponse:
    """A sync view (under ``ATOMIC_REQUESTS``, in a transaction) writes a row, then reads
    it from async tasks' async ORM: they run on the request's thread and connection."""
    from asgiref.sync import sync_to_async

    name = f"row of request {time.monotonic_ns()}"
    Author.objects.create(name=name)
    request_thread = threading.get_ident()
    with weave() as w:

        @w.do
        async def seen() -> bool:
            return await Author.objects.filter(name=name).aexists()

        @w.do
        async def on_request_thread() -> bool:
            return await sync_to_async(threading.get_ident)() == request_thread

    return JsonResponse(
        {
            "in_atomic_block": connection.in_atomic_block,
            "seen": w.result["seen"],
            "on_request_thread": w.result["on_request_thread"],
        }
    )
