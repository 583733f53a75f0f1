"""``manage.py seed``: a few authors, their books and readers' reviews. Safe to run again."""

from __future__ import annotations

import random
from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from catalog.models import Author, Book, Review

# slug: (name, born, country, [(title, genre, year), ...])
CATALOG: dict[str, tuple[str, int, str, list[tuple[str, str, int]]]] = {
    "jane-austen": (
        "Jane Austen",
        1775,
        "England",
        [
            ("Sense and Sensibility", "romance", 1811),
            ("Pride and Prejudice", "romance", 1813),
            ("Mansfield Park", "romance", 1814),
            ("Emma", "romance", 1815),
            ("Persuasion", "romance", 1817),
        ],
    ),
    "mary-shelley": (
        "Mary Shelley",
        1797,
        "England",
        [
            ("Frankenstein", "gothic", 1818),
            ("Valperga", "historical", 1823),
            ("The Last Man", "science fiction", 1826),
            ("Lodore", "romance", 1835),
        ],
    ),
    "charles-dickens": (
        "Charles Dickens",
        1812,
        "England",
        [
            ("Oliver Twist", "social", 1838),
            ("A Christmas Carol", "gothic", 1843),
            ("David Copperfield", "social", 1850),
            ("Bleak House", "social", 1853),
            ("A Tale of Two Cities", "historical", 1859),
            ("Great Expectations", "social", 1861),
        ],
    ),
    "leo-tolstoy": (
        "Leo Tolstoy",
        1828,
        "Russia",
        [
            ("War and Peace", "historical", 1869),
            ("Anna Karenina", "romance", 1878),
            ("The Death of Ivan Ilyich", "social", 1886),
            ("Resurrection", "social", 1899),
        ],
    ),
    "h-g-wells": (
        "H. G. Wells",
        1866,
        "England",
        [
            ("The Time Machine", "science fiction", 1895),
            ("The Island of Doctor Moreau", "science fiction", 1896),
            ("The Invisible Man", "science fiction", 1897),
            ("The War of the Worlds", "science fiction", 1898),
        ],
    ),
    "virginia-woolf": (
        "Virginia Woolf",
        1882,
        "England",
        [
            ("Mrs Dalloway", "modernist", 1925),
            ("To the Lighthouse", "modernist", 1927),
            ("Orlando", "modernist", 1928),
            ("A Room of One's Own", "essays", 1929),
            ("The Waves", "modernist", 1931),
        ],
    ),
}


def isbn_of(number: int) -> str:
    """A valid-looking ISBN-13 (with its check digit) made from a running number."""
    digits = f"978{number:09d}"
    check = (10 - sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(digits)) % 10) % 10
    return f"{digits}{check}"


class Command(BaseCommand):
    help = "Create the demo's authors, books and reviews (only what is missing)."

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        created = {"authors": 0, "books": 0, "reviews": 0}
        number = 0
        for slug, (name, born, country, books) in CATALOG.items():
            author, new = Author.objects.update_or_create(
                slug=slug, defaults={"name": name, "born": born, "country": country}
            )
            created["authors"] += new
            for title, genre, year in books:
                number += 1
                isbn = isbn_of(number)
                book, new = Book.objects.update_or_create(
                    isbn=isbn,
                    defaults={"author": author, "title": title, "genre": genre, "year": year},
                )
                created["books"] += new
                if not book.reviews.exists():
                    created["reviews"] += len(self.review(book))
        totals = (Author.objects.count(), Book.objects.count(), Review.objects.count())
        added = ", ".join(f"{count} {what}" for what, count in created.items() if count)
        self.stdout.write(
            f"Seeded the bookshop: {totals[0]} authors, {totals[1]} books, {totals[2]} reviews "
            f"({'added ' + added if added else 'all there already'})."
        )

    @staticmethod
    def review(book: Book) -> list[Review]:
        """Between 40 and 400 reviews, the same ones on every machine."""
        rng = random.Random(book.isbn)
        taste = rng.uniform(3.0, 4.6)
        reviews = [
            Review(
                book=book,
                reader=f"reader{rng.randrange(10_000)}",
                rating=min(5, max(1, round(rng.gauss(taste, 0.9)))),
            )
            for _ in range(rng.randrange(40, 400))
        ]
        return Review.objects.bulk_create(reviews)
