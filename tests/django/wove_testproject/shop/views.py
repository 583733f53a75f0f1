"""Views the tests call in-process and through real servers."""

from __future__ import annotations

import asyncio
import os
import time

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse

from wove import weave
from wove.contrib.django import detach

from .models import Author, Book


def parallel(request: HttpRequest) -> JsonResponse:
    with weave() as w:

        @w.do
        def authors() -> int:
            return Author.objects.count()

        @w.do
        def books() -> int:
            return Book.objects.count()

        @w.do
        def totals(authors: int, books: int) -> dict[str, int]:
            return {"authors": authors, "books": books}

    return JsonResponse(w.result.final)


async def parallel_async(request: HttpRequest) -> JsonResponse:
    async with weave() as w:

        @w.do
        def authors() -> int:
            return Author.objects.count()

        @w.do
        def books() -> int:
            return Book.objects.count()

    return JsonResponse({"authors": w.result["authors"], "books": w.result["books"]})


async def orm_in_async_task(request: HttpRequest) -> JsonResponse:
    async with weave() as w:

        @w.do
        async def authors() -> int:
            return Author.objects.count()

    return JsonResponse({"authors": w.result["authors"]})


def sensitive(request: HttpRequest) -> JsonResponse:
    """Writes a row, then reads it from a thread-sensitive and a parallel task."""
    Author.objects.create(name="uncommitted")
    with weave() as w:

        @w.do(thread_sensitive=True)
        def seen_here() -> bool:
            return Author.objects.filter(name="uncommitted").exists()

        @w.do(thread_sensitive=False)
        def pool_thread() -> str:
            return connection.vendor

    return JsonResponse({"seen": w.result["seen_here"]})


def _write_marker(path: str, delay: float) -> None:
    time.sleep(delay)
    with open(path, "w") as marker:
        marker.write(str(os.getpid()))


def detach_view(request: HttpRequest) -> HttpResponse:
    marker = request.GET["marker"]
    delay = float(request.GET.get("delay", "0"))
    detach(_write_marker, marker, delay, mode=request.GET.get("mode", "background"))
    return HttpResponse("sent")


def detach_then_raise(request: HttpRequest) -> HttpResponse:
    detach(_write_marker, request.GET["marker"], 0.0)
    raise RuntimeError("the view failed after detaching")


def detach_decorated(request: HttpRequest) -> HttpResponse:
    marker = request.GET["marker"]

    @detach
    def write() -> None:
        _write_marker(marker, 0.0)

    return HttpResponse("sent")


def detach_task(request: HttpRequest) -> HttpResponse:
    from .tasks import write_marker

    detach(write_marker, request.GET["marker"], "from a task", mode="tasks")
    return HttpResponse("sent")


def _fail(message: str) -> None:
    raise LookupError(message)


def detach_fails(request: HttpRequest) -> HttpResponse:
    detach(_fail, "detached work failed on purpose", mode=request.GET.get("mode", "background"))
    return HttpResponse("sent")


async def detach_async(request: HttpRequest) -> HttpResponse:
    detach(_write_marker, request.GET["marker"], 0.0)
    return HttpResponse("sent")


def in_atomic(request: HttpRequest) -> JsonResponse:
    """Sync tasks inside transaction.atomic: the caller's lane unless a task opts out."""
    from django.db import transaction

    with transaction.atomic():
        Author.objects.create(name="inside")
        with weave() as w:

            @w.do
            def default_lane() -> bool:
                return Author.objects.filter(name="inside").exists()

            @w.do(thread_sensitive=False)
            def opted_out() -> str:
                return "pool"

        with weave(thread_sensitive=False) as parallel:

            @parallel.do
            def whole_weave_opted_out() -> str:
                return "pool"

    return JsonResponse({"seen": w.result["default_lane"]})


async def detach_then_raise_async(request: HttpRequest) -> HttpResponse:
    detach(_write_marker, request.GET["marker"], 0.0)
    raise RuntimeError("the async view failed after detaching")


def sql_and_cancelled(request: HttpRequest) -> JsonResponse:
    """``n`` queries with a parameter in one task; then, with ``fail=1`` (the default),
    another task fails: a sibling still running is cancelled and a dependent never starts.
    The trace pages' tests and screenshot use it."""
    count = int(request.GET.get("n", "3"))
    with_failure = request.GET.get("fail", "1") == "1"
    try:
        with weave() as w:

            @w.do
            def lookups() -> list[int]:
                return [Author.objects.filter(name=f"<b>{i}</b>").count() for i in range(count)]

            @w.do
            async def slow() -> None:
                if with_failure:
                    await asyncio.sleep(5)

            @w.do
            def fails(lookups: list[int]) -> None:
                if with_failure:
                    time.sleep(0.05)
                    raise LookupError("failed on purpose")

            @w.do
            def never(fails: None) -> None:
                pass

    except LookupError:
        return JsonResponse({"failed": True, "trace": request.wove_trace_id})  # type: ignore[attr-defined]
    return JsonResponse({"failed": False, "trace": request.wove_trace_id})  # type: ignore[attr-defined]
