"""Authors, their books, readers' reviews, and orders whose receipt is sent after the response."""

from __future__ import annotations

from typing import Any

from django.db import NotSupportedError, models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.sql.compiler import SQLCompiler


class Author(models.Model):
    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=100)
    born = models.PositiveIntegerField()
    country = models.CharField(max_length=60)

    class Meta:
        ordering = ("name",)

    def __str__(self) -> str:
        return self.name


class Book(models.Model):
    author = models.ForeignKey(Author, on_delete=models.CASCADE, related_name="books")
    isbn = models.CharField(max_length=13, unique=True)
    title = models.CharField(max_length=200)
    genre = models.CharField(max_length=40)
    year = models.PositiveIntegerField()

    class Meta:
        ordering = ("year", "title")

    def __str__(self) -> str:
        return self.title


class Review(models.Model):
    book = models.ForeignKey(Book, on_delete=models.CASCADE, related_name="reviews")
    reader = models.CharField(max_length=60)
    rating = models.PositiveSmallIntegerField()

    def __str__(self) -> str:
        return f"{self.rating}/5 for {self.book_id} by {self.reader}"


class Order(models.Model):
    DETACH_MODES = (("background", "background"), ("fork", "fork"))

    book = models.ForeignKey(Book, on_delete=models.CASCADE, related_name="orders")
    email = models.EmailField()
    mode = models.CharField(max_length=10, choices=DETACH_MODES, default="background")
    price = models.DecimalField(max_digits=7, decimal_places=2, null=True, blank=True)
    placed_at = models.DateTimeField(auto_now_add=True)
    # Filled in by the detached work (catalog.receipts.send_receipt), after the response.
    receipt_started_at = models.DateTimeField(null=True, blank=True)
    receipt_sent_at = models.DateTimeField(null=True, blank=True)
    receipt_pid = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ("-placed_at",)

    def __str__(self) -> str:
        return f"order {self.pk}: {self.book_id} for {self.email}"


class QueryTime(models.Func):
    """A condition that is always true and makes the database spend ``seconds`` on the query.

    It stands for what makes real queries slow (many rows to read, a database server in
    another data centre), so that the demo's queries take a realistic time on a laptop:
    ``Book.objects.filter(QueryTime(0.05), author=...)``. The database itself waits, once
    per query: on PostgreSQL with ``pg_sleep``, on SQLite with ``demo_query_time``, a
    function registered on each new connection (catalog/apps.py). Either way the time
    shows up as query time, in Wove's trace as in any other SQL profiler.
    """

    output_field = models.BooleanField()
    conditional = True

    def __init__(self, seconds: float) -> None:
        super().__init__(models.Value(float(seconds), output_field=models.FloatField()))

    def as_sql(
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra: Any
    ) -> tuple[str, Any]:
        raise NotSupportedError(
            f"QueryTime supports SQLite and PostgreSQL, not {connection.vendor}"
        )

    def as_sqlite(
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra: Any
    ) -> tuple[str, Any]:
        # Registered as deterministic, so SQLite calls it once per query, not per row.
        return super().as_sql(
            compiler, connection, template="demo_query_time(%(expressions)s)", **extra
        )

    def as_postgresql(
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra: Any
    ) -> tuple[str, Any]:
        # An uncorrelated subquery: PostgreSQL runs it once per query, not per row.
        return super().as_sql(
            compiler, connection, template="(SELECT true FROM pg_sleep(%(expressions)s))", **extra
        )
