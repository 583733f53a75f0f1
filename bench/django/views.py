"""The benchmark's views: the author page of the issue (five independent 50 ms queries)
built with Wove and sequentially, in a sync view and in an async view (async tasks, the
async ORM), and a view with a 10-task weave for the middleware's overhead (trivial
tasks, or one fast query each).

The author page has the shape the issue names: five queries that need nothing from each
other, each made to take 50 ms by the database itself (``pg_sleep``), as a busy server
would. Each task runs its query on a Wove pool thread, with that thread's connection.
"""

from __future__ import annotations

from collections.abc import Callable

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse

from wove import weave

QUERY_SECONDS = 0.05
PARTS = ("author", "books", "ratings", "related", "stock")


def slow_query(part: str) -> str:
    """One query that takes ``QUERY_SECONDS`` in the database, returning ``part``."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s::text, pg_sleep(%s)", [part, QUERY_SECONDS])
        row = cursor.fetchone()
    assert row is not None
    return str(row[0])


def author_wove(request: HttpRequest) -> JsonResponse:
    with weave() as w:

        @w.do
        def author() -> str:
            return slow_query("author")

        @w.do
        def books() -> str:
            return slow_query("books")

        @w.do
        def ratings() -> str:
            return slow_query("ratings")

        @w.do
        def related() -> str:
            return slow_query("related")

        @w.do
        def stock() -> str:
            return slow_query("stock")

    return JsonResponse({part: w.result[part] for part in PARTS})


def author_sequential(request: HttpRequest) -> JsonResponse:
    return JsonResponse({part: slow_query(part) for part in PARTS})


def one_query(request: HttpRequest) -> JsonResponse:
    """The slowest single query alone, through the same request path."""
    return JsonResponse({"author": slow_query("author")})


#: The same query for the async ORM: a raw query set, read with ``async for`` (any model
#: will do: the query reads no table).
ASYNC_SQL = "SELECT 1 AS id, %s::text AS part, pg_sleep(%s)"


async def async_slow_query(part: str) -> str:
    """One async-ORM query that takes ``QUERY_SECONDS`` in the database."""
    from django.contrib.contenttypes.models import ContentType

    rows = [row async for row in ContentType.objects.raw(ASYNC_SQL, [part, QUERY_SECONDS])]
    return str(rows[0].part)


async def author_async(request: HttpRequest) -> JsonResponse:
    """The author page as an async view: five async tasks, one async-ORM query each."""
    async with weave() as w:

        @w.do
        async def author() -> str:
            return await async_slow_query("author")

        @w.do
        async def books() -> str:
            return await async_slow_query("books")

        @w.do
        async def ratings() -> str:
            return await async_slow_query("ratings")

        @w.do
        async def related() -> str:
            return await async_slow_query("related")

        @w.do
        async def stock() -> str:
            return await async_slow_query("stock")

    return JsonResponse({part: w.result[part] for part in PARTS})


async def one_query_async(request: HttpRequest) -> JsonResponse:
    """The single async-ORM query alone, through the same request path."""
    return JsonResponse({"author": await async_slow_query("author")})


async def author_async_sequential(request: HttpRequest) -> JsonResponse:
    return JsonResponse({part: await async_slow_query(part) for part in PARTS})


def ping(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


# --- a 10-task weave, for the middleware's overhead -------------------------------------


def _fast_query(n: int) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s::int", [n])
        row = cursor.fetchone()
    assert row is not None
    return int(row[0])


def _ten_tasks(work: Callable[[int], int]) -> int:
    with weave() as w:

        @w.do
        def t0() -> int:
            return work(0)

        @w.do
        def t1() -> int:
            return work(1)

        @w.do
        def t2() -> int:
            return work(2)

        @w.do
        def t3() -> int:
            return work(3)

        @w.do
        def t4() -> int:
            return work(4)

        @w.do
        def t5() -> int:
            return work(5)

        @w.do
        def t6() -> int:
            return work(6)

        @w.do
        def t7() -> int:
            return work(7)

        @w.do
        def t8() -> int:
            return work(8)

        @w.do
        def t9() -> int:
            return work(9)

    return sum(w.result[f"t{i}"] for i in range(10))


def ten_tasks(request: HttpRequest) -> HttpResponse:
    """Ten independent trivial tasks: the harshest case for a per-request cost."""
    return HttpResponse(str(_ten_tasks(lambda n: n)))


def ten_queries(request: HttpRequest) -> HttpResponse:
    """Ten independent tasks, each running one fast query (``SELECT n``)."""
    return HttpResponse(str(_ten_tasks(_fast_query)))
