"""The bookshop's pages.

- ``/authors/<slug>/``: the author page built twice, sequentially and with Wove, with
  both timelines side by side;
- ``/authors/<slug>/sequential/`` and ``/authors/<slug>/wove/``: each version alone;
- ``/authors/<slug>/royalties/``: the royalty statement, one task of it on a Celery
  worker (``@w.do(env="celery")``; ``make demo-worker`` starts one);
- ``/orders/``: placing an order detaches the receipt (``wove.contrib.django.detach``);
- ``/wove/`` (wove.contrib.django.urls): the trace of every recent request.
"""

from __future__ import annotations

import os
import time
from decimal import Decimal
from typing import Any

from django import forms
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse

import wove
from wove import RemoteNeverRan, TaskTimeout, weave
from wove.contrib.django import detach

from .lookups import (
    Rating,
    author_named,
    books_by,
    page_context,
    price_of,
    ratings_for,
    related_books,
)
from .models import Author, Book, Order
from .receipts import send_receipt
from .royalties import Statement, royalty_statement
from .timeline import Stopwatch, Timeline, from_records


def index(request: HttpRequest) -> HttpResponse:
    authors = Author.objects.annotate(book_count=Count("books"))
    database = f"{connection.vendor}, {connection.settings_dict['NAME']}"
    return render(request, "catalog/index.html", {"authors": authors, "database": database})


# --- the author page, two ways ----------------------------------------------------------


def author_page_sequential(slug: str) -> tuple[dict[str, Any], Timeline]:
    """One step after the other: the time is the sum of every step."""
    clock = Stopwatch()
    with clock.step("author"):
        author = author_named(slug)
    with clock.step("books"):
        books = books_by(slug)
    prices = []
    for book in books:
        with clock.step("prices"):
            prices.append(price_of(book.isbn))
    with clock.step("ratings"):
        ratings = ratings_for(slug)
    with clock.step("related"):
        related = related_books(books)
    with clock.step("page"):
        context = page_context(author, books, prices, ratings, related)
    return context, clock.timeline()


def author_page_wove(slug: str) -> tuple[dict[str, Any], Timeline]:
    """The same steps as tasks: each starts once the tasks it names are done.

    ``author``, ``books`` and ``ratings`` start at once; ``prices`` (one call per book)
    and ``related`` start when ``books`` is done; ``page`` when all are. The time is the
    longest chain, not the sum. ``wove.collect()`` is only here to draw the timeline on
    the comparison page: the trace at /wove/ needs none of it.
    """
    start = time.perf_counter()
    with wove.collect() as records, weave(slug=slug) as w:

        @w.do
        def author(slug: str) -> Author:
            return author_named(slug)

        @w.do
        def books(slug: str) -> list[Book]:
            return books_by(slug)

        @w.do("books")  # mapped: one price request per book, all at the same time
        def prices(book: Book) -> Decimal:
            return price_of(book.isbn)

        @w.do
        def ratings(slug: str) -> dict[int, Rating]:
            return ratings_for(slug)

        @w.do
        def related(books: list[Book]) -> list[Book]:
            return related_books(books)

        @w.do
        def page(
            author: Author,
            books: list[Book],
            prices: list[Decimal],
            ratings: dict[int, Rating],
            related: list[Book],
        ) -> dict[str, Any]:
            return page_context(author, books, prices, ratings, related)

    return w.result.page, from_records(records, start, time.perf_counter())


def author_compare(request: HttpRequest, slug: str) -> HttpResponse:
    """Both versions, one after the other, and their timelines on one time scale."""
    sequential, sequential_timeline = author_page_sequential(slug)
    woven, wove_timeline = author_page_wove(slug)
    wove_timeline = wove_timeline.ordered_like(sequential_timeline)
    scale = max(sequential_timeline.total_ms, wove_timeline.total_ms)
    context = {
        **woven,
        "same_page": sequential == woven,
        "sequential_ms": sequential_timeline.total_ms,
        "wove_ms": wove_timeline.total_ms,
        "speedup": sequential_timeline.total_ms / max(wove_timeline.total_ms, 1e-9),
        "sequential_rows": sequential_timeline.drawn(scale),
        "wove_rows": wove_timeline.drawn(scale),
        "trace_url": trace_url(request),
    }
    return render(request, "catalog/compare.html", context)


def trace_url(request: HttpRequest) -> str:
    """This request's page among Wove's trace pages. ``WoveMiddleware`` gives the request
    its trace's id from the start (``request.wove_trace_id``); the trace is stored when
    the response leaves the middleware, before anyone can follow the link."""
    trace_id = getattr(request, "wove_trace_id", None)
    if trace_id is None:  # recording is off: the list says so
        return reverse("wove:trace_list")
    return reverse("wove:trace_detail", args=[trace_id])


def author_sequential(request: HttpRequest, slug: str) -> HttpResponse:
    context, timeline = author_page_sequential(slug)
    return _author_alone(request, context, timeline, "sequential")


def author_wove(request: HttpRequest, slug: str) -> HttpResponse:
    context, timeline = author_page_wove(slug)
    return _author_alone(request, context, timeline, "wove")


def _author_alone(
    request: HttpRequest, context: dict[str, Any], timeline: Timeline, version: str
) -> HttpResponse:
    response = render(
        request,
        "catalog/author.html",
        {
            **context,
            "version": version,
            "elapsed_ms": timeline.total_ms,
            "trace_url": trace_url(request),
        },
    )
    response["X-Author-Page-Ms"] = f"{timeline.total_ms:.1f}"  # for curl -I
    return response


# --- royalties: one task on a Celery worker -----------------------------------------------

WORKER_HINT = "make demo-worker"  # starts a Redis and a worker (see the Makefile)


def author_royalties(request: HttpRequest, slug: str) -> HttpResponse:
    """The author's royalty statement, computed on a Celery worker.

    The author, the books and their prices are looked up here, at the same time, as on
    the author page; ``statement``, the heavy report, runs on a worker of the bookshop's
    Celery app (``env="celery"``, configured in ``WOVE["ENVIRONMENTS"]``). It is sent
    book ids and prices, plain values, and queries the database on the worker
    (catalog/royalties.py). Its value comes back into this weave like any task's, and
    ``page`` starts when it has. With no worker or no Redis, the page says how to start
    them instead of waiting: the task has a ``timeout``.
    """
    if "celery" not in settings.WOVE.get("ENVIRONMENTS", {}):
        return _royalties_unavailable(
            request,
            slug,
            "Celery is not installed here",
            'install them (pip install "wove[celery]" "celery[redis]"), then run',
        )
    started = time.perf_counter()
    try:
        with weave(slug=slug) as w:

            @w.do
            def author(slug: str) -> Author:
                return author_named(slug)

            @w.do
            def books(slug: str) -> list[Book]:
                return books_by(slug)

            @w.do("books")
            def prices(book: Book) -> Decimal:
                return price_of(book.isbn)

            @w.do
            def list_prices(books: list[Book], prices: list[Decimal]) -> dict[int, Decimal]:
                return {book.pk: price for book, price in zip(books, prices, strict=True)}

            @w.do(env="celery", timeout=settings.DEMO_REMOTE_TIMEOUT)
            def statement(list_prices: dict[int, Decimal]) -> Statement:
                return royalty_statement(list_prices)  # on a worker, with its own queries

            @w.do
            def page(author: Author, statement: Statement) -> dict[str, Any]:
                return {"author": author, "statement": statement}

    except TaskTimeout:
        return _royalties_unavailable(
            request,
            slug,
            f"No Celery worker answered within {settings.DEMO_REMOTE_TIMEOUT:g} s",
            "in another terminal, run",
        )
    except RemoteNeverRan as error:
        # The call was never sent: Wove says so, with the broker's own error as the cause.
        if not isinstance(error.__cause__, _broker_errors()):
            raise
        return _royalties_unavailable(
            request,
            slug,
            f"Celery's broker, {_broker_url()}, cannot be reached "
            f"({type(error.__cause__).__name__})",
            "in another terminal, run",
        )
    context = {
        **w.result.page,
        "server_pid": os.getpid(),
        "elapsed_ms": (time.perf_counter() - started) * 1000,
        "trace_url": trace_url(request),
    }
    return render(request, "catalog/royalties.html", context)


def _royalties_unavailable(request: HttpRequest, slug: str, why: str, fix: str) -> HttpResponse:
    context = {"slug": slug, "why": why, "fix": fix, "hint": WORKER_HINT, "broker": _broker_url()}
    return render(request, "catalog/royalties_unavailable.html", context, status=503)


def _broker_url() -> str:
    url = str(getattr(settings, "CELERY_BROKER_URL", ""))
    return url.rpartition("@")[2]  # without a password, if it has one


def _broker_errors() -> tuple[type[BaseException], ...]:
    """What sending to an unreachable Redis raises (only asked once Celery is in use): the
    cause of the RemoteNeverRan that says the call was never sent."""
    from kombu.exceptions import OperationalError
    from redis.exceptions import ConnectionError as RedisConnectionError

    return (OperationalError, RedisConnectionError, ConnectionError)


# --- orders: the receipt is sent after the response ---------------------------------------


class OrderForm(forms.ModelForm):  # type: ignore[type-arg]
    class Meta:
        model = Order
        fields = ("book", "email", "mode")
        widgets = {"mode": forms.RadioSelect}  # noqa: RUF012

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        books = self.fields["book"]
        books.queryset = Book.objects.select_related("author")  # type: ignore[attr-defined]
        books.label_from_instance = lambda book: f"{book.title} ({book.author.name})"  # type: ignore[attr-defined]


def place_order(book: Book, email: str, mode: str) -> Order:
    """Write the order and ask for its price at the same time, in one transaction.

    Inside ``transaction.atomic``, Wove keeps sync tasks on the request's thread by
    default (``WOVE["ATOMIC"]``), so ``order`` is written in this transaction and rolls
    back with it. ``price`` touches no database, so it opts out and runs on the pool
    while the row is written.
    """
    with transaction.atomic(), weave(book=book, email=email, mode=mode) as w:

        @w.do(thread_sensitive=False)  # HTTP only: free to leave the request's thread
        def price(book: Book) -> Decimal:
            return price_of(book.isbn)

        @w.do  # on the request's thread, in its transaction
        def order(book: Book, email: str, mode: str) -> Order:
            return Order.objects.create(book=book, email=email, mode=mode)

        @w.do
        def priced(order: Order, price: Decimal) -> Order:
            order.price = price
            order.save(update_fields=["price"])
            return order

    placed: Order = w.result.priced
    return placed


def orders(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        form = OrderForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            order = place_order(data["book"], data["email"], data["mode"])
            # Starts once this response (a redirect) has been sent to the browser.
            detach(send_receipt, order.pk, mode=order.mode)
            return redirect("order", pk=order.pk)
    else:
        first = Book.objects.values_list("pk", flat=True).first()
        form = OrderForm(
            initial={"book": first, "email": "reader@example.com", "mode": "background"}
        )
    recent = Order.objects.select_related("book")[:10]
    return render(request, "catalog/orders.html", {"form": form, "orders": recent})


def order(request: HttpRequest, pk: int) -> HttpResponse:
    placed = get_object_or_404(Order.objects.select_related("book__author"), pk=pk)

    def after(moment: Any) -> float | None:
        return None if moment is None else (moment - placed.placed_at).total_seconds()

    context = {
        "order": placed,
        "started_after": after(placed.receipt_started_at),
        "sent_after": after(placed.receipt_sent_at),
        "server_pid": os.getpid(),
    }
    return render(request, "catalog/order.html", context)
