"""Settings of the example bookshop: a demo, so DEBUG is on and the secret key is public.

The database is a SQLite file next to manage.py (``db.sqlite3``, made by ``migrate``)
unless ``DATABASE_URL`` names another one:

- ``postgres://user:password@host:5432/name`` (or ``postgresql://``), with Django's
  connection pool (psycopg's, in ``requirements/demo.txt``);
- ``sqlite:///relative/path.sqlite3`` or ``sqlite:////absolute/path.sqlite3``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

from bookshop import CELERY_INSTALLED as _celery_installed  # not a setting

BASE_DIR = Path(__file__).resolve().parent.parent

# It also signs the envelopes of the tasks sent to Celery (the KEYS of WOVE's remote
# environments default to SECRET_KEY), which needs 32 bytes or more.
SECRET_KEY = "wove-example-project-not-secret-public-demo-key"
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]", "testserver"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "bookshop.urls"
WSGI_APPLICATION = "bookshop.wsgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "wove.contrib.django",
    "catalog",
]

MIDDLEWARE = [
    # First, so every weave run below it is traced and detach() works in every view.
    "wove.contrib.django.middleware.WoveMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]

# Wove's settings (every key is optional, see docs/django.md): Server-Timing headers
# (visible in the browser's network panel), and the trace pages at /wove/.
WOVE = {
    "SERVER_TIMING": True,
    "TRACE_STORE_SIZE": 50,
    "DETACH_MODE": "background",
}

# Celery (bookshop/celery.py), only when it and its Redis client are installed (the
# requirements/demo.txt, or `pip install "wove[celery]" "celery[redis]"`): `make demo-worker`
# starts a Redis on 127.0.0.1:6390 and a worker, and the royalty page
# (/authors/<slug>/royalties/) sends one task to it. `make demo` needs none of it.
if _celery_installed:
    # The same URL for `make demo` and `make demo-worker`; set CELERY_BROKER_URL for
    # both to use another Redis.
    CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6390/0")
    CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND", CELERY_BROKER_URL)
    CELERY_TASK_SERIALIZER = "json"  # Wove's envelopes are JSON objects
    CELERY_RESULT_SERIALIZER = "json"
    CELERY_ACCEPT_CONTENT = ["json"]
    CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True  # the worker waits for its Redis
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
    CELERY_WORKER_PREFETCH_MULTIPLIER = 1
    # The remote environment "celery": @w.do(env="celery") sends a task to this app's
    # workers. Its keys default to SECRET_KEY: the worker runs these settings too.
    WOVE["ENVIRONMENTS"] = {"celery": {"APP": "bookshop.celery.app"}}

# How long the royalty page waits for its remote task before it says that no worker
# answered (it is sent with this timeout, and dropped by a worker that comes later).
DEMO_REMOTE_TIMEOUT = float(os.environ.get("DEMO_REMOTE_TIMEOUT", "5"))


def database_from_url(url: str) -> dict[str, Any]:
    """A ``DATABASES["default"]`` entry from ``postgres://...`` or ``sqlite:///...``."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    if parts.scheme in ("postgres", "postgresql"):
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parts.path.lstrip("/")),
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
            # Wove's pool threads each take a connection per task and give it back after.
            "OPTIONS": {"pool": {"min_size": 2, "max_size": 20, "timeout": 10}, **query},
        }
    if parts.scheme == "sqlite":
        path = unquote(parts.path)[1:] if parts.path.startswith("/") else unquote(parts.path)
        if not path:
            raise ImproperlyConfigured(f"DATABASE_URL={url!r} names no SQLite file")
        return sqlite_database(BASE_DIR / path)
    raise ImproperlyConfigured(
        f"DATABASE_URL={url!r}: only postgres://, postgresql:// and sqlite:/// are understood"
    )


def sqlite_database(path: Path) -> dict[str, Any]:
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": path,
        # Writers wait for each other (receipts are written while pages are read), and
        # a transaction takes the write lock when it begins: one that read first and
        # then wrote would get "database is locked" at once, not wait (two receipts,
        # from a background thread and a forked child, are written at the same time).
        "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
    }


_url = os.environ.get("DATABASE_URL", "").strip()
DATABASES = {
    "default": database_from_url(_url) if _url else sqlite_database(BASE_DIR / "db.sqlite3")
}

# How long sending a receipt takes (catalog/receipts.py), in seconds; the smoke test
# (tests/test_example_project.py) shortens it. The slow queries and the price service
# have their times in catalog/lookups.py and catalog/prices.py.
DEMO_RECEIPT_SECONDS = float(os.environ.get("DEMO_RECEIPT_SECONDS", "1.5"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "wove": {"handlers": ["console"], "level": "INFO"},
        "catalog": {"handlers": ["console"], "level": "INFO"},
    },
}
