"""The slow parts of the author page, shared by the sequential and the Wove version.

Each one waits on something outside Python: the database (made to take a realistic
time with :class:`~catalog.models.QueryTime`) or the price service over HTTP. None
needs the others' results except where its parameters say so, which is what lets Wove
run them at the same time.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db.models import Avg, Count
from django.http import Http404

from .models import Author, Book, QueryTime, Review
from .prices import price_of

__all__ = [
    "Rating",
    "author_named",
    "books_by",
    "page_context",
    "price_of",
    "ratings_for",
    "related_books",
]

# Seconds the database spends on each query, as if it were busier and further away.
AUTHOR_QUERY = 0.04
BOOKS_QUERY = 0.06
RATINGS_QUERY = 0.15  # a report over every review of every book
RELATED_QUERY = 0.08


@dataclass(frozen=True, slots=True)
class Rating:
    reviews: int
    average: float | None


def author_named(slug: str) -> Author:
    author = Author.objects.filter(QueryTime(AUTHOR_QUERY), slug=slug).first()
    if author is None:
        raise Http404(f"no author {slug!r}")
    return author


def books_by(slug: str) -> list[Book]:
    return list(Book.objects.filter(QueryTime(BOOKS_QUERY), author__slug=slug))


def ratings_for(slug: str) -> dict[int, Rating]:
    """Review count and average rating of each of the author's books, by book id."""
    rows = (
        Review.objects.filter(QueryTime(RATINGS_QUERY), book__author__slug=slug)
        .values("book_id")
        .annotate(reviews=Count("id"), average=Avg("rating"))
        .order_by()
    )
    return {row["book_id"]: Rating(row["reviews"], row["average"]) for row in rows}


def related_books(books: list[Book]) -> list[Book]:
    """Other authors' books in the same genres: 'readers of this author also bought'."""
    genres = {book.genre for book in books}
    authors = {book.author_id for book in books}
    related = (
        Book.objects.filter(QueryTime(RELATED_QUERY), genre__in=genres)
        .exclude(author_id__in=authors)
        .select_related("author")
        .order_by("-year")[:4]
    )
    return list(related)


def page_context(
    author: Author,
    books: list[Book],
    prices: list[Decimal],
    ratings: dict[int, Rating],
    related: list[Book],
) -> dict[str, Any]:
    """What the template shows: one row per book with its price and rating."""
    rows = [
        {"book": book, "price": price, "rating": ratings.get(book.pk, Rating(0, None))}
        for book, price in zip(books, prices, strict=True)
    ]
    return {
        "author": author,
        "rows": rows,
        "related": related,
        "total": sum(prices, Decimal("0.00")),
    }
