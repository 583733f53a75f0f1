"""The bookshop on Starlette: the Django project's bookshop (``make demo``), the same pages
served by an ASGI app with ``wove.contrib.starlette``. ``make demo-starlette`` serves it
with uvicorn.

- ``/``: the authors, with links to everything below;
- ``/authors/{slug}/``: the author page built sequentially and with Wove, one after the
  other, with both timelines on one scale;
- ``/authors/{slug}/sequential/``, ``/authors/{slug}/wove/``: each version alone; the Wove
  one links to its own trace and sends ``Server-Timing``;
- ``/orders/``: placing an order detaches the receipt
  (``detach(send_receipt, order_id, mode="background" or "fork")``); the order's page,
  ``/orders/{id}/``, shows that the receipt work started after the response;
- ``/wove/``: Wove's trace pages (the app runs with ``debug=True``).

An unknown author, book or order is a 404 page, a bad order (an unknown ``mode``, no
email) a 400 page; never a 500. The older addresses still work: ``/authors/{slug}``
(``?sequential=1``) redirects to a version of the author page, and ``POST
/authors/{slug}/order?mode=...`` orders the author's first book.

The data is the Django project's, read from its seed command's source (so it lives in
one place and this app needs no Django), into a SQLite file made at startup. As in the
Django project, the slow parts wait on something outside Python: each query makes
SQLite itself wait (a SQL function calling ``time.sleep``, as ``QueryTime`` does there),
and each price comes from an async call that takes ``PRICE_SECONDS``.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import hashlib
import logging
import os
import random
import sqlite3
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

import wove
from wove import TraceRecord, weave
from wove.contrib.starlette import DETACH_MODES, WoveMiddleware, detach

# Seconds the database spends on each query, as in the Django project (catalog/lookups.py).
AUTHOR_QUERY = 0.04
BOOKS_QUERY = 0.06
RATINGS_QUERY = 0.15  # a report over every review of every book
RELATED_QUERY = 0.08
PRICE_SECONDS = 0.08  # the price service's answer, per book
RECEIPT_SECONDS = 1.0  # rendering and mailing a receipt
SEED_SOURCE = Path(__file__).parent / "catalog" / "management" / "commands" / "seed.py"

logger = logging.getLogger("bookshop")

# --- the data -------------------------------------------------------------------------------


def catalog() -> dict[str, tuple[str, int, str, list[tuple[str, str, int]]]]:
    """The ``CATALOG`` literal of the Django project's seed command."""
    tree = ast.parse(SEED_SOURCE.read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign | ast.Assign):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            if any(isinstance(t, ast.Name) and t.id == "CATALOG" for t in targets):
                assert node.value is not None
                value: Any = ast.literal_eval(node.value)
                return value
    raise LookupError(f"no CATALOG in {SEED_SOURCE}")


def isbn_of(number: int) -> str:
    """The seed command's ISBNs (13 digits, with the check digit), so prices match."""
    digits = f"978{number:09d}"
    check = (10 - sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(digits)) % 10) % 10
    return f"{digits}{check}"


def _wait(seconds: float) -> bool:
    time.sleep(seconds)  # releases the GIL: other threads' queries go on meanwhile
    return True


SCHEMA = """
CREATE TABLE IF NOT EXISTS author (slug TEXT PRIMARY KEY, name TEXT, born INT, country TEXT);
CREATE TABLE IF NOT EXISTS book (isbn TEXT PRIMARY KEY, author TEXT, title TEXT, genre TEXT,
    year INT);
CREATE TABLE IF NOT EXISTS review (id INTEGER PRIMARY KEY, isbn TEXT, reader TEXT, rating INT);
CREATE TABLE IF NOT EXISTS "order" (id INTEGER PRIMARY KEY, isbn TEXT, email TEXT, mode TEXT,
    price TEXT, placed_at REAL, receipt_started_at REAL, receipt_sent_at REAL,
    receipt_pid INT);
"""


class Database:
    """A SQLite file; each call opens its own connection (each task runs on its own
    thread). ``demo_query_time(seconds)`` in a query makes SQLite wait, once per query."""

    def __init__(self, path: str) -> None:
        self.path = path
        with self.connect() as db:
            db.executescript(SCHEMA)
            if not db.execute("SELECT 1 FROM author LIMIT 1").fetchall():
                self._seed(db)

    @staticmethod
    def _seed(db: sqlite3.Connection) -> None:
        number = 0
        for slug, (name, born, country, books) in catalog().items():
            db.execute("INSERT INTO author VALUES (?, ?, ?, ?)", (slug, name, born, country))
            for title, genre, year in books:
                number += 1
                isbn = isbn_of(number)
                db.execute(
                    "INSERT INTO book VALUES (?, ?, ?, ?, ?)", (isbn, slug, title, genre, year)
                )
                rng = random.Random(isbn)  # the same reviews on every machine
                taste = rng.uniform(3.0, 4.6)
                db.executemany(
                    "INSERT INTO review (isbn, reader, rating) VALUES (?, ?, ?)",
                    [
                        (
                            isbn,
                            f"reader{rng.randrange(10_000)}",
                            min(5, max(1, round(rng.gauss(taste, 0.9)))),
                        )
                        for _ in range(rng.randrange(40, 400))
                    ],
                )

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10)
        db.create_function("demo_query_time", 1, _wait, deterministic=True)
        try:
            with db:
                yield db
        finally:
            db.close()

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with self.connect() as db:
            return db.execute(sql, params).fetchall()


_database: Database | None = None
_lock = threading.Lock()


def database() -> Database:
    """Made at startup (the lifespan), or on first use when no lifespan runs."""
    global _database
    with _lock:
        if _database is None:
            path = os.environ.get("BOOKSHOP_DB") or os.path.join(
                tempfile.mkdtemp(prefix="bookshop-"), "bookshop.sqlite3"
            )
            _database = Database(path)
        return _database


# --- the slow steps of the author page (catalog/lookups.py in the Django project) -------------


@dataclass(frozen=True, slots=True)
class Author:
    slug: str
    name: str
    born: int
    country: str


@dataclass(frozen=True, slots=True)
class Book:
    isbn: str
    author: str
    title: str
    genre: str
    year: int


BOOK_COLUMNS = "isbn, author, title, genre, year"


def author_named(slug: str) -> Author:
    rows = database().rows(
        "SELECT slug, name, born, country FROM author WHERE demo_query_time(?) AND slug = ?",
        AUTHOR_QUERY,
        slug,
    )
    if not rows:
        raise HTTPException(404, f"No author {slug!r}.")
    return Author(*rows[0])


def books_by(slug: str) -> list[Book]:
    rows = database().rows(
        f"SELECT {BOOK_COLUMNS} FROM book WHERE demo_query_time(?) AND author = ? "
        "ORDER BY year, title",
        BOOKS_QUERY,
        slug,
    )
    return [Book(*row) for row in rows]


def ratings_for(slug: str) -> dict[str, tuple[int, float]]:
    """Review count and average rating of each of the author's books, by ISBN."""
    rows = database().rows(
        "SELECT review.isbn, COUNT(*), AVG(rating) FROM review JOIN book USING (isbn) "
        "WHERE demo_query_time(?) AND book.author = ? GROUP BY review.isbn",
        RATINGS_QUERY,
        slug,
    )
    return {isbn: (count, average) for isbn, count, average in rows}


def related_books(books: list[Book]) -> list[tuple[Book, str]]:
    """Other authors' books in the same genres, with their author's name."""
    genres = sorted({book.genre for book in books})
    authors = sorted({book.author for book in books})
    rows = database().rows(
        f"SELECT {', '.join('book.' + c for c in BOOK_COLUMNS.split(', '))}, author.name "
        "FROM book JOIN author ON author.slug = book.author WHERE demo_query_time(?) "
        f"AND genre IN ({', '.join('?' * len(genres))}) "
        f"AND book.author NOT IN ({', '.join('?' * len(authors))}) "
        "ORDER BY year DESC LIMIT 4",
        RELATED_QUERY,
        *genres,
        *authors,
    )
    return [(Book(*row[:5]), row[5]) for row in rows]


async def price_of(isbn: str) -> Decimal:
    """The price service's answer for one book (the Django project's prices)."""
    await asyncio.sleep(PRICE_SECONDS)  # an async HTTP call to the distributor's API
    cents = 599 + int(hashlib.sha256(isbn.encode()).hexdigest(), 16) % 2000
    return Decimal(cents) / 100


def page_context(
    author: Author,
    books: list[Book],
    prices: list[Decimal],
    ratings: dict[str, tuple[int, float]],
    related: list[tuple[Book, str]],
) -> dict[str, Any]:
    rows = [
        {"book": book, "price": price, "rating": ratings.get(book.isbn, (0, None))}
        for book, price in zip(books, prices, strict=True)
    ]
    return {
        "author": author,
        "rows": rows,
        "related": related,
        "total": sum(prices, Decimal("0.00")),
    }


# --- timelines: when each step ran (catalog/timeline.py in the Django project) ----------------


@dataclass(slots=True)
class Row:
    name: str
    bars: list[tuple[float, float]] = field(default_factory=list)  # (start_ms, end_ms)

    @property
    def span_ms(self) -> float:
        return max(end for _, end in self.bars) - min(start for start, _ in self.bars)


@dataclass(slots=True)
class Timeline:
    rows: list[Row]
    total_ms: float

    def ordered_like(self, other: Timeline) -> Timeline:
        rank = {row.name: i for i, row in enumerate(other.rows)}
        return Timeline(sorted(self.rows, key=lambda r: rank.get(r.name, len(rank))), self.total_ms)


class Stopwatch:
    """Times the steps of plain sequential code: ``async with clock.step("books"): ...``."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.rows: dict[str, Row] = {}

    @contextlib.asynccontextmanager
    async def step(self, name: str) -> AsyncIterator[None]:
        begin = time.perf_counter()
        try:
            yield
        finally:
            row = self.rows.setdefault(name, Row(name))
            row.bars.append((self._ms(begin), self._ms(time.perf_counter())))

    def timeline(self) -> Timeline:
        return Timeline(list(self.rows.values()), self._ms(time.perf_counter()))

    def _ms(self, moment: float) -> float:
        return (moment - self.start) * 1000


def from_records(records: list[TraceRecord], start: float, end: float) -> Timeline:
    """A weave's timeline: a row per task, a bar per call (one per item when mapped)."""
    rows: dict[str, Row] = {}
    for record in sorted(records, key=lambda r: r.start):
        row = rows.setdefault(record.task, Row(record.task))
        row.bars.append(((record.start - start) * 1000, (record.end - start) * 1000))
    return Timeline(list(rows.values()), (end - start) * 1000)


# --- the author page, two ways ----------------------------------------------------------------


async def author_page_sequential(slug: str) -> tuple[dict[str, Any], Timeline]:
    """One step after the other: the time is the sum of every step."""
    clock = Stopwatch()
    async with clock.step("author"):
        author = await asyncio.to_thread(author_named, slug)
    async with clock.step("books"):
        books = await asyncio.to_thread(books_by, slug)
    prices = []
    for book in books:
        async with clock.step("prices"):
            prices.append(await price_of(book.isbn))
    async with clock.step("ratings"):
        ratings = await asyncio.to_thread(ratings_for, slug)
    async with clock.step("related"):
        related = await asyncio.to_thread(related_books, books)
    async with clock.step("page"):
        context = page_context(author, books, prices, ratings, related)
    return context, clock.timeline()


async def author_page_wove(slug: str) -> tuple[dict[str, Any], Timeline]:
    """The same steps as tasks: each starts once the tasks it names are done.

    The queries are sync tasks on Wove's thread pool (one SQLite connection each), the
    prices an async task per book (``@w.do("books")``) on the endpoint's loop.
    ``wove.collect()`` only draws the comparison page's timeline: the trace at /wove/
    needs none of it.
    """
    start = time.perf_counter()
    with wove.collect() as records:
        async with weave(slug=slug) as w:

            @w.do
            def author(slug: str) -> Author:
                return author_named(slug)

            @w.do
            def books(slug: str) -> list[Book]:
                return books_by(slug)

            @w.do("books")  # mapped: one price request per book, all at the same time
            async def prices(book: Book) -> Decimal:
                return await price_of(book.isbn)

            @w.do
            def ratings(slug: str) -> dict[str, tuple[int, float]]:
                return ratings_for(slug)

            @w.do
            def related(books: list[Book]) -> list[tuple[Book, str]]:
                return related_books(books)

            @w.do
            def page(
                author: Author,
                books: list[Book],
                prices: list[Decimal],
                ratings: dict[str, tuple[int, float]],
                related: list[tuple[Book, str]],
            ) -> dict[str, Any]:
                return page_context(author, books, prices, ratings, related)

    page_data: dict[str, Any] = w.result.page
    return page_data, from_records(records, start, time.perf_counter())


# --- work after the response: the receipt ------------------------------------------------------


def send_receipt(order_id: int) -> None:
    """Render the receipt and mail it: slow, and the customer need not wait for it.

    ``detach(send_receipt, order_id, mode=...)`` starts it once the response has been
    sent: in this process (``"background"``) or in a forked child (``"fork"``). It notes
    when it started and which process ran it, for the order's page.
    """
    with database().connect() as db:
        db.execute(
            'UPDATE "order" SET receipt_started_at = ?, receipt_pid = ? WHERE id = ?',
            (time.time(), os.getpid(), order_id),
        )
    time.sleep(RECEIPT_SECONDS)  # render the PDF, talk to the mail server
    with database().connect() as db:
        db.execute('UPDATE "order" SET receipt_sent_at = ? WHERE id = ?', (time.time(), order_id))
    logger.info("bookshop: receipt for order %s sent by process %s", order_id, os.getpid())


async def place_order(isbn: str, email: str, mode: str) -> int:
    """Write the order and ask for its price at the same time; returns the order's id."""
    async with weave(isbn=isbn, email=email, mode=mode) as w:

        @w.do
        async def price(isbn: str) -> Decimal:
            return await price_of(isbn)

        @w.do
        def order(isbn: str, email: str, mode: str) -> int:
            with database().connect() as db:
                cursor = db.execute(
                    'INSERT INTO "order" (isbn, email, mode, placed_at) VALUES (?, ?, ?, ?)',
                    (isbn, email, mode, time.time()),
                )
                assert cursor.lastrowid is not None
                return cursor.lastrowid

        @w.do
        def priced(order: int, price: Decimal) -> int:
            with database().connect() as db:
                db.execute('UPDATE "order" SET price = ? WHERE id = ?', (str(price), order))
            return order

    placed: int = w.result.priced
    return placed


def checked_mode(value: str | None) -> str:
    """A detach mode from a form or a query string: 400, not 500, for a bad one."""
    mode = value or "background"
    if mode not in DETACH_MODES:
        choices = " or ".join(repr(m) for m in DETACH_MODES)
        raise HTTPException(400, f"The receipt's mode must be {choices}, not {mode!r}.")
    return mode


# --- the pages ---------------------------------------------------------------------------------

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; margin: 0; }
header { background: #2d3142; color: #fff; padding: .6rem 1.2rem; }
header a { color: #fff; margin-right: 1.2rem; text-decoration: none; }
header a.brand { font-weight: 600; }
main { max-width: 1060px; margin: 1.2rem auto; padding: 0 1.2rem; }
h1 { font-size: 1.6rem; margin: .4rem 0 .2rem; }
h2 { font-size: 1.15rem; margin: 1.4rem 0 .4rem; }
.muted { color: #666; }
.note { background: #f6f6f2; border-left: 3px solid #b9b38a; padding: .5rem .8rem; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid #e4e4e4; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.columns { display: grid; grid-template-columns: 1fr 1fr; gap: 1.4rem; }
.big { font-size: 2rem; font-weight: 600; font-variant-numeric: tabular-nums; }
.sequential .big { color: #a4493d; }
.wove .big { color: #2f7d4f; }
.timeline td { border: 0; padding: .15rem .4rem; font-size: .85rem; }
.timeline td.name { width: 7rem; white-space: nowrap; }
.timeline td.ms { width: 4.5rem; }
.track { position: relative; height: 14px; background: #f1f1f1; }
.bar { position: absolute; top: 2px; height: 10px; border-radius: 2px; }
.sequential .bar { background: #d1806f; }
.wove .bar { background: #5fae7e; }
.badge { display: inline-block; padding: 0 .45rem; border-radius: 3px; font-size: .85rem; }
.pending { background: #fff1c2; }
.sending { background: #dbe9ff; }
.sent { background: #d6f2df; }
.problem { background: #fdecea; border-left: 3px solid #c0392b; padding: .5rem .8rem; }
code { background: #f3f3f3; padding: 0 .2rem; }
"""


def layout(title: str, body: str, *, head: str = "") -> str:
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)} &middot; Wove example (Starlette)</title>{head}"
        f"<style>{STYLE}</style></head>\n<body>\n<header>"
        '<a class="brand" href="/">Bookshop</a><a href="/orders/">Orders</a>'
        '<a href="/wove/">Traces (/wove/)</a></header>\n'
        f"<main>\n{body}\n</main>\n</body></html>\n"
    )


def trace_url(request: Request) -> str:
    """This request's page among the trace pages (``WoveMiddleware`` gives the request its
    trace's id from the start; the trace is stored before the response is complete)."""
    trace_id = request.scope.get("wove.trace_id")
    return "/wove/" if trace_id is None else f"/wove/{trace_id}/"


def _euros(amount: Decimal | str | None) -> str:
    return "" if amount is None else f"&euro;{escape(str(amount))}"


def author_table(context: dict[str, Any]) -> str:
    author: Author = context["author"]
    rows = "".join(
        f"<tr><td>{row['book'].year}</td><td>{escape(row['book'].title)}</td>"
        f"<td>{escape(row['book'].genre)}</td><td class='num'>{row['rating'][0]}</td>"
        "<td class='num'>"
        + (f"{row['rating'][1]:.1f} / 5" if row["rating"][1] else "&ndash;")
        + f"</td><td class='num'>{_euros(row['price'])}</td></tr>"
        for row in context["rows"]
    )
    related = "".join(
        f"<li>{escape(book.title)} ({book.year}), by "
        f'<a href="/authors/{escape(book.author)}/">{escape(name)}</a></li>'
        for book, name in context["related"]
    )
    return (
        f"<h1>{escape(author.name)}</h1>"
        f'<p class="muted">Born {author.born}, {escape(author.country)}.</p>'
        "<table><tr><th>Year</th><th>Title</th><th>Genre</th><th class='num'>Reviews</th>"
        "<th class='num'>Rating</th><th class='num'>Price</th></tr>"
        f"{rows}<tr><td colspan='5'><strong>All {len(context['rows'])} books</strong></td>"
        f"<td class='num'><strong>{_euros(context['total'])}</strong></td></tr></table>"
        + (
            f"<h2>Readers of {escape(author.name)} also bought</h2><ul>{related}</ul>"
            if related
            else ""
        )
    )


def timeline_table(timeline: Timeline, scale_ms: float) -> str:
    scale = max(scale_ms, 1e-9)
    rows = []
    for row in timeline.rows:
        bars = "".join(
            f'<div class="bar" style="left: {100 * start / scale:.2f}%; '
            f'width: {max(100 * (end - start) / scale, 0.3):.2f}%" '
            f'title="{escape(row.name)}: {start:.0f}-{end:.0f} ms"></div>'
            for start, end in row.bars
        )
        calls = f' <span class="muted">&times;{len(row.bars)}</span>' if len(row.bars) > 1 else ""
        rows.append(
            f'<tr><td class="name"><code>{escape(row.name)}</code>{calls}</td>'
            f'<td><div class="track">{bars}</div></td>'
            f'<td class="ms num">{row.span_ms:.0f} ms</td></tr>'
        )
    return f'<table class="timeline">{"".join(rows)}</table>'


async def index(request: Request) -> Response:
    authors = await asyncio.to_thread(
        database().rows,
        "SELECT slug, name, COUNT(book.isbn) FROM author LEFT JOIN book ON book.author = slug "
        "GROUP BY slug ORDER BY name",
    )
    rows = "".join(
        f"<tr><td>{escape(name)}</td><td class='num'>{count}</td>"
        f'<td><a href="/authors/{escape(slug)}/">compare</a></td>'
        f'<td><a href="/authors/{escape(slug)}/sequential/">sequential</a></td>'
        f'<td><a href="/authors/{escape(slug)}/wove/">Wove</a></td></tr>'
        for slug, name, count in authors
    )
    body = (
        "<h1>The Wove example bookshop (Starlette)</h1>"
        "<p>Each author page runs a handful of slow steps: three database queries that take "
        "40&ndash;150&nbsp;ms, one call per book to a price service that answers in "
        "80&nbsp;ms, and one more query that needs the list of books. Done one after the "
        "other they add up; with Wove they run at the same time, each as soon as what it "
        "needs is ready. The same bookshop as the Django project's, on Starlette.</p>"
        "<table><tr><th>Author</th><th class='num'>Books</th><th>Side by side</th>"
        f"<th>Sequential</th><th>Wove</th></tr>{rows}</table>"
        "<h2>Also</h2><ul>"
        '<li><a href="/orders/">Orders</a>: placing one sends its receipt after the '
        "response, with <code>wove.contrib.starlette.detach()</code>.</li>"
        '<li><a href="/wove/">Traces</a>: every recent request\'s weaves as a '
        "waterfall.</li></ul>"
    )
    return HTMLResponse(layout("Bookshop", body))


async def author_compare(request: Request) -> Response:
    """Both versions, one after the other, and their timelines on one time scale."""
    slug = request.path_params["slug"]
    sequential, sequential_timeline = await author_page_sequential(slug)
    woven, wove_timeline = await author_page_wove(slug)
    wove_timeline = wove_timeline.ordered_like(sequential_timeline)
    scale = max(sequential_timeline.total_ms, wove_timeline.total_ms)
    speedup = sequential_timeline.total_ms / max(wove_timeline.total_ms, 1e-9)
    same = (
        "Both versions built exactly the same page:"
        if sequential == woven
        else "<strong>The two versions built different pages!</strong>"
    )
    body = (
        '<p class="muted">This page was built twice, one way after the other. Reload it to '
        "measure again.</p>"
        '<div class="columns"><section class="sequential"><h2>Sequential</h2>'
        f'<div class="big" id="sequential-ms">{sequential_timeline.total_ms:.0f} ms</div>'
        '<p class="muted">One step after the other: the sum of every step '
        f'(<a href="/authors/{escape(slug)}/sequential/">this version alone</a>).</p>'
        '</section><section class="wove"><h2>With Wove</h2>'
        f'<div class="big" id="wove-ms">{wove_timeline.total_ms:.0f} ms</div>'
        f'<p class="muted">{speedup:.1f}&times; faster: the longest chain of steps '
        f'(<a href="/authors/{escape(slug)}/wove/">this version alone</a>, '
        f'<a href="{escape(trace_url(request))}" id="trace-link">this request\'s trace</a>).'
        "</p></section></div>"
        '<div class="columns">'
        f'<section class="sequential">{timeline_table(sequential_timeline, scale)}</section>'
        f'<section class="wove">{timeline_table(wove_timeline, scale)}</section></div>'
        '<p class="note">Same scale for both timelines; hover a bar for its times. '
        "<code>prices</code> is one 80&nbsp;ms call to the price service per book: in a loop "
        'on the left, a mapped task (<code>@w.do("books")</code>) on the right. '
        "<code>author</code>, <code>books</code> and <code>ratings</code> need nothing but "
        "the author's slug, so Wove starts them together; <code>prices</code> and "
        f"<code>related</code> start when <code>books</code> is done. {same}</p>"
        + author_table(woven)
    )
    return HTMLResponse(layout(f"{woven['author'].name}: sequential and Wove", body))


async def author_sequential(request: Request) -> Response:
    context, timeline = await author_page_sequential(request.path_params["slug"])
    return _author_alone(request, context, timeline, "sequential")


async def author_wove(request: Request) -> Response:
    context, timeline = await author_page_wove(request.path_params["slug"])
    return _author_alone(request, context, timeline, "wove")


def _author_alone(
    request: Request, context: dict[str, Any], timeline: Timeline, version: str
) -> Response:
    slug = escape(context["author"].slug)
    if version == "wove":
        how = "with Wove"
        links = (
            f'<a href="/authors/{slug}/sequential/">The sequential version</a>, '
            f'<a href="{escape(trace_url(request))}" id="trace-link">this request\'s trace</a>'
            " (and the <code>Server-Timing</code> header in your browser's network panel)."
        )
    else:
        how = "sequentially"
        links = f'<a href="/authors/{slug}/wove/">The Wove version</a>.'
    body = (
        author_table(context)
        + f'<p class="note">Built {how} in <strong id="elapsed-ms">{timeline.total_ms:.0f} '
        f'ms</strong>. {links} <a href="/authors/{slug}/">Both, side by side</a>.</p>'
    )
    response = HTMLResponse(layout(f"{context['author'].name} ({version})", body))
    response.headers["X-Author-Page-Ms"] = f"{timeline.total_ms:.1f}"  # for curl -I
    return response


async def author_old_address(request: Request) -> Response:
    """``/authors/{slug}`` (``?sequential=1``): the address this app used to serve."""
    version = "sequential" if request.query_params.get("sequential") == "1" else "wove"
    return RedirectResponse(f"/authors/{request.path_params['slug']}/{version}/", 307)


# --- the order pages ----------------------------------------------------------------------------


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form (without python-multipart, which Starlette's needs)."""
    body = (await request.body()).decode("utf-8", errors="replace")
    return {key: values[-1] for key, values in parse_qs(body).items()}


def _book(isbn: str) -> tuple[str, str]:
    rows = database().rows(
        "SELECT book.title, author.name FROM book JOIN author ON author.slug = book.author "
        "WHERE isbn = ?",
        isbn,
    )
    if not rows:
        raise HTTPException(404, f"No book with ISBN {isbn!r}.")
    title, author = rows[0]
    return title, author


async def orders(request: Request) -> Response:
    if request.method == "POST":
        form = await _form(request)
        mode = checked_mode(form.get("mode"))
        email = form.get("email", "").strip()
        if "@" not in email:
            raise HTTPException(400, "An order needs the email address to send its receipt to.")
        isbn = form.get("book", "")
        await asyncio.to_thread(_book, isbn)  # 404 for an unknown book
        order_id = await place_order(isbn, email, mode)
        # Starts once this response (a redirect) has been sent to the browser.
        detach(send_receipt, order_id, mode=mode)
        return RedirectResponse(f"/orders/{order_id}/", 303)
    books, recent = await asyncio.gather(
        asyncio.to_thread(
            database().rows,
            "SELECT isbn, title, author.name FROM book JOIN author ON author.slug = book.author "
            "ORDER BY author.name, year",
        ),
        asyncio.to_thread(
            database().rows,
            'SELECT "order".id, title, email, price, mode, receipt_started_at, receipt_sent_at '
            'FROM "order" JOIN book USING (isbn) ORDER BY "order".id DESC LIMIT 10',
        ),
    )
    options = "".join(
        f'<option value="{escape(isbn)}">{escape(title)} ({escape(name)})</option>'
        for isbn, title, name in books
    )
    modes = "".join(
        f'<label><input type="radio" name="mode" value="{mode}"'
        f"{' checked' if mode == 'background' else ''}> {mode}</label> "
        for mode in DETACH_MODES
    )
    rows = (
        "".join(
            f'<tr><td><a href="/orders/{number}/">{number}</a></td><td>{escape(title)}</td>'
            f"<td>{escape(email)}</td><td class='num'>{_euros(price)}</td><td>{escape(mode)}</td>"
            f"<td>{_receipt_badge(started, sent)}</td></tr>"
            for number, title, email, price, mode, started, sent in recent
        )
        or '<tr><td colspan="6" class="muted">None yet.</td></tr>'
    )
    body = (
        "<h1>Orders</h1><p>Placing an order writes it and asks the price service at the same "
        "time, then answers at once. Sending the receipt takes a while, so the endpoint hands "
        "it to <code>detach(send_receipt, order_id, mode=...)</code>: it starts only after "
        "the response has been sent, in this process (<code>background</code>) or in a "
        "forked child process (<code>fork</code>).</p>"
        '<form method="post" action="/orders/"><table>'
        f'<tr><th><label for="book">Book</label></th><td><select name="book" id="book">'
        f"{options}</select></td></tr>"
        '<tr><th><label for="email">Email</label></th><td><input type="email" name="email" '
        'id="email" value="reader@example.com"></td></tr>'
        f"<tr><th>Mode</th><td>{modes}</td></tr></table>"
        '<p><button type="submit">Place the order</button></p></form>'
        "<h2>Recent orders</h2><table><tr><th>#</th><th>Book</th><th>Email</th>"
        f"<th class='num'>Price</th><th>Mode</th><th>Receipt</th></tr>{rows}</table>"
    )
    return HTMLResponse(layout("Orders", body))


def _receipt_badge(started: float | None, sent: float | None) -> str:
    if sent is not None:
        return '<span class="badge sent" id="receipt">receipt sent</span>'
    if started is not None:
        return '<span class="badge sending" id="receipt">sending receipt</span>'
    return '<span class="badge pending" id="receipt">receipt pending</span>'


async def order_page(request: Request) -> Response:
    number = request.path_params["order_id"]
    rows = await asyncio.to_thread(
        database().rows,
        "SELECT title, author.name, email, price, mode, placed_at, receipt_started_at, "
        'receipt_sent_at, receipt_pid FROM "order" JOIN book USING (isbn) '
        'JOIN author ON author.slug = book.author WHERE "order".id = ?',
        number,
    )
    if not rows:
        raise HTTPException(404, f"No order {number}.")
    title, author, email, price, mode, placed, started, sent, pid = rows[0]

    def after(moment: float | None) -> str:
        return "&ndash;" if moment is None else f"+{moment - placed:.3f} s"

    process = f", process {pid}; this server is process {os.getpid()}" if pid else ""
    waiting = "the customer never waited for it" if sent else "this page reloads every second"
    body = (
        f"<h1>Order {number} {_receipt_badge(started, sent)}</h1>"
        f"<p><em>{escape(title)}</em> by {escape(author)}, {_euros(price)}, for "
        f"{escape(email)}.</p><table>"
        f"<tr><th>Placed</th><td>{time.strftime('%H:%M:%S', time.localtime(placed))}</td>"
        '<td class="muted">the endpoint wrote the order and answered with a redirect to '
        "this page</td></tr>"
        f'<tr><th>Receipt started</th><td id="started-after">{after(started)}</td>'
        '<td class="muted">detached work starts once the response has been sent '
        f"({escape(mode)} mode{process})</td></tr>"
        f'<tr><th>Receipt sent</th><td id="sent-after">{after(sent)}</td>'
        f'<td class="muted">{waiting}</td></tr></table>'
        '<p class="note">The redirect that brought you here was sent before the receipt '
        'work began. The work has its own entry on the <a href="/wove/">trace page</a> '
        "(<code>DETACH send_receipt after POST /orders/</code>), next to the order's "
        '<code>POST /orders/</code>. <a href="/orders/">Place another order</a>.</p>'
    )
    head = "" if sent else '<meta http-equiv="refresh" content="1">'
    return HTMLResponse(layout(f"Order {number}", body, head=head))


async def order_old_address(request: Request) -> Response:
    """``POST /authors/{slug}/order?mode=...``: the author's first book, for the address
    this app used to serve (``make demo-starlette`` prints it)."""
    slug = request.path_params["slug"]
    mode = checked_mode(request.query_params.get("mode"))
    books = await asyncio.to_thread(
        database().rows, "SELECT isbn FROM book WHERE author = ? ORDER BY year LIMIT 1", slug
    )
    if not books:
        raise HTTPException(404, f"No author {slug!r}.")
    order_id = await place_order(books[0][0], "reader@example.com", mode)
    detach(send_receipt, order_id, mode=mode)
    return RedirectResponse(f"/orders/{order_id}/", 303)


async def problem(request: Request, exc: Exception) -> Response:
    """An HTTPException (an unknown author, a bad mode) as a page of the shop."""
    assert isinstance(exc, HTTPException)
    title = "Not found" if exc.status_code == 404 else "Bad request"
    body = (
        f'<h1>{title}</h1><p class="problem" id="problem">{escape(str(exc.detail))}</p>'
        '<p><a href="/">The authors</a> &middot; <a href="/orders/">Orders</a></p>'
    )
    return HTMLResponse(layout(title, body), status_code=exc.status_code, headers=exc.headers)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    await asyncio.to_thread(database)  # the database is made and seeded at startup
    yield


app = Starlette(
    debug=True,  # shows the trace pages at /wove/ and sends Server-Timing
    routes=[
        Route("/", index),
        Route("/authors/{slug}/", author_compare),
        Route("/authors/{slug}/sequential/", author_sequential),
        Route("/authors/{slug}/wove/", author_wove),
        Route("/authors/{slug}", author_old_address),
        Route("/authors/{slug}/order", order_old_address, methods=["POST"]),
        Route("/orders/", orders, methods=["GET", "POST"]),
        Route("/orders/{order_id:int}/", order_page),
    ],
    middleware=[Middleware(WoveMiddleware)],
    exception_handlers={HTTPException: problem},
    lifespan=lifespan,
)
