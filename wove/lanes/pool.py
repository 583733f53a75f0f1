"""The process-wide thread pool for sync work, and the per-weave :class:`Limiter`.

``max_threads`` is a hard cap on the threads the pool runs, and a thread whose call was
abandoned at its timeout still counts against it until the call returns (as anyio's
``CapacityLimiter`` keeps counting an abandoned thread): under a slow database, timeouts
must not grow the process's threads, and so its database connections, without bound.
When every thread is busy, new sync work waits in the queue (and a task with a timeout
times out there, never starting).

The one exception is a pool thread blocked on nested work of its own (a weave inside a
sync task, or ``asyncio.run`` of an async weave inside one): the pool lends one thread
while it waits, or a full pool would wait on itself forever. Nesting is bounded by the
code, so the loan is too.
"""

from __future__ import annotations

import contextvars
import itertools
import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final

from . import hooks
from .services import Job, keep_serving, run_job

_IDLE_SECONDS: Final = 60.0
_local = threading.local()

#: True in the context of a sync call running on a pool thread: code that blocks that
#: thread on an event loop it starts (``asyncio.run``, asgiref's ``async_to_sync``, whose
#: loop runs on another thread with this context copied) is nested work of a pool thread.
in_pool_call: Final[contextvars.ContextVar[bool]] = contextvars.ContextVar(
    "wove_in_pool_call", default=False
)


def _retire() -> None:
    """Sentinel job: the idle worker that takes it leaves the pool."""


_RETIRE: Final = _retire


class ThreadPool:
    """Daemon worker threads pulling jobs from one queue.

    A worker is started when a job arrives and more jobs wait than workers are idle,
    up to the bound; a worker idle for a minute leaves. Daemon threads, because a sync
    task abandoned at its timeout must not keep the interpreter from exiting.
    """

    def __init__(self, max_threads: int) -> None:
        self._max = max_threads
        self._lent = 0  # extra threads lent to pool threads blocked on nested work
        self._abandoned = 0  # threads held by calls abandoned at their timeout
        self._queue: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0  # workers waiting for a job
        self._queued = 0  # jobs put and not yet taken
        self._names = itertools.count(1)

    @property
    def max_threads(self) -> int:
        return self._max

    @property
    def abandoned(self) -> int:
        """Threads held by calls abandoned at their timeout (they count against the cap)."""
        return self._abandoned

    @property
    def threads(self) -> int:
        return self._threads

    def saturated(self) -> bool:
        """Every thread the cap allows is busy (a racy read: as good as its moment)."""
        return self._threads >= self._max + self._lent and self._idle == 0

    def submit(self, job: Job) -> None:
        with self._lock:
            self._queued += 1
            start = self._queued > self._idle and self._threads < self._max + self._lent
            if start:
                self._threads += 1
        self._queue.put(job)
        if start:
            self._start_worker()

    def _start_worker(self) -> None:
        thread = threading.Thread(target=self._work, name=f"wove-{next(self._names)}", daemon=True)
        thread.start()

    def _work(self) -> None:
        _local.pool_worker = True
        ident = threading.get_ident()
        _pool_threads.add(ident)
        try:
            keep_serving(self._serve, "thread pool")
        finally:
            _pool_threads.discard(ident)
            hooks.thread_exit()

    def _serve(self) -> bool:
        """Serve jobs; True once this worker leaves the pool."""
        get, lock = self._queue.get, self._lock
        while True:
            with lock:
                self._idle += 1
            try:
                job = get(timeout=_IDLE_SECONDS)
            except queue.Empty:
                with lock:
                    self._idle -= 1
                    if self._queued <= self._idle:  # spare: no queued job counts on us
                        self._threads -= 1
                        return True
                continue
            with lock:
                self._idle -= 1
                self._queued -= 1
            if job is _RETIRE:
                return True  # counted out by resize()
            run_job(job)
            del job  # an idle worker must not keep the last weave's values alive
            with lock:
                if self._threads > self._max + self._lent:  # the bound was lowered: leave
                    self._threads -= 1
                    return True

    def resize(self, max_threads: int) -> None:
        """Change the bound; idle workers above a lowered bound leave now, busy ones
        after their job."""
        with self._lock:
            self._max = max_threads
            excess = self._threads - max_threads - self._lent
            leaving = max(min(excess, self._idle - self._queued), 0)
            self._threads -= leaving
            self._queued += leaving
            room = self._max + self._lent - self._threads
            starting = max(min(self._queued - leaving - self._idle, room), 0)
            self._threads += starting
        for _ in range(leaving):
            self._queue.put(_RETIRE)
        for _ in range(starting):  # a raised bound serves jobs already waiting
            self._start_worker()

    def abandon(self) -> None:
        """A call on a pool thread was abandoned at its timeout: its thread stays busy
        (and counted) until the call returns."""
        with self._lock:
            self._abandoned += 1

    def reclaim(self) -> None:
        """The abandoned call returned; its thread serves the pool again."""
        with self._lock:
            self._abandoned -= 1

    def _lend(self) -> None:
        with self._lock:
            self._lent += 1
            start = self._queued > self._idle and self._threads < self._max + self._lent
            if start:  # jobs queued behind the bound: serve them now
                self._threads += 1
        if start:
            self._start_worker()

    def _give_back(self) -> None:
        # The lent thread may sit idle now: if the pool is over its bound, one idle
        # worker leaves at once (not after running one more job above the cap).
        with self._lock:
            self._lent -= 1
            retire = self._threads > self._max + self._lent and self._idle > self._queued
            if retire:
                self._threads -= 1
                self._queued += 1
        if retire:
            self._queue.put(_RETIRE)

    @contextmanager
    def blocking(self, *, nested_loop: bool = False) -> Iterator[None]:
        """Lend a thread while a pool thread waits on nested work (no deadlock when every
        pool thread runs a task that itself runs a weave). ``nested_loop``: the waiter is
        a weave on an event loop, which may run on another thread than the pool thread
        it blocks (asgiref's ``async_to_sync``): the call's context tells."""
        held = getattr(_local, "pool_worker", False) or (nested_loop and in_pool_call.get())
        if not held:
            yield
            return
        self._lend()
        try:
            yield
        finally:
            self._give_back()


class Limiter:
    """At most ``capacity`` jobs of one weave in the pool at once; the rest queue here."""

    __slots__ = ("_capacity", "_lock", "_pending", "_running", "_submit")

    def __init__(self, submit: Callable[[Job], None], capacity: int) -> None:
        self._submit = submit
        self._capacity = capacity
        self._running = 0
        self._pending: deque[Job] = deque()
        self._lock = threading.Lock()

    def submit(self, job: Job) -> None:
        with self._lock:
            if self._running >= self._capacity:
                self._pending.append(job)
                return
            self._running += 1
        self._submit(lambda: self._slot(job))

    def _slot(self, job: Job | None) -> None:
        # The freed slot goes straight to the next queued job, on this same thread.
        while job is not None:
            run_job(job)
            with self._lock:
                if self._pending:
                    job = self._pending.popleft()
                else:
                    self._running -= 1
                    job = None


def on_pool_thread() -> bool:
    """Whether the current thread is one of the pool's workers."""
    return getattr(_local, "pool_worker", False)


_pool_threads: set[int] = set()  # idents of live pool workers (read racily: set ops are atomic)


def on_pool_thread_id(ident: int) -> bool:
    """Whether the thread ``ident`` is one of the pool's workers."""
    return ident in _pool_threads


# --- the process-wide pool, created lazily and forgotten in a forked child ------------

_lock = threading.Lock()
_pool: ThreadPool | None = None
_max_threads = 256


def thread_pool() -> ThreadPool:
    global _pool
    if _pool is None:
        with _lock:
            if _pool is None:
                _pool = ThreadPool(_max_threads)
    return _pool


def set_max_threads(count: int) -> None:
    """Bound the shared pool; applies to the pool created next (and to the current one)."""
    global _max_threads
    with _lock:
        _max_threads = count
        if _pool is not None:
            _pool.resize(count)


def replace_pool(pool: ThreadPool | None) -> ThreadPool | None:
    """Swap the process's pool (tests use a fresh one); returns the previous one."""
    global _pool
    with _lock:
        previous, _pool = _pool, pool
    return previous


def _forget_in_child() -> None:
    global _pool, _lock
    _lock = threading.Lock()
    _pool = None
    _pool_threads.clear()
    _local.__dict__.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
