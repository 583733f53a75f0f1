"""A call under a timeout: the deadline and the call race to settle it, once.

Shared by sync and async calls. A sync call past its timeout is *abandoned*: the task
fails with :class:`~wove.TaskTimeout` at once, the weave stops waiting for it, and its
thread keeps running until the call returns (then its result is dropped). An async call
is cancelled at its timeout by ``asyncio.timeout``; if it swallows the cancellation and
keeps running past a short grace period (:data:`CANCEL_GRACE`), it is abandoned the same
way, so a rogue coroutine cannot hold the block forever.

While a sync call runs, the thread knows its :class:`TimedCall`, so code inside the call
(a database integration) can ask whether it was abandoned, and be told when it is
(:func:`on_abandon`): the Django adapter cancels the running query on the database
server, so the thread and its connection come back soon.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Final

from ..lanes import dedicated, pool, services, timer

#: Seconds an async task past its timeout gets to stop after being cancelled.
CANCEL_GRACE: Final = 1.0

_local = threading.local()


class TimedCall:
    """One attempt under a timeout. ``live``, ``abandoned`` and the callbacks are
    guarded by the owning run's lock, passed in as ``lock``."""

    __slots__ = (
        "_callbacks",
        "_lock",
        "abandoned",
        "blocking",
        "deadline",
        "live",
        "on_pool",
        "thread_id",
    )

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self.live = True
        self.abandoned = False
        self.thread_id = threading.get_ident()
        self.deadline: timer.Deadline | None = None
        self.on_pool = False
        self.blocking: dedicated.Dedicated | None = None
        self._callbacks: list[Callable[[], None]] = []

    def abandon(self, *, on_thread: bool) -> bool:
        """Called at the deadline: True if this call was still live (now abandoned).

        ``on_thread``: a sync call, whose thread stays busy; it is accounted for where it
        runs (a pool thread counts against the cap; a dedicated thread is marked blocked,
        so later weaves go to another)."""
        with self._lock:
            if not self.live:
                return False
            self.live, self.abandoned = False, True
            callbacks, self._callbacks = self._callbacks, []
            # Accounted for under the same lock as `abandoned`: a call returning at this
            # very moment settles after this, and gives back exactly what was taken.
            # (The pool's and the dedicated registry's locks are always taken last.)
            if on_thread:
                self.on_pool = pool.on_pool_thread_id(self.thread_id)
                if self.on_pool:
                    pool.thread_pool().abandon()
                else:
                    self.blocking = dedicated.block_thread(self.thread_id)
        for callback in callbacks:
            try:
                callback()
            except Exception:
                services.logger.exception("wove: a callback of an abandoned call raised")
        return True

    def settle(self) -> bool:
        """The call returned: True if its deadline had already abandoned it."""
        with self._lock:
            self.live = False
            abandoned = self.abandoned
            self._callbacks = []
        if self.deadline is not None:
            timer.deadlines().cancel(self.deadline)  # drops the callback, and the run
        if abandoned:
            if self.on_pool:
                pool.thread_pool().reclaim()
            dedicated.unblock(self.blocking)
        return abandoned

    def add_callback(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if self.live:
                self._callbacks.append(callback)
                return
            abandoned = self.abandoned
        if abandoned:
            callback()


def running(timed: TimedCall | None) -> TimedCall | None:
    """Make ``timed`` the call running on this thread; returns the previous one."""
    previous: TimedCall | None = getattr(_local, "call", None)
    _local.call = timed
    return previous


def on_abandon(callback: Callable[[], None]) -> bool:
    """Inside a sync task call under a ``timeout``: have ``callback()`` called, on
    Wove's timer thread, if the call is abandoned at its timeout (at once if it already
    was). Returns False, registering nothing, when the call running on this thread has
    no timeout. The callback must be quick and thread-safe (cancel a query, close a
    socket); its exceptions are logged."""
    timed: TimedCall | None = getattr(_local, "call", None)
    if timed is None:
        return False
    timed.add_callback(callback)
    return True


def call_abandoned() -> bool:
    """True when the sync task call running on this thread was abandoned at its timeout:
    its result will be dropped, so it should start nothing new (a query, a request)."""
    timed: TimedCall | None = getattr(_local, "call", None)
    return timed is not None and timed.abandoned
