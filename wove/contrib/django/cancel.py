"""Queries of a sync task abandoned at its ``timeout``: cancelled on the server, none started.

A sync task past its timeout is abandoned: the weave raises ``TaskTimeout`` at once, but
the thread goes on until the call returns, and until then it counts against Wove's
``max_threads`` and holds its database connection. A thread blocked in a slow query
would only come back when the query ends, so under a slow database timeouts would keep
the whole pool busy with work nobody waits for. So, for each sync task call that has a
timeout:

- when it is abandoned, the query it is running is cancelled on the database server
  (PostgreSQL: the driver's cancel request; SQLite: ``interrupt()``); the query fails at
  once, and the call returns;
- a query it would start afterwards (its next one, or its first one if it was still
  waiting for a connection from Django's pool) is refused: the execute wrapper raises
  :class:`QueryAfterTimeout` instead of sending it;
- on a pool thread, once the call has returned, its connections are closed, and one
  whose query was cancelled is discarded rather than returned to Django's pool
  (``connections.hygiene``).

A cancel request opens a new connection to the server, which can block, so it is sent
by a thread of its own (``wove-django-cancel``), never by Wove's timer thread. The call's
thread waits for a cancel in flight before it lets go of the connection: a cancel that
arrived once the connection served another call would cancel that call's query.
"""

from __future__ import annotations

import heapq
import itertools
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from django.db import OperationalError
from django.db.backends.base.base import BaseDatabaseWrapper

from wove import WoveError
from wove.lowlevel import call_abandoned, logger, on_abandon, start_service

#: Seconds one PostgreSQL cancel request may take (psycopg 3's ``cancel_safe``).
CANCEL_TIMEOUT: Final = 5.0
#: Delays before cancelling again a query that is still running after a cancel: the
#: cancel can reach the server before the query does (a thread starved of the GIL right
#: after the execute wrapper let it through), and a server ignores a cancel when idle.
RETRY_DELAYS: Final = (0.25, 0.5, 1.0, 2.0)
#: The backends whose running query can be stopped from another thread.
CANCELLABLE: Final = frozenset({"postgresql", "sqlite"})

_local = threading.local()


class QueryAfterTimeout(WoveError, OperationalError):
    """A query of a sync task call that was abandoned at its timeout: not sent, since
    nobody waits for its result (a ``django.db.OperationalError``)."""


class _Running:
    """One query being executed: what to cancel it on."""

    __slots__ = ("raw", "vendor")

    def __init__(self, vendor: str, raw: Any) -> None:
        self.vendor = vendor
        self.raw = raw


class _Call:
    """The database side of one sync task call under a timeout; its fields are guarded
    by ``lock``, which a cancel holds while it is being sent."""

    __slots__ = ("abandoned", "cancelled", "finished", "lock", "running")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.abandoned = False
        self.finished = False
        self.running: _Running | None = None
        self.cancelled: list[Any] = []  # raw connections a cancel was sent on

    def abandon(self) -> None:
        """The ``on_abandon`` callback (Wove's timer thread): quick, sends nothing."""
        with self.lock:
            self.abandoned = True
            running = self.running
        if running is not None and running.vendor in CANCELLABLE:
            _canceller().submit(self, running)


def guard(call: Callable[[], Any]) -> Any:
    """The thread-call wrapper: watch the queries of a call that has a timeout."""
    state = _Call()
    if not on_abandon(state.abandon):
        return call()
    calls: list[_Call] | None = getattr(_local, "calls", None)
    if calls is None:
        calls = _local.calls = []
    calls.append(state)
    try:
        return call()
    finally:
        calls.pop()
        with state.lock:  # waits for a cancel being sent on this call's connection
            state.finished = True
        collector: Abandoned | None = getattr(_local, "collector", None)
        if state.abandoned and collector is not None:
            collector.any = True
            collector.cancelled.extend(state.cancelled)


class Abandoned:
    """What the calls abandoned during one hygiene-wrapped call left to clean up."""

    __slots__ = ("any", "cancelled")

    def __init__(self) -> None:
        self.any = False
        self.cancelled: list[Any] = []  # raw connections a cancel was sent on


def collect() -> tuple[Abandoned | None, Abandoned]:
    """Collect, until :func:`stop_collecting`, what abandoned calls on this thread leave
    (only while someone will clean it up: a request thread never does)."""
    outer: Abandoned | None = getattr(_local, "collector", None)
    _local.collector = collected = Abandoned()
    return outer, collected


def stop_collecting(outer: Abandoned | None) -> None:
    _local.collector = outer


def refuse_or_track(
    execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
) -> Any:
    """The permanent execute wrapper: refuse a query of an abandoned call, and note the
    running query of a call with a timeout, so its abandonment can cancel it."""
    calls: list[_Call] | None = getattr(_local, "calls", None)
    if not calls:
        return execute(sql, params, many, context)
    if call_abandoned():
        raise _refused()
    connection: BaseDatabaseWrapper = context["connection"]
    running = _Running(connection.vendor, connection.connection)
    tracked: list[_Call] = []
    try:
        for state in calls:  # more than one: a nested weave's task on this same thread
            # Checked and set together: the abandon callback either sees the query (and
            # cancels it) or has marked the call (and the query is not sent).
            with state.lock:
                if state.abandoned:
                    raise _refused()
                state.running = running
            tracked.append(state)
        return execute(sql, params, many, context)
    finally:
        for state in tracked:
            with state.lock:
                state.running = None


def _refused() -> QueryAfterTimeout:
    return QueryAfterTimeout(
        "wove: this sync task call was abandoned at its timeout, so it sends no more "
        "queries (nobody waits for their results)"
    )


def install_on(sender: object, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    """``connection_created`` receiver: give the connection the wrapper once."""
    if refuse_or_track not in connection.execute_wrappers:
        connection.execute_wrappers.insert(0, refuse_or_track)


# --- sending the cancels ---------------------------------------------------------------


def cancel_query(running: _Running) -> None:
    """Cancel what ``running``'s connection executes now (the server ignores a cancel
    that finds it idle). Backends other than PostgreSQL and SQLite have no way to do
    it from another thread: their query runs to its end."""
    raw = running.raw
    if running.vendor == "postgresql":
        cancel_safe = getattr(raw, "cancel_safe", None)  # psycopg 3.2+
        if cancel_safe is not None:
            cancel_safe(timeout=CANCEL_TIMEOUT)
        else:  # psycopg2, older psycopg 3
            raw.cancel()
    elif running.vendor == "sqlite":
        raw.interrupt()


class _Canceller:
    """The thread that sends cancels, and cancels again a query still running later."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[_Call, _Running]] = queue.SimpleQueue()
        self._retries: list[tuple[float, int, _Call, _Running, int]] = []
        self._order = itertools.count()
        start_service(self._serve, "wove-django-cancel")

    def submit(self, state: _Call, running: _Running) -> None:
        self._queue.put((state, running))

    def _serve(self) -> None:
        while True:
            wait = self._retries[0][0] - time.monotonic() if self._retries else None
            try:
                state, running = self._queue.get(timeout=None if wait is None else max(wait, 0))
            except queue.Empty:
                _, _, state, running, attempt = heapq.heappop(self._retries)
            else:
                attempt = 0
            self._cancel(state, running, attempt)

    def _cancel(self, state: _Call, running: _Running, attempt: int) -> None:
        with state.lock:
            if state.finished or state.running is not running:
                return  # that query has ended
            if not any(raw is running.raw for raw in state.cancelled):
                state.cancelled.append(running.raw)
            try:
                cancel_query(running)
            except Exception:
                logger.warning(
                    "wove: cancelling the query of a sync task abandoned at its timeout "
                    "failed (%s backend)",
                    running.vendor,
                    exc_info=True,
                )
        if attempt < len(RETRY_DELAYS):
            when = time.monotonic() + RETRY_DELAYS[attempt]
            heapq.heappush(self._retries, (when, next(self._order), state, running, attempt + 1))


_lock = threading.Lock()
_instance: _Canceller | None = None


def _canceller() -> _Canceller:
    global _instance
    if _instance is None:
        with _lock:
            if _instance is None:
                _instance = _Canceller()
    return _instance


def _forget_in_child() -> None:
    # A forked child does not have the parent's cancel thread; its first cancel starts one.
    global _instance, _lock
    _lock = threading.Lock()
    _instance = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
