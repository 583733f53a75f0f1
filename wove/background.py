"""Background weaves: completion tracking and delivery of ``on_done``.

Every background weave of this process is tracked until its ``on_done`` has returned, so
a server can wait for them at shutdown with :func:`wait_for_background`. Failures are
never silent: they are logged on the ``wove`` logger with their traceback, and a failing
``on_done`` is logged too.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Final

from . import lanes
from .result import WoveResult
from .task_spec import is_async_callable

logger: Final = logging.getLogger("wove")

OnDone = Callable[[WoveResult], Any]

_lock = threading.Lock()
_outstanding: set[Completion] = set()


class Completion:
    """Set once a background weave and its ``on_done`` have both finished."""

    __slots__ = ("_event", "origin")

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self._event = threading.Event()
        with _lock:
            _outstanding.add(self)

    @property
    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None) -> bool:
        with lanes.thread_pool().blocking():  # a pool thread waiting lends its place
            return self._event.wait(timeout)

    def set(self) -> None:
        with _lock:
            _outstanding.discard(self)
        self._event.set()


def wait_for_background(timeout: float | None = None) -> bool:
    """Wait until every background weave of this process (and its ``on_done``) is done.

    Returns False if some were still running after ``timeout`` seconds. Call it at
    shutdown (e.g. from an ``atexit`` handler or a server's shutdown hook): background
    weaves run on daemon threads, which do not keep the interpreter alive.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        with _lock:
            pending = next(iter(_outstanding), None)
        if pending is None:
            return True
        left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        if not pending.wait(left) and left is not None:
            return False


def log_failure(result: WoveResult, origin: str) -> None:
    error = result.exception
    if error is not None:
        logger.error(
            "wove: background weave at %s failed: %s: %s",
            origin,
            type(error).__name__,
            error,
            exc_info=(type(error), error, error.__traceback__),
        )


def deliver(result: WoveResult, on_done: OnDone | None, completion: Completion) -> None:
    """Log a failure, then call ``on_done(result)`` off the finishing thread."""
    log_failure(result, completion.origin)
    if on_done is None:
        completion.set()
        return
    if is_async_callable(on_done):
        future = lanes.run_coroutine(on_done(result))
        future.add_done_callback(lambda done: _after_async(done, completion))
        return

    def call() -> None:
        try:
            on_done(result)
        except BaseException:
            logger.exception(
                "wove: on_done of the background weave at %s failed", completion.origin
            )
        finally:
            completion.set()

    lanes.thread_pool().submit(call)


def call_on_done(on_done: OnDone, result: WoveResult, origin: str) -> bool:
    """Call ``on_done`` right here (a detached child); False if it raised (logged)."""
    try:
        if is_async_callable(on_done):
            import asyncio

            asyncio.run(on_done(result))
        else:
            on_done(result)
    except BaseException:
        logger.exception("wove: on_done of the detached weave at %s failed", origin)
        return False
    return True


def _after_async(done: Future[Any], completion: Completion) -> None:
    try:
        error = done.exception()
    except BaseException as cancelled:  # the loop went away
        error = cancelled
    if error is not None:
        logger.error(
            "wove: on_done of the background weave at %s failed",
            completion.origin,
            exc_info=(type(error), error, error.__traceback__),
        )
    completion.set()


def _forget_in_child() -> None:
    global _lock
    _lock = threading.Lock()
    _outstanding.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
