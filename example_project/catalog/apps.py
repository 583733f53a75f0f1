"""The catalog app: on SQLite, each new connection learns ``demo_query_time`` (QueryTime)."""

from __future__ import annotations

import time
from typing import Any

from django.apps import AppConfig
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created


def _query_time(seconds: float) -> bool:
    time.sleep(seconds)  # releases the GIL: other threads' queries go on meanwhile
    return True


def _add_sqlite_functions(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    if connection.vendor == "sqlite":
        # deterministic=True: SQLite evaluates the constant call once per query.
        connection.connection.create_function("demo_query_time", 1, _query_time, deterministic=True)


class CatalogConfig(AppConfig):
    name = "catalog"

    def ready(self) -> None:
        connection_created.connect(_add_sqlite_functions)
