"""Each task's SQL, in its trace record: how many queries it ran, how long they took, and
the statements themselves.

Every database connection of the process gets one permanent execute wrapper, added when
Django opens the connection (the ``connection_created`` signal) and placed outermost, so
it never disturbs the push and pop of other code's ``execute_wrapper`` blocks. It costs
one attribute lookup per query unless a traced task is running on that thread. The
thread-call wrapper (on pool threads and, for thread-sensitive tasks, on the caller's
thread) points that thread's counter at a fresh one for the call, then annotates the
task's record when it ran any query: ``queries`` and ``query_ms`` (every query), ``sql``
(the first ``WOVE["MAX_SQL_STATEMENTS"]`` statements, in order, each as ``(sql, ms,
params)``, ``params`` a short text only while ``DEBUG`` is on, None otherwise) and
``sql_omitted`` (how many more ran, when some did). Calls that are not traced (no
request being recorded) are not measured.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper

from wove import annotate
from wove.contrib.traces.statements import (
    PARAMS_TEXT_LIMIT,
    SQL,
    SQL_OMITTED,
    SQL_TEXT_LIMIT,
    clip,
)
from wove.contrib.traces.text import safe_text
from wove.lowlevel import annotating

_local = threading.local()

# Set by the app from the WOVE settings and DEBUG (apps.install), again when they change.
_limit = 50
_params = False


def configure(limit: int, params: bool) -> None:
    """Keep at most ``limit`` statements per task attempt; their parameters too if
    ``params`` (the app passes ``settings.DEBUG``)."""
    global _limit, _params
    _limit, _params = limit, params


#: One statement as annotated: its SQL, its time in ms, its parameters (or None).
Statement = tuple[str, float, str | None]


class QueryCounter:
    """Counts the queries of one task call, adds up their time, keeps the first few."""

    __slots__ = ("count", "limit", "params", "seconds", "statements")

    def __init__(self, limit: int = 50, params: bool = False) -> None:
        self.count = 0
        self.seconds = 0.0
        self.statements: list[Statement] = []
        self.limit = limit
        self.params = params


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
        took = time.perf_counter() - start
        counter.seconds += took
        counter.count += 1
        if len(counter.statements) < counter.limit:
            text = sql if isinstance(sql, str) else safe_text(sql, SQL_TEXT_LIMIT)
            shown = _params_text(params, many) if counter.params else None
            counter.statements.append((clip(text, SQL_TEXT_LIMIT), round(took * 1000, 3), shown))


def _params_text(params: Any, many: bool) -> str | None:
    """A short, safe text of a statement's parameters (never the objects: the trace store
    outlives the request, and must not hold its data)."""
    if params is None or (isinstance(params, list | tuple | dict) and not params):
        return None  # nothing to show
    try:
        text = repr(params)
    except Exception:
        text = object.__repr__(params)
    return clip(f"many: {text}" if many else text, PARAMS_TEXT_LIMIT)


def install_on(sender: object, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    """``connection_created`` receiver: give the connection the counting wrapper once."""
    if counting_wrapper not in connection.execute_wrappers:
        connection.execute_wrappers.insert(0, counting_wrapper)


def count_queries(call: Callable[[], Any]) -> Any:
    """The thread-call wrapper: count the queries ``call`` runs on this thread."""
    if not annotating():
        return call()
    counter = QueryCounter(_limit, _params)
    outer = getattr(_local, "counter", None)  # a traced task that runs a nested weave
    _local.counter = counter
    try:
        return call()
    finally:
        _local.counter = outer
        if counter.count:
            values: dict[str, object] = {
                "queries": counter.count,
                "query_ms": round(counter.seconds * 1000, 3),
            }
            if counter.statements:
                values[SQL] = counter.statements
            if counter.count > len(counter.statements):
                values[SQL_OMITTED] = counter.count - len(counter.statements)
            annotate(**values)
