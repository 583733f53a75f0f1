"""The royalty statement: the step of the royalty page that runs on a Celery worker.

A statement reads every sale and review of every book of an author and works out a
year of royalties, month by month: the kind of report that is better done by a worker
than by the web process serving pages. The royalty page (``author_royalties`` in
catalog/views.py) sends it with ``@w.do(env="celery")``; ``make demo-worker`` starts a
worker.

What it receives are plain values (book ids and their list prices), not model
instances: it queries the database itself, on the worker, which runs Django with the
same settings and database (bookshop/celery.py). An id is small, always fresh when it
is read, and says what the task needs without carrying a whole object graph with it.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from django.db.models import Count

from .models import Book, QueryTime

ROYALTY_RATE = Decimal("0.10")  # of the list price, per copy sold
COPIES_PER_REVIEW = 40  # copies sold in a month, per reader's review (the demo's model)
STATEMENT_QUERY = 0.25  # seconds: a report over every sale of every book
MONTHS = 12
CENT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class StatementRow:
    book_id: int
    title: str
    year: int
    copies: int
    price: Decimal
    royalty: Decimal


@dataclass(frozen=True, slots=True)
class Statement:
    """A year of royalties, and where and how long it was computed."""

    rows: list[StatementRow]
    total: Decimal
    copies: int
    pid: int  # the process that computed it: a worker's, not the web server's
    host: str
    seconds: float


def royalty_statement(prices: dict[int, Decimal]) -> Statement:
    """The statement of the books ``prices`` names (book id -> list price)."""
    start = time.perf_counter()
    books = (
        Book.objects.filter(QueryTime(STATEMENT_QUERY), pk__in=list(prices))
        .annotate(review_count=Count("reviews", distinct=True), order_count=Count("orders"))
        .order_by("year", "title")
    )
    rows = []
    for book in books:
        months = (_copies_sold(book.isbn, month, book.review_count) for month in range(MONTHS))
        copies = sum(months) + book.order_count
        price = prices[book.pk]
        royalty = (price * ROYALTY_RATE * copies).quantize(CENT, ROUND_HALF_UP)
        rows.append(StatementRow(book.pk, book.title, book.year, copies, price, royalty))
    return Statement(
        rows=rows,
        total=sum((row.royalty for row in rows), Decimal("0.00")),
        copies=sum(row.copies for row in rows),
        pid=os.getpid(),
        host=socket.gethostname(),
        seconds=time.perf_counter() - start,
    )


def _copies_sold(isbn: str, month: int, reviews: int) -> int:
    """One month's sales of one book: proportional to its reviews, give or take 30%."""
    digest = hashlib.sha256(f"{isbn}:{month}".encode()).digest()
    swing = 0.7 + 0.6 * digest[0] / 255
    return round(reviews * COPIES_PER_REVIEW * swing)
