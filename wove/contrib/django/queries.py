"""Each task's SQL: how many queries it ran and how long they took, in its trace record.

A thread-call wrapper (on pool threads and, for thread-sensitive tasks, on the caller's
thread) installs Django's ``execute_wrapper`` on every database alias of the thread for
the duration of the call, then ``wove.annotate(queries=..., query_ms=...)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from django.db import connections

from wove import annotate


class QueryCounter:
    """An ``execute_wrapper``: counts the queries it sees and adds up their time."""

    __slots__ = ("count", "seconds")

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0

    def __call__(
        self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        start = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.seconds += time.perf_counter() - start
            self.count += 1


def count_queries(call: Callable[[], Any]) -> Any:
    """The thread-call wrapper: run ``call`` with every alias's queries counted."""
    counter = QueryCounter()
    with ExitStack() as stack:
        for alias in connections:
            stack.enter_context(connections[alias].execute_wrapper(counter))
        try:
            return call()
        finally:
            annotate(queries=counter.count, query_ms=round(counter.seconds * 1000, 3))
