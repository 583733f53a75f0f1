"""What every thread service of Wove shares: the logger, jobs that never raise, and a
service loop that logs an unexpected error and keeps serving.

A service thread (the pool's workers, the timer, a loop thread, the serial threads, an
integration's result waiter) serves the whole process: if one died silently, every later
weave that needed it would hang. So each runs under :func:`keep_serving`.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Final

Job = Callable[[], None]
"""A callable taking no argument and returning nothing, written never to raise."""

logger: Final = logging.getLogger("wove")

# After an unexpected error, a service waits this long before serving again, so a fault
# that repeats at once logs a few lines a second instead of spinning a core.
_RESTART_PAUSE: Final = 0.05


def run_job(job: Job) -> None:
    """Run a job; a job is written not to raise, and one that does never kills its thread."""
    try:
        job()
    except BaseException:
        logger.exception("wove: internal error in a worker job")


def keep_serving(serve: Callable[[], bool | None], name: str) -> None:
    """Call ``serve`` until it returns normally with a true value (or ``None``, meaning
    done); an exception it raises is logged and the service goes on.

    ``serve`` returns False to be called again, True (or None) when the service ends.
    """
    while True:
        try:
            again = serve() is False
        except BaseException:  # KeyboardInterrupt included: this thread is not the caller's
            logger.exception("wove: the %s service hit an internal error; it keeps serving", name)
            time.sleep(_RESTART_PAUSE)
            continue
        if not again:
            return


def start_service(target: Callable[[], None], name: str) -> threading.Thread:
    """Start a long-lived daemon thread serving the whole process (e.g. the one thread
    that waits for every pending remote result). ``target`` is restarted, after a log
    line, if it raises; it ends the service by returning. Not rebuilt after a fork: its
    owner forgets it in the child (``os.register_at_fork``) and starts a new one."""
    thread = threading.Thread(target=keep_serving, args=(target, name), name=name, daemon=True)
    thread.start()
    return thread


def current_thread_name() -> str:
    return threading.current_thread().name


def reap(process: subprocess.Popen[bytes]) -> None:
    """Wait for a detached subprocess in a daemon thread, so it never stays a zombie."""
    threading.Thread(target=process.wait, name="wove-reaper", daemon=True).start()


def where_is(thread_id: int) -> str | None:
    """'file:line in function' of what a thread runs now (for a timeout's note)."""
    frame = sys._current_frames().get(thread_id)
    if frame is None:
        return None
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"
