"""Settings of the benchmark's Django project (``bench/django``), for its child processes.

Only the Django workloads' own processes load these (``DJANGO_SETTINGS_MODULE``): the rest
of the benchmark runs without Django configured. Production-like: ``DEBUG`` off (so no
query log, and no ``Server-Timing`` header by default), Wove's default ``WOVE`` settings.

The environment chooses the rest:

- ``BENCH_DATABASE_URL=postgres://user@host:port/db``: PostgreSQL, through Django's
  connection pool (psycopg's) unless ``BENCH_DB_POOL=0``, which gives Django's default
  (``CONN_MAX_AGE = 0``: a new connection for each request, and for each Wove task on a
  pool thread). Without it, no database at all.
- ``BENCH_SERVER_TIMING=1``: ``WOVE = {"SERVER_TIMING": True}`` (the header is off by
  default with ``DEBUG`` off), to measure recording with the header on;
  ``BENCH_TRACE_SAMPLE_RATE=0.1``: ``WOVE["TRACE_SAMPLE_RATE"]``;
  ``BENCH_TRACE_UNSAMPLED_TIMINGS=0``: ``WOVE["TRACE_UNSAMPLED_TIMINGS"] = False``.
- ``BENCH_ASYNC_TASK_THREADS=0``: ``WOVE["ASYNC_TASK_THREADS"] = False`` (async tasks'
  async ORM calls on the request's one thread, as before they had threads of their own).
- ``BENCH_WOVE_MIDDLEWARE=0``: leave ``WoveMiddleware`` out of ``MIDDLEWARE`` (the
  servers of the overhead comparison; in-process, the two handlers are built with
  ``override_settings`` instead).
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import unquote, urlsplit

SECRET_KEY = "wove-bench-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
USE_TZ = True
ROOT_URLCONF = "bench.django.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# (contenttypes: a model for the async view's raw queries, which read no table)
INSTALLED_APPS = ["django.contrib.contenttypes", "wove.contrib.django"]

#: What every request goes through besides Wove's middleware: Django's usual first two.
BASE_MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]
WOVE_MIDDLEWARE = "wove.contrib.django.middleware.WoveMiddleware"

MIDDLEWARE = (
    BASE_MIDDLEWARE
    if os.environ.get("BENCH_WOVE_MIDDLEWARE") == "0"
    else [WOVE_MIDDLEWARE, *BASE_MIDDLEWARE]
)


def _postgres(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    pooled = os.environ.get("BENCH_DB_POOL", "1") != "0"
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "127.0.0.1",
        "PORT": str(parts.port or 5432),
        # Enough connections for every task of a weave at once, kept between requests.
        "OPTIONS": {"pool": {"min_size": 2, "max_size": 20, "timeout": 10}} if pooled else {},
    }


_url = os.environ.get("BENCH_DATABASE_URL")
_sqlite = os.environ.get("BENCH_SQLITE")  # a file: the fork measurement without PostgreSQL
DATABASES: dict[str, Any] = {"default": _postgres(_url)} if _url else {}
if _sqlite and not _url:
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": _sqlite}}

WOVE: dict[str, Any] = {}
if os.environ.get("BENCH_SERVER_TIMING") == "1":
    WOVE["SERVER_TIMING"] = True
if os.environ.get("BENCH_TRACE_SAMPLE_RATE"):
    WOVE["TRACE_SAMPLE_RATE"] = float(os.environ["BENCH_TRACE_SAMPLE_RATE"])
if os.environ.get("BENCH_ASYNC_TASK_THREADS") == "0":
    WOVE["ASYNC_TASK_THREADS"] = False
if os.environ.get("BENCH_TRACE_UNSAMPLED_TIMINGS") == "0":
    WOVE["TRACE_UNSAMPLED_TIMINGS"] = False
if os.environ.get("BENCH_FORK_START_TIMEOUT"):
    WOVE["FORK_START_TIMEOUT"] = float(os.environ["BENCH_FORK_START_TIMEOUT"])

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "wove": {"handlers": ["console"], "level": "WARNING"},
        # The fork measurement's noise: logging's locks, taken by many threads at once.
        "bench.forks": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}
