"""The caller's lane: thread-sensitive sync tasks, on the thread that entered the weave
(a sync caller serves them while it waits), through asgiref's thread-sensitive executor
(an async caller), or on one of Wove's serial threads (no caller waits).
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, Final

from . import dedicated
from .pool import thread_pool
from .services import Job, keep_serving, run_job

_local = threading.local()


class SerialThread(dedicated.Dedicated):
    """One dedicated daemon thread running jobs one after another: the thread-sensitive
    lane when no caller thread waits (background weaves, async callers without
    asgiref), as asgiref's single thread-sensitive executor does."""

    def __init__(self, index: int) -> None:
        self.blocked = 0
        self._queue: queue.SimpleQueue[Job] = queue.SimpleQueue()
        name = "wove-sensitive" if not index else f"wove-sensitive-{index}"
        self.thread = threading.Thread(
            target=keep_serving, args=(self._work, name), name=name, daemon=True
        )
        self.thread.start()
        assert self.thread.ident is not None
        dedicated.register(self, self.thread.ident)

    def submit(self, job: Job) -> None:
        self._queue.put(job)

    def _work(self) -> bool:
        while True:
            job = self._queue.get()
            run_job(job)
            del job


class CallerWaiter:
    """A sync caller blocks here until the run is over, serving work sent to its thread.

    Used as a context manager around the whole run: if the caller's thread is one of
    Wove's dedicated threads, it is marked blocked from before any task starts, so no
    nested weave (on any thread) sends work to it (asgiref's ``CurrentThreadExecutor``
    shape: the thread that waits serves the work sent back to it).
    """

    __slots__ = ("_blocking", "_queue")
    _DONE: Final = object()

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._blocking: dedicated.Dedicated | None = None

    def __enter__(self) -> CallerWaiter:
        self._blocking = dedicated.block_current_thread()
        return self

    def __exit__(self, *exc_info: object) -> None:
        dedicated.unblock(self._blocking)

    def done(self) -> None:
        self._queue.put(self._DONE)

    def call(self, job: Callable[[], None]) -> None:
        """Run ``job`` on the waiting thread."""
        self._queue.put(job)

    def wait(self) -> None:
        with thread_pool().blocking():
            while (item := self._queue.get()) is not self._DONE:
                item()


_lock = threading.Lock()
_serials: list[SerialThread] = []


def serial_thread() -> SerialThread:
    """A dedicated thread-sensitive thread that is neither this thread nor blocked.

    Nearly always the first one. A thread-sensitive task that itself waits on a weave
    with thread-sensitive tasks (and a call abandoned at its timeout) blocks its thread:
    work then goes to the next one, so no thread ever waits on itself.
    """
    ident = threading.get_ident()
    with _lock:
        for serial in _serials:
            if dedicated.is_free(serial) and serial.thread.ident != ident:
                return serial
        _serials.append(SerialThread(len(_serials)))
        return _serials[-1]


class SensitiveLane:
    """How an async caller runs thread-sensitive jobs: through asgiref's
    ``sync_to_async(thread_sensitive=True)`` when asgiref is installed (Django's own
    rule: the request's sync thread under ASGI), else on Wove's dedicated thread.

    ``pending`` holds the asyncio tasks that carry jobs to asgiref: the caller awaits
    them after its weave, so none is left running after the block."""

    __slots__ = ("_context", "_loop", "_sync_to_async", "pending")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.pending: set[asyncio.Task[Any]] = set()
        self._sync_to_async: Any = None
        if not getattr(_local, "in_sensitive_job", False):
            # (Inside one of our asgiref thread-sensitive jobs, a loop started by a
            # thread-sensitive task, asgiref would queue the nested job behind the very
            # call that waits for it: Wove's own thread then.)
            try:
                from asgiref.sync import sync_to_async
            except ImportError:
                pass
            else:
                self._sync_to_async = sync_to_async
        # The caller's context: it holds asgiref's per-request ThreadSensitiveContext,
        # which a job submitted from a pool thread would not carry.
        self._context = contextvars.copy_context()

    def submit(self, job: Job) -> None:
        sync_to_async = self._sync_to_async
        if sync_to_async is None or not dedicated.is_free(dedicated.foreign):
            # (A call abandoned at its timeout may hold asgiref's thread: do not queue
            # behind it, the same rule as for Wove's own dedicated threads.)
            serial_thread().submit(job)
            return

        async def run() -> None:
            started = False

            def guarded() -> None:
                nonlocal started
                started = True
                outer = getattr(_local, "in_sensitive_job", False)
                _local.in_sensitive_job = True
                try:
                    job()
                finally:
                    _local.in_sensitive_job = outer

            try:
                await sync_to_async(guarded, thread_sensitive=True)()
            except BaseException:
                if started:
                    raise  # jobs do not raise; this is asgiref or a cancelled loop
                # asgiref refused (its single thread is the one waiting on this weave,
                # e.g. asyncio.run() inside a thread-sensitive call): Wove's thread.
                serial_thread().submit(job)

        def start() -> None:
            task = self._loop.create_task(run(), context=self._context.copy())
            self.pending.add(task)  # (asyncio keeps only weak references)
            task.add_done_callback(self.pending.discard)

        self._loop.call_soon_threadsafe(start)


def _forget_in_child() -> None:
    global _lock
    _lock = threading.Lock()
    _serials.clear()
    _local.__dict__.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
