"""Broker I/O from one thread of an environment, in order: :class:`Sender`.

A remote call is sent (and a cancelled one stopped) by this thread rather than on the
event loop awaiting it: a slow or unreachable broker then never blocks the loop, so the
task's timeout still fires and the loop's other tasks go on. The jobs run in the order
they were handed over, so a cancel always follows the send it cancels.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Final

from wove.lowlevel import start_service

logger: Final = logging.getLogger("wove")

_senders: weakref.WeakSet[Sender] = weakref.WeakSet()


class Sender:
    """One thread, started on first use, that runs the jobs handed to :meth:`soon`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._forget()
        _senders.add(self)

    def _forget(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._started = False

    def soon(self, job: Callable[[], None]) -> None:
        """Run ``job`` on the sending thread, after the jobs handed over before."""
        if not self._started:
            with self._lock:
                if not self._started:
                    start_service(self._serve, self.name)
                    self._started = True
        self._jobs.put(job)

    def _serve(self) -> None:
        jobs = self._jobs
        while True:
            job = jobs.get()
            try:
                job()
            except Exception:  # each job reports its own failures; this is a last resort
                logger.exception("wove: a message to the broker failed (%s)", self.name)


def _forget_in_child() -> None:
    for sender in list(_senders):
        sender._forget()  # the parent's thread did not survive the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
