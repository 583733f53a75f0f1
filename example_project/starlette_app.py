"""The bookshop on Starlette: the Django project's authors and books, served by an ASGI
app with ``wove.contrib.starlette``. ``make demo-starlette`` serves it with uvicorn.

- ``/``: the authors, with links;
- ``/authors/{slug}``: the author page built with Wove (``async with weave()``): the
  author, their books and the ratings are read at once, each query a sync task on Wove's
  thread pool (SQLite, one connection per task), and each book's price comes from an
  async task per book (``@w.do("books")``); ``?sequential=1`` does the same steps one
  after the other, for comparison (``X-Elapsed-Ms`` says how long each took);
- ``POST /authors/{slug}/order`` (``?mode=background`` or ``fork``): detaches the receipt,
  which runs after the response has been sent;
- ``/wove/``: the trace pages (the app runs with ``debug=True``).

The data is the Django project's, read from its seed command's source (so it lives in
one place and this app needs no Django), into a SQLite file made at startup. Queries
and price lookups are given a realistic cost: SQLite waits ``QUERY_SECONDS`` in each
query (a SQL function calling ``time.sleep``), a price lookup ``PRICE_SECONDS``.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import logging
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from html import escape
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from wove import weave
from wove.contrib.starlette import WoveMiddleware, detach

QUERY_SECONDS = 0.04
PRICE_SECONDS = 0.08
RECEIPT_SECONDS = 1.0
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


class Database:
    """A SQLite file; each call opens its own connection (each task runs on its own
    thread), whose queries wait ``QUERY_SECONDS`` as a networked database would."""

    def __init__(self, path: str) -> None:
        self.path = path
        with self.connect() as db:
            db.executescript(
                "CREATE TABLE IF NOT EXISTS author (slug TEXT PRIMARY KEY, name TEXT, "
                "born INT, country TEXT);"
                "CREATE TABLE IF NOT EXISTS book (isbn TEXT PRIMARY KEY, author TEXT, "
                "title TEXT, genre TEXT, year INT);"
                "CREATE TABLE IF NOT EXISTS receipt (id INTEGER PRIMARY KEY, author TEXT, "
                "mode TEXT, pid INT, ordered_at REAL, started_at REAL, sent_at REAL);"
            )
            number = 0
            for slug, (name, born, country, books) in catalog().items():
                db.execute(
                    "INSERT OR REPLACE INTO author VALUES (?, ?, ?, ?)", (slug, name, born, country)
                )
                for title, genre, year in books:
                    number += 1
                    db.execute(
                        "INSERT OR REPLACE INTO book VALUES (?, ?, ?, ?, ?)",
                        (f"978{number:010d}", slug, title, genre, year),
                    )

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10)
        db.create_function("pause", 0, lambda: time.sleep(QUERY_SECONDS))
        try:
            with db:
                yield db
        finally:
            db.close()

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with self.connect() as db:
            db.execute("SELECT pause()")  # the database's own wait, as a networked one has
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


# --- the steps of the author page ------------------------------------------------------------


def author_named(slug: str) -> dict[str, Any]:
    rows = database().rows("SELECT name, born, country FROM author WHERE slug = ?", slug)
    if not rows:
        raise LookupError(slug)
    name, born, country = rows[0]
    return {"slug": slug, "name": name, "born": born, "country": country}


def books_by(slug: str) -> list[dict[str, Any]]:
    rows = database().rows(
        "SELECT isbn, title, year FROM book WHERE author = ? ORDER BY year", slug
    )
    return [{"isbn": isbn, "title": title, "year": year} for isbn, title, year in rows]


def genres_of(slug: str) -> list[str]:
    rows = database().rows("SELECT DISTINCT genre FROM book WHERE author = ?", slug)
    return sorted(genre for (genre,) in rows)


async def price_of(book: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(PRICE_SECONDS)  # an async HTTP call to the price service
    return {**book, "price": round(5 + int(book["isbn"][-3:]) % 20 + 0.99, 2)}


async def page_wove(slug: str) -> dict[str, Any]:
    async with weave(slug=slug) as w:

        @w.do
        def author(slug: str) -> dict[str, Any]:
            return author_named(slug)

        @w.do
        def books(slug: str) -> list[dict[str, Any]]:
            return books_by(slug)

        @w.do
        def genres(slug: str) -> list[str]:
            return genres_of(slug)

        @w.do("books")
        async def priced(book: dict[str, Any]) -> dict[str, Any]:
            return await price_of(book)

        @w.do
        def page(author: dict[str, Any], priced: list[Any], genres: list[str]) -> dict[str, Any]:
            return {**author, "books": priced, "genres": genres}

    final: dict[str, Any] = w.result.final
    return final


async def page_sequential(slug: str) -> dict[str, Any]:
    author = await asyncio.to_thread(author_named, slug)
    books = await asyncio.to_thread(books_by, slug)
    genres = await asyncio.to_thread(genres_of, slug)
    priced = [await price_of(book) for book in books]
    return {**author, "books": priced, "genres": genres}


# --- work after the response -----------------------------------------------------------------


def send_receipt(receipt_id: int) -> None:
    """Slow, and the customer need not wait for it: detached after the response."""
    with database().connect() as db:
        db.execute(
            "UPDATE receipt SET started_at = ?, pid = ? WHERE id = ?",
            (time.time(), os.getpid(), receipt_id),
        )
    time.sleep(RECEIPT_SECONDS)  # render the PDF, talk to the mail server
    with database().connect() as db:
        db.execute("UPDATE receipt SET sent_at = ? WHERE id = ?", (time.time(), receipt_id))


# --- the endpoints ---------------------------------------------------------------------------


async def index(request: Request) -> Response:
    authors = await asyncio.to_thread(
        lambda: database().rows("SELECT slug, name FROM author ORDER BY born")
    )
    items = "".join(
        f'<li><a href="/authors/{escape(slug)}">{escape(name)}</a></li>' for slug, name in authors
    )
    return HTMLResponse(
        f"<!doctype html><title>Bookshop</title><h1>Bookshop (Starlette)</h1><ul>{items}</ul>"
        '<p><a href="/wove/">Wove traces</a></p>'
    )


async def author_page(request: Request) -> Response:
    slug = request.path_params["slug"]
    sequential = request.query_params.get("sequential") == "1"
    start = time.perf_counter()
    try:
        page = await (page_sequential(slug) if sequential else page_wove(slug))
    except LookupError:
        return JSONResponse({"error": f"no author {slug!r}"}, 404)
    elapsed = (time.perf_counter() - start) * 1000
    return JSONResponse(page, headers={"X-Elapsed-Ms": f"{elapsed:.0f}"})


async def order(request: Request) -> Response:
    slug = request.path_params["slug"]
    mode: Any = request.query_params.get("mode", "background")

    def create() -> int:
        with database().connect() as db:
            cursor = db.execute(
                "INSERT INTO receipt (author, mode, ordered_at) VALUES (?, ?, ?)",
                (slug, mode, time.time()),
            )
            assert cursor.lastrowid is not None
            return cursor.lastrowid

    receipt_id = await asyncio.to_thread(create)
    detach(send_receipt, receipt_id, mode=mode)
    return JSONResponse({"receipt": receipt_id, "mode": mode, "at": time.time()})


async def receipt(request: Request) -> Response:
    receipt_id = int(request.path_params["receipt_id"])

    def read() -> list[tuple[Any, ...]]:
        with database().connect() as db:
            return db.execute(
                "SELECT mode, pid, ordered_at, started_at, sent_at FROM receipt WHERE id = ?",
                (receipt_id,),
            ).fetchall()

    rows = await asyncio.to_thread(read)
    if not rows:
        return JSONResponse({"error": "no such receipt"}, 404)
    mode, pid, ordered_at, started_at, sent_at = rows[0]
    return JSONResponse(
        {
            "mode": mode,
            "pid": pid,
            "server_pid": os.getpid(),
            "ordered_at": ordered_at,
            "started_at": started_at,
            "sent_at": sent_at,
        }
    )


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    await asyncio.to_thread(database)  # the database is made and seeded at startup
    yield


app = Starlette(
    debug=True,  # shows the trace pages at /wove/ and sends Server-Timing
    routes=[
        Route("/", index),
        Route("/authors/{slug}", author_page),
        Route("/authors/{slug}/order", order, methods=["POST"]),
        Route("/receipts/{receipt_id:int}", receipt),
    ],
    middleware=[Middleware(WoveMiddleware)],
    lifespan=lifespan,
)
