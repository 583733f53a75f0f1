"""The example project (example_project/, what `make demo` serves) keeps working.

Its ``check``, ``migrate`` and ``seed`` run against a temporary SQLite file, then a
script fetches every page and places an order in each detach mode with Django's test
client. All of it runs in subprocesses, because this pytest session has no Django
configured (tests/django is the other session).

The royalty page sends one task to Celery (``make demo-worker``): it is fetched with a
real Redis (tests/celery/redisserver.py) and a real worker of the bookshop's Celery app
(tests/celery/worker.py), both on the same temporary database and stopped by PID
afterwards; then with a Redis but no worker, and with no Redis at all, when it must
answer at once with the ``make demo-worker`` hint.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "celery"))
from redisserver import RedisServer, free_port, start_redis
from worker import start_worker

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
# "this request's trace" is this request's page, which links back to the list and lists
# each task's SQL statements (with their parameters: DEBUG is on).
own = re.search(r'<a href="(/wove/[0-9a-f]+/)" id="trace-link">', html)
assert own is not None, html
trace_page = client.get(own.group(1)).content.decode()
assert "GET /authors/charles-dickens/" in trace_page, trace_page
assert '<p class="nav"><a href="/wove/">' in trace_page, trace_page
assert "<code>ratings</code> · 1 statement ·" in trace_page, trace_page
assert 'FROM &quot;catalog_review&quot;' in trace_page, trace_page
assert "&#x27;charles-dickens&#x27;" in trace_page, trace_page

for version in ("sequential", "wove"):
    alone = client.get(f"/authors/jane-austen/{version}/")
    assert alone.status_code == 200, (version, alone.status_code)
    assert "Persuasion" in alone.content.decode(), alone.content
    if version == "wove":
        own = re.search(r'<a href="(/wove/[0-9a-f]+/)" id="trace-link">', alone.content.decode())
        assert own is not None, alone.content
        assert b"GET /authors/jane-austen/wove/" in client.get(own.group(1)).content
timing = client.get("/authors/jane-austen/wove/")["Server-Timing"]
assert "wove.prices" in timing and "wove.ratings" in timing, timing
assert client.get("/authors/nobody/wove/").status_code == 404

form = client.get("/orders/")
assert form.status_code == 200, form.status_code
token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.content.decode())
assert token is not None, form.content
book = Book.objects.get(title="Emma")
placed = []
for mode in ("background", "fork"):
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
detached = [t for t in traces if t["method"] == "DETACH"]
assert detached, traces
# Labelled with the view's detach() call (catalog/views.py), not a file of wove/contrib.
for trace in detached:
    for record in trace["records"]:
        assert re.search(r"catalog/views\.py:\d+$", record["weave"]), record
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


# --- the royalty page: one task on a Celery worker ------------------------------------------

needs_celery = pytest.mark.skipif(
    not all(importlib.util.find_spec(name) for name in ("celery", "redis")),
    reason="needs Celery and redis-py (requirements/dev.txt, or the celery extra)",
)

ROYALTIES = r"""
import json
import os
import time

import django

django.setup()

from django.test import Client

client = Client()
started = time.monotonic()
page = client.get("/authors/charles-dickens/royalties/")
elapsed = time.monotonic() - started
html = page.content.decode()
print(json.dumps({"status": page.status_code, "seconds": elapsed, "html": html,
                  "pid": os.getpid()}))
"""


def royalty_page(env: dict[str, str]) -> dict[str, Any]:
    """The royalty page fetched by a new process: its status, time, HTML and pid."""
    answer: dict[str, Any] = json.loads(manage("-c", ROYALTIES, env=env).splitlines()[-1])
    return answer


@pytest.fixture(scope="module")
def seeded_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a bookshop on a migrated, seeded temporary SQLite file."""
    database = tmp_path_factory.mktemp("bookshop") / "db.sqlite3"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bookshop.settings",
        "DATABASE_URL": f"sqlite:///{database}",
    }
    manage("manage.py", "migrate", "--noinput", "--verbosity", "0", env=env)
    manage("manage.py", "seed", env=env)
    return env


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = start_redis(tmp_path / "redis")
    try:
        yield server
    finally:
        server.stop()


# What the worker is given, as the web process is: the database, the broker.
WORKER_SETTINGS = (
    "DJANGO_SETTINGS_MODULE",
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND",
)


def with_broker(env: dict[str, str], url: str, timeout: float) -> dict[str, str]:
    return {
        **env,
        "CELERY_BROKER_URL": url,
        "CELERY_RESULT_BACKEND": url,
        "DEMO_REMOTE_TIMEOUT": str(timeout),
    }


@needs_celery
def test_the_royalty_page_runs_its_statement_on_a_real_celery_worker(
    seeded_env: dict[str, str],
    redis_server: RedisServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = with_broker(seeded_env, redis_server.url, timeout=30)
    # `celery -A bookshop worker`, as `make demo-worker` runs it: start_worker puts the
    # caller's PYTHONPATH after its own, so the bookshop is importable in the worker.
    monkeypatch.setenv("PYTHONPATH", str(PROJECT))
    worker = start_worker(
        "bookshop",
        broker_url=redis_server.url,
        env_extra={key: env[key] for key in WORKER_SETTINGS},
        directory=tmp_path / "worker",
        concurrency=2,
    )
    try:
        assert "wove.run" in worker.log_text()  # registered by include=[...]
        answer = royalty_page(env)
        assert answer["status"] == 200, answer["html"]
        html = answer["html"]
        worker_pid = int(html.split('id="worker-pid">', 1)[1].split("<", 1)[0])
        server_pid = int(html.split('id="server-pid">', 1)[1].split("<", 1)[0])
        assert server_pid == answer["pid"]
        assert worker_pid != server_pid
        assert worker_pid in worker.group_pids()  # a process of the worker's pool
        assert "Great Expectations" in html, html
        assert 'id="royalty-total">&euro;' in html, html
        # Celery monitoring names each remote call after the user's task (the message's
        # shadow name), while the registered task stays wove.run.
        assert "Task wove:catalog.views." in worker.log_text(), worker.log_text()
    finally:
        worker.stop()
    assert not worker.group_pids()


@needs_celery
def test_the_royalty_page_without_a_worker_times_out_with_the_worker_hint(
    seeded_env: dict[str, str], redis_server: RedisServer
) -> None:
    answer = royalty_page(with_broker(seeded_env, redis_server.url, timeout=1))
    assert answer["status"] == 503, answer["html"]
    assert answer["seconds"] < 10, answer["seconds"]
    assert "No Celery worker answered within 1 s" in answer["html"], answer["html"]
    assert "<code>make demo-worker</code>" in answer["html"], answer["html"]


@needs_celery
def test_the_royalty_page_without_a_broker_answers_at_once_with_the_worker_hint(
    seeded_env: dict[str, str],
) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    answer = royalty_page(with_broker(seeded_env, nowhere, timeout=30))
    assert answer["status"] == 503, answer["html"]
    assert answer["seconds"] < 5, answer["seconds"]  # not the 30 s timeout
    assert "cannot be reached" in answer["html"], answer["html"]
    assert "<code>make demo-worker</code>" in answer["html"], answer["html"]


# Run first: Celery, kombu, billiard and redis-py cannot be found, as after
# `pip install "wove[django]"` alone.
WITHOUT_CELERY = r"""
import sys

HIDDEN = ("celery", "kombu", "billiard", "redis")


class Hide:
    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            return None
        return self.finder.find_spec(name, path, target)


sys.meta_path[:] = [Hide(finder) for finder in sys.meta_path]
"""

ROYALTIES_WITHOUT_CELERY = r"""
assert not [name for name in sys.modules if name.partition(".")[0] in HIDDEN], sys.modules
page = client.get("/authors/jane-austen/royalties/")
assert page.status_code == 503, page.status_code
assert b"Celery is not installed here" in page.content, page.content
assert b"<code>make demo-worker</code>" in page.content, page.content
print("royalties hint ok")
"""


def test_the_bookshop_serves_every_page_without_celery_installed(
    seeded_env: dict[str, str],
) -> None:
    env = {**seeded_env, "DEMO_RECEIPT_SECONDS": "0.05"}
    out = manage("-c", WITHOUT_CELERY + PAGES + ROYALTIES_WITHOUT_CELERY, env=env)
    assert "pages ok" in out
    assert "royalties hint ok" in out
