"""Each task's SQL: how many queries it ran and how long they took, in its trace record.

Every database connection of the process gets one permanent execute wrapper, added when
Django opens the connection (the ``connection_created`` signal) and placed outermost, so
it never disturbs the push and pop of other code's ``execute_wrapper`` blocks. It costs
one attribute lookup per query unless a traced task is running on that thread. The
thread-call wrapper (on pool threads and, for thread-sensitive tasks, on the caller's
thread) points that thread's counter at a fresh one for the call, then
``wove.annotate(queries=..., query_ms=...)`` when the task ran any query. Calls that are
not traced (no request being recorded) are not measured.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper

from wove import annotate
from wove.lowlevel import annotating

_local = threading.local()


class QueryCounter:
    """Counts the queries of one task call and adds up their time."""

    __slots__ = ("count", "seconds")

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0


def counting_wrapper(
    execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
) -> Any:
    """The permanent execute wrapper: counts when this thread runs a traced task."""
    counter: QueryCounter | None = getattr(_local, "counter", None)
    if counter is None:
        return execute(sql, params, many, context)
    start = time.perf_counter()
    try:
        return execute(sql, params, many, context)
    finally:
        counter.seconds += time.perf_counter() - start
        counter.count += 1


def install_on(sender: object, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    """``connection_created`` receiver: give the connection the counting wrapper once."""
    if counting_wrapper not in connection.execute_wrappers:
        connection.execute_wrappers.insert(0, counting_wrapper)


def count_queries(call: Callable[[], Any]) -> Any:
    """The thread-call wrapper: count the queries ``call`` runs on this thread."""
    if not annotating():
        return call()
    counter = QueryCounter()
    outer = getattr(_local, "counter", None)  # a traced task that runs a nested weave
    _local.counter = counter
    try:
        return call()
    finally:
        _local.counter = outer
        if counter.count:
            annotate(queries=counter.count, query_ms=round(counter.seconds * 1000, 3))
