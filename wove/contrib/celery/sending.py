"""Messages to the broker, sent from one thread per process, in order.

A remote call is sent (and a cancelled one revoked) by this thread rather than on the
event loop awaiting it: a slow or unreachable broker then never blocks the loop, so the
task's timeout still fires and the loop's other tasks go on. One thread serves every
call of the process, in the order they were handed over, so a revoke always follows
the send it revokes.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable
from typing import Final

from wove.lowlevel import start_service

logger: Final = logging.getLogger("wove")

_jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
_lock = threading.Lock()
_started = False


def send_soon(job: Callable[[], None]) -> None:
    """Run ``job`` (broker I/O) on the sending thread, after the jobs handed over before."""
    global _started
    if not _started:
        with _lock:
            if not _started:
                start_service(_serve, "wove-celery-sender")
                _started = True
    _jobs.put(job)


def _serve() -> None:
    while True:
        job = _jobs.get()
        try:
            job()
        except Exception:  # each job reports its own failures; this is a last resort
            logger.exception("wove: a message to Celery's broker failed")


def _forget_in_child() -> None:
    global _jobs, _lock, _started
    _jobs = queue.SimpleQueue()  # the parent's thread did not survive the fork
    _lock = threading.Lock()
    _started = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
