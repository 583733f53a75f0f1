"""The example project (example_project/, what `make demo` serves) keeps working.

Its ``check``, ``migrate`` and ``seed`` run against a temporary SQLite file, then a
script fetches every page and places an order in each detach mode with Django's test
client. All of it runs in subprocesses, because this pytest session has no Django
configured (tests/django is the other session).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("django") is None, reason="needs Django"),
]

PROJECT = Path(__file__).resolve().parents[1] / "example_project"

PAGES = r"""
import json
import re
import time

import django

django.setup()

from django.test import Client

from catalog.models import Book, Order

client = Client(enforce_csrf_checks=True)

index = client.get("/")
assert index.status_code == 200, index.status_code
assert index.content.count(b"/sequential/") == 6, index.content

compare = client.get("/authors/charles-dickens/")
assert compare.status_code == 200, compare.status_code
html = compare.content.decode()
timings = dict(re.findall(r'id="(sequential|wove)-ms">(\d+) ms', html))
assert set(timings) == {"sequential", "wove"}, html
assert int(timings["wove"]) * 2 < int(timings["sequential"]), timings
assert "Both versions built exactly the same page" in html, html
assert "Great Expectations" in html and "&euro;" in html, html

for version in ("sequential", "wove"):
    alone = client.get(f"/authors/jane-austen/{version}/")
    assert alone.status_code == 200, (version, alone.status_code)
    assert "Persuasion" in alone.content.decode(), alone.content
timing = client.get("/authors/jane-austen/wove/")["Server-Timing"]
assert "wove.prices" in timing and "wove.ratings" in timing, timing
assert client.get("/authors/nobody/wove/").status_code == 404

form = client.get("/orders/")
assert form.status_code == 200, form.status_code
token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.content.decode())
assert token is not None, form.content
book = Book.objects.get(title="Emma")
placed = []
for mode in ("thread", "fork"):
    data = {"csrfmiddlewaretoken": token.group(1), "book": book.pk, "email": "a@example.com"}
    answer = client.post("/orders/", {**data, "mode": mode})
    assert answer.status_code == 302, (mode, answer.status_code, answer.content)
    placed.append(int(answer["Location"].rstrip("/").rsplit("/", 1)[1]))

deadline = time.monotonic() + 30
while Order.objects.filter(pk__in=placed, receipt_sent_at=None).exists():
    assert time.monotonic() < deadline, list(Order.objects.values())
    time.sleep(0.05)
for order in Order.objects.filter(pk__in=placed):
    assert order.price is not None, order
    assert order.receipt_started_at >= order.placed_at, order
    page = client.get(f"/orders/{order.pk}/")
    assert page.status_code == 200 and b"receipt sent" in page.content, page.content

traces = json.loads(client.get("/wove/traces.json").content)["traces"]
assert any(t["method"] == "DETACH" for t in traces), traces
assert client.get("/wove/").status_code == 200
print("pages ok", timings)
"""


def manage(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-W", "error", *args],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_example_project_checks_migrates_seeds_and_serves(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bookshop.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "DEMO_RECEIPT_SECONDS": "0.05",
    }
    manage("manage.py", "check", "--fail-level", "WARNING", env=env)
    manage("manage.py", "migrate", "--noinput", "--verbosity", "0", env=env)
    assert "added 6 authors, 28 books" in manage("manage.py", "seed", env=env)
    assert "all there already" in manage("manage.py", "seed", env=env)
    assert "pages ok" in manage("-c", PAGES, env=env)
