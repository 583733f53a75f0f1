"""One process-wide timer thread (``wove-deadlines``): sync timeouts, rate-limited item
starts and stuck-task reports, so timing a call needs no thread of its own.

A cancelled deadline lets go of its callback at once and is removed from the heap in
bulk, as asyncio's loop does with cancelled timer handles: once cancelled entries are
more than half of a heap of 64 or more, the heap is rebuilt without them. So memory
follows the deadlines still pending, not the call rate times the timeout.
"""

from __future__ import annotations

import heapq
import itertools
import os
import threading
import time
from collections.abc import Callable
from typing import Final

from .services import keep_serving, logger

_COMPACT_MIN: Final = 64
# The longest single wait: a far deadline is waited for in steps, so no value of a
# deadline can overflow the condition's timeout (OverflowError would end the thread).
_MAX_WAIT: Final = 3600.0


class Deadline:
    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        self.callback = _nothing  # what it referenced can go now, not at its time


def _nothing() -> None:
    pass


class DeadlineWatcher:
    """One thread that calls callbacks at monotonic times (``time.monotonic``)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Deadline]] = []
        self._cancelled = 0
        self._seq = itertools.count()
        self._wake = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None

    def arm(self, when: float, callback: Callable[[], None]) -> Deadline:
        deadline = Deadline(when, callback)
        with self._wake:
            heapq.heappush(self._heap, (when, next(self._seq), deadline))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=keep_serving, args=(self._watch, "timer"), name="wove-deadlines"
                )
                self._thread.daemon = True
                self._thread.start()
            elif self._heap[0][2] is deadline:
                self._wake.notify()
        return deadline

    def cancel(self, deadline: Deadline) -> None:
        """Cancel ``deadline``; it leaves the heap at the next compaction."""
        if deadline.cancelled:
            return
        deadline.cancel()
        with self._wake:
            self._cancelled += 1
            heap = self._heap
            if self._cancelled >= _COMPACT_MIN and self._cancelled * 2 > len(heap):
                heap[:] = [entry for entry in heap if not entry[2].cancelled]
                heapq.heapify(heap)
                self._cancelled = 0

    @property
    def pending(self) -> int:
        """Entries in the heap, cancelled ones not yet compacted included."""
        return len(self._heap)

    def _watch(self) -> None:
        while True:
            with self._wake:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    wait = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._wake.wait(None if wait is None else min(wait, _MAX_WAIT))
                _, _, deadline = heapq.heappop(self._heap)
                if deadline.cancelled:
                    self._cancelled = max(self._cancelled - 1, 0)
            if not deadline.cancelled:
                try:
                    deadline.callback()
                except BaseException:
                    logger.exception("wove: internal error in a deadline callback")


_lock = threading.Lock()
_watcher: DeadlineWatcher | None = None


def deadlines() -> DeadlineWatcher:
    global _watcher
    if _watcher is None:
        with _lock:
            if _watcher is None:
                _watcher = DeadlineWatcher()
    return _watcher


def _forget_in_child() -> None:
    global _watcher, _lock
    _lock = threading.Lock()
    _watcher = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
