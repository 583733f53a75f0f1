"""Settings for the adapter's tests.

The database comes from the environment, so one project serves both backends and the
real servers the tests start: ``WOVE_TEST_DATABASE_URL=postgres://user@127.0.0.1:port/db``
for PostgreSQL (``WOVE_TEST_DB_POOL=1`` adds Django's connection pool), otherwise a
SQLite file at ``WOVE_TEST_SQLITE`` (a temporary file by default), never in memory.
"""

import os
import tempfile
from urllib.parse import urlsplit

SECRET_KEY = "wove-tests-only"
DEBUG = os.environ.get("WOVE_TEST_DEBUG") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
USE_TZ = True
ROOT_URLCONF = "wove_testproject.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "wove.contrib.django",
    "wove_testproject.shop",
]

MIDDLEWARE = [
    "wove.contrib.django.middleware.WoveMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]

_atomic = {"ATOMIC_REQUESTS": True} if os.environ.get("WOVE_TEST_ATOMIC_REQUESTS") == "1" else {}

_url = os.environ.get("WOVE_TEST_DATABASE_URL")
if _url:
    _parts = urlsplit(_url)
    _options = (
        {"pool": {"min_size": 1, "max_size": 4, "timeout": 10}}
        if os.environ.get("WOVE_TEST_DB_POOL") == "1"
        else {}
    )
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": _parts.path.lstrip("/"),
            "USER": _parts.username or "",
            "PASSWORD": _parts.password or "",
            "HOST": _parts.hostname or "127.0.0.1",
            "PORT": str(_parts.port or 5432),
            "CONN_MAX_AGE": int(os.environ.get("WOVE_TEST_CONN_MAX_AGE", "0")),
            "OPTIONS": _options,
            "TEST": {"NAME": os.environ.get("WOVE_TEST_PG_TEST_NAME", "test_wove")},
            **_atomic,
        }
    }
else:
    _sqlite = os.environ.get("WOVE_TEST_SQLITE") or os.path.join(
        tempfile.gettempdir(), f"wove-tests-{os.getpid()}.sqlite3"
    )
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": _sqlite,
            "TEST": {"NAME": _sqlite + ".test"},
            "OPTIONS": {"timeout": 20},
            **_atomic,
        }
    }

WOVE = {"SERVER_TIMING": True}
if os.environ.get("WOVE_TEST_MAX_THREADS"):
    WOVE["MAX_THREADS"] = int(os.environ["WOVE_TEST_MAX_THREADS"])

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"wove": {"handlers": ["console"], "level": "INFO"}},
}
