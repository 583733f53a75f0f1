"""The start watch of forked detached children: one that has not started its work in
time is killed and reported, never left hanging.

A process forked from a threaded server (a gunicorn ``gthread`` worker) inherits every
lock in the state another thread held at the moment of the fork, and no thread that
will ever release it. If the child needs such a lock before it runs its work (in an
integration's hook that forgets inherited database connections, say), it waits forever.
So each child gets a pipe: it writes one byte once it is about to run its work, and a
watcher thread in the parent waits for that byte. No byte within the start timeout: the
child is killed (``SIGKILL``, through a pidfd where the platform has them, so a
recycled pid is never hit) and the parent reports it. The pipe ending without a byte
means the child died before starting, reported the same way.

One watcher thread per process, started with the first watch; a forked child forgets
the parent's (its thread did not survive the fork).
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from .errors import DetachError

logger: Final = logging.getLogger("wove")

#: Called in the parent, on a thread of its own, with the error of a child that never
#: started its work (killed after the timeout, or dead before starting).
NotStarted = Callable[[DetachError], None]


@dataclass(frozen=True, slots=True)
class _Watch:
    pid: int
    pidfd: int | None  # None: no pidfd on this platform, or the child was already gone
    deadline: float  # time.monotonic()
    timeout: float
    not_started: NotStarted | None


class StartWatcher:
    """Waits, on one daemon thread, for each watched child's start byte."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watches: dict[int, _Watch] = {}  # by the pipe's read end
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)
        self._selector.register(self._wake_read, selectors.EVENT_READ)
        self._thread: threading.Thread | None = None

    def watch(self, pid: int, started: int, timeout: float, not_started: NotStarted | None) -> None:
        """Watch child ``pid``, whose start byte arrives on pipe end ``started`` (closed
        by the watcher); past ``timeout`` seconds without it, kill it and report."""
        pidfd = _pidfd(pid)
        watch = _Watch(pid, pidfd, time.monotonic() + timeout, timeout, not_started)
        with self._lock:
            self._watches[started] = watch
            self._selector.register(started, selectors.EVENT_READ)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="wove-fork-start-watch", daemon=True
                )
                self._thread.start()
        self._wake()

    @property
    def watching(self) -> int:
        """How many children have not yet started (nor been reported)."""
        with self._lock:
            return len(self._watches)

    def _wake(self) -> None:
        try:
            os.write(self._wake_write, b"w")
        except BlockingIOError:  # the pipe is full: the thread is awake already
            pass

    def _run(self) -> None:
        while True:
            try:
                self._step()
            except Exception:  # never let the watch die: the next children need it
                logger.exception("wove: the start watch of detached children failed")
                time.sleep(0.1)

    def _step(self) -> None:
        with self._lock:
            deadlines = [w.deadline for w in self._watches.values()]
        wait = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
        for key, _ in self._selector.select(wait):
            fd = int(key.fd)
            if fd == self._wake_read:
                os.read(self._wake_read, 4096)
                continue
            data = _read(fd)
            watch = self._forget(fd)
            if watch is not None:
                _close(watch)
                if not data:
                    self._report(watch, "exited before it started its work")
        now = time.monotonic()
        with self._lock:
            late = [fd for fd, w in self._watches.items() if w.deadline <= now]
        for fd in late:
            if _read_ready(fd):
                continue  # it started (or ended) just now: the next select sees it
            watch = self._forget(fd)
            if watch is not None:
                _kill(watch)
                _close(watch)
                self._report(
                    watch,
                    f"did not start its work within {watch.timeout:g} s, so it was "
                    "killed (a lock held by another thread at the fork, never released "
                    "in the child, is the usual cause)",
                )

    def _forget(self, fd: int) -> _Watch | None:
        with self._lock:
            watch = self._watches.pop(fd, None)
            self._selector.unregister(fd)
        os.close(fd)
        return watch

    def _report(self, watch: _Watch, what: str) -> None:
        error = DetachError(
            f"the detached child (pid {watch.pid}) {what}; its work never ran. "
            "Forking a threaded server: see docs/background.md, 'A detached process'"
        )
        if watch.not_started is None:
            logger.error("wove: %s", error)
            return
        # Off the watcher's thread: the callback logs, files traces, calls on_done.
        threading.Thread(
            target=_call, args=(watch.not_started, error), name="wove-fork-not-started"
        ).start()


def _call(not_started: NotStarted, error: DetachError) -> None:
    try:
        not_started(error)
    except BaseException:
        logger.exception("wove: reporting a detached child that never started failed")


def _pidfd(pid: int) -> int | None:
    open_pidfd = getattr(os, "pidfd_open", None)
    if open_pidfd is None:
        return None
    try:
        return int(open_pidfd(pid))
    except OSError:  # gone already (its pipe says so too), or pidfds not allowed
        return None


def _kill(watch: _Watch) -> None:
    try:
        send = getattr(signal, "pidfd_send_signal", None)
        if watch.pidfd is not None and send is not None:
            send(watch.pidfd, signal.SIGKILL)
        else:
            # Its start pipe is still open, so the child holding its write end lives.
            os.kill(watch.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _close(watch: _Watch) -> None:
    if watch.pidfd is not None:
        os.close(watch.pidfd)


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 1)
    except OSError:
        return b""


def _read_ready(fd: int) -> bool:
    ready = selectors.DefaultSelector()
    try:
        ready.register(fd, selectors.EVENT_READ)
        return bool(ready.select(0))
    finally:
        ready.close()


_watcher: StartWatcher | None = None
_watcher_lock = threading.Lock()


def start_watcher() -> StartWatcher:
    """This process's watcher (a forked child gets its own, when it forks in turn)."""
    global _watcher
    with _watcher_lock:
        if _watcher is None:
            _watcher = StartWatcher()
        return _watcher


def _forget_in_child() -> None:
    global _watcher, _watcher_lock
    _watcher = None  # its thread and pipes belong to the parent
    _watcher_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
