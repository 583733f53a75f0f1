"""Database connections and Wove's threads: hygiene, the transaction rule, forked children.

Django opens one connection per thread and closes only the request thread's one when a
request ends. Wove's pool threads are not request threads, so without help their
connections would stay open (or, with Django's connection pool, stay checked out) for
as long as the thread lives. The rules here:

- Around each sync task on a pool thread, do what Django does around a request: close
  connections that are unusable or past ``CONN_MAX_AGE`` before, and again after (with
  the default ``CONN_MAX_AGE = 0`` that closes the connection, with a pool it returns it).
  A pool thread leaving the pool closes what it still holds.
- After a call abandoned at its timeout, every connection of the thread is closed, and
  one whose query was cancelled (``cancel``) is discarded, never handed out again by
  Django's pool: its state after the cancel is not worth trusting.
- Inside ``transaction.atomic`` (``ATOMIC_REQUESTS`` too), sync tasks default to the
  caller's thread, so they see the transaction's rows and their writes roll back with it.
- A detached (forked) child forgets the connections it inherited without closing them:
  closing would end the parent's session on the shared socket.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import close_old_connections, connections

from wove.lowlevel import logger

from . import cancel

_inherited: list[Any] = []  # kept alive in a forked child, so nothing finalizes them


def hygiene(call: Callable[[], Any]) -> Any:
    """The thread-call wrapper for pool threads: Django's request rule, per task."""
    close_old_connections()
    outer, abandoned = cancel.collect()
    try:
        return call()
    finally:
        cancel.stop_collecting(outer)
        if abandoned.any:
            close_after_abandoned(abandoned.cancelled)
        else:
            close_old_connections()


def close_after_abandoned(cancelled: list[Any]) -> None:
    """Close this thread's connections; ``cancelled`` (raw connections whose query was
    cancelled) are closed first, so Django's pool drops them instead of reusing them."""
    for connection in connections.all(initialized_only=True):
        raw = connection.connection
        try:
            if raw is not None and any(raw is c for c in cancelled):
                raw.close()
            connection.close()
        except Exception:
            logger.warning(
                "wove: closing connection %r after an abandoned call failed",
                connection.alias,
                exc_info=True,
            )


def close_thread_connections() -> None:
    """At a pool thread's exit: close every connection it opened (a persistent one too)."""
    for connection in connections.all(initialized_only=True):
        connection.close()


def in_transaction() -> bool:
    """The thread-sensitive policy: is this thread inside ``transaction.atomic``?"""
    return any(c.in_atomic_block for c in connections.all(initialized_only=True))


def forget_inherited_connections() -> None:
    """In a detached child: drop the parent's connections (and pools) without closing them.

    The child's first query opens its own connection. The objects are kept referenced
    until the child's ``os._exit``, because finalizing them would close the sockets the
    parent is still using.
    """
    for connection in connections.all(initialized_only=True):
        _inherited.append(connection)
        del connections[connection.alias]
    for wrapper_class in {type(connections[alias]) for alias in connections}:
        # Django's PostgreSQL backend keeps its psycopg pools on the class (5.1+); the
        # child's first query would take a connection the parent holds.
        pools = getattr(wrapper_class, "_connection_pools", None)
        if isinstance(pools, dict) and pools:
            _inherited.extend(pools.values())
            pools.clear()
