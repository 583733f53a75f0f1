"""Where a call runs: the only module that creates threads or drives event loops.

* :func:`thread_pool` is one process-wide pool of daemon threads for sync work, created
  lazily, grown on demand up to ``configure(max_threads=...)``, shrunk when idle, and
  forgotten in a forked child (the parent's threads do not exist there).
* :class:`Limiter` bounds how many jobs of one weave hold a pool thread (``max_workers``).
* :func:`deadlines` is one process-wide timer thread for sync timeouts, rate-limited
  starts and stuck-task reports: timing a thread needs no thread of its own.
* :func:`loop_for_sync_caller` gives a sync ``with weave()`` an event loop for its async
  tasks that the calling thread is not itself blocking.
* :class:`CallerWaiter` is how a sync caller waits: it serves work sent back to its
  thread until the weave is done (asgiref's ``CurrentThreadExecutor`` shape).

A *job* is a callable taking no argument and returning nothing, written never to raise.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import heapq
import itertools
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

Job = Callable[[], None]

logger: Final = logging.getLogger("wove")

_IDLE_SECONDS: Final = 60.0


def _retire() -> None:
    """Sentinel job: the idle worker that takes it leaves the pool."""


_RETIRE: Final = _retire
_local = threading.local()


def _run_job(job: Job) -> None:
    try:
        job()
    except BaseException:  # a job is written not to raise; never let one kill a worker
        logger.exception("wove: internal error in a worker job")


class ThreadPool:
    """Daemon worker threads pulling jobs from one queue.

    A worker is started when a job arrives and more jobs wait than workers are idle,
    up to the bound; a worker idle for a minute leaves. Daemon threads, because a sync
    task abandoned at its timeout must not keep the interpreter from exiting.
    """

    def __init__(self, max_threads: int) -> None:
        self._max = max_threads
        self._lent = 0  # extra threads lent to pool threads blocked on nested weaves
        self._queue: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0  # workers waiting for a job
        self._queued = 0  # jobs put and not yet taken
        self._names = itertools.count(1)

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
        try:
            self._serve()
        finally:
            _thread_exit()

    def _serve(self) -> None:
        _local.pool_worker = True
        get, lock = self._queue.get, self._lock
        while True:
            with lock:
                self._idle += 1
            try:
                job = get(timeout=_IDLE_SECONDS)
            except queue.Empty:
                with lock:
                    if self._queued < self._idle:  # spare: no queued job counts on us
                        self._idle -= 1
                        self._threads -= 1
                        return
                    self._idle -= 1
                continue
            with lock:
                self._idle -= 1
                self._queued -= 1
            if job is _RETIRE:
                return  # counted out by resize()
            _run_job(job)
            del job  # an idle worker must not keep the last weave's values alive
            with lock:
                if self._threads > self._max + self._lent:  # the bound was lowered: leave
                    self._threads -= 1
                    return

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

    def lend(self) -> None:
        """One more thread than the bound, while a pool thread is held by something
        that is not a job (a nested wait, a call abandoned at its timeout)."""
        with self._lock:
            self._lent += 1
            start = self._queued > self._idle and self._threads < self._max + self._lent
            if start:  # jobs queued behind the bound: serve them now
                self._threads += 1
        if start:
            self._start_worker()

    def give_back(self) -> None:
        with self._lock:
            self._lent -= 1

    @contextmanager
    def blocking(self) -> Iterator[None]:
        """Lend a thread while a pool thread waits on nested work (no deadlock when every
        pool thread runs a task that itself runs a weave)."""
        if not getattr(_local, "pool_worker", False):
            yield
            return
        self.lend()
        try:
            yield
        finally:
            self.give_back()


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
            _run_job(job)
            with self._lock:
                if self._pending:
                    job = self._pending.popleft()
                else:
                    self._running -= 1
                    job = None


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
        self._seq = itertools.count()
        self._wake = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None

    def arm(self, when: float, callback: Callable[[], None]) -> Deadline:
        deadline = Deadline(when, callback)
        with self._wake:
            heapq.heappush(self._heap, (when, next(self._seq), deadline))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch, name="wove-deadlines", daemon=True
                )
                self._thread.start()
            elif self._heap[0][2] is deadline:
                self._wake.notify()
        return deadline

    def _watch(self) -> None:
        while True:
            with self._wake:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._wake.wait(timeout)
                _, _, deadline = heapq.heappop(self._heap)
            if not deadline.cancelled:
                try:
                    deadline.callback()
                except BaseException:
                    logger.exception("wove: internal error in a deadline callback")


class LoopThread:
    """An event loop running forever in a daemon thread, for sync callers' async tasks."""

    def __init__(self, index: int) -> None:
        self.blocked = 0  # sync weaves waiting on this loop's own thread (under _lock)
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        self.thread = threading.Thread(
            target=self._run, args=(started,), name=f"wove-loop-{index}", daemon=True
        )
        self.thread.start()
        started.wait()

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(started.set)
        self.loop.run_forever()


class SerialThread:
    """One dedicated daemon thread running jobs one after another: the thread-sensitive
    lane when no caller thread waits (background weaves, async callers without
    asgiref), as asgiref's single thread-sensitive executor does."""

    def __init__(self, index: int) -> None:
        self.blocked = 0  # weaves waiting on this thread, or calls abandoned on it
        self._queue: queue.SimpleQueue[Job] = queue.SimpleQueue()
        name = "wove-sensitive" if not index else f"wove-sensitive-{index}"
        self.thread = threading.Thread(target=self._work, name=name, daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> None:
        self._queue.put(job)

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            _run_job(job)
            del job


class CallerWaiter:
    """A sync caller blocks here until the run is over, serving work sent to its thread.

    Used as a context manager around the whole run: if the caller's thread is one of
    Wove's loop threads, that loop is marked blocked from before any task starts, so no
    nested weave (on any thread) sends async work to it.
    """

    __slots__ = ("_blocking", "_queue")
    _DONE: Final = object()

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._blocking: LoopThread | SerialThread | None = None

    def __enter__(self) -> CallerWaiter:
        self._blocking = block_current_thread()
        return self

    def __exit__(self, *exc_info: object) -> None:
        unblock(self._blocking)

    def done(self) -> None:
        self._queue.put(self._DONE)

    def call(self, job: Callable[[], None]) -> None:
        """Run ``job`` on the waiting thread."""
        self._queue.put(job)

    def wait(self) -> None:
        with thread_pool().blocking():
            while (item := self._queue.get()) is not self._DONE:
                item()


def call_on_loop(
    loop: asyncio.AbstractEventLoop, loop_thread: int, callback: Callable[[], None]
) -> None:
    """Run ``callback`` on ``loop``'s thread: now if already there, else soon."""
    if threading.get_ident() == loop_thread:
        callback()
    else:
        loop.call_soon_threadsafe(callback)


def reap(process: subprocess.Popen[bytes]) -> None:
    """Wait for a detached subprocess in a daemon thread, so it never stays a zombie."""
    threading.Thread(target=process.wait, name="wove-reaper", daemon=True).start()


def start_service(target: Callable[[], None], name: str) -> threading.Thread:
    """Start a long-lived daemon thread serving the whole process (e.g. the one thread
    that waits for every pending remote result). Not rebuilt after a fork: its owner
    forgets it in the child (``os.register_at_fork``) and starts a new one when needed."""
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


def run_coroutine(coroutine: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
    """Run a coroutine on Wove's first loop thread from any thread that is not it."""
    return asyncio.run_coroutine_threadsafe(coroutine, loop_for_sync_caller().loop)


def where_is(thread_id: int) -> str | None:
    """'file:line in function' of what a thread runs now (for a timeout's note)."""
    frame = sys._current_frames().get(thread_id)
    if frame is None:
        return None
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"


# --- thread-call wrappers --------------------------------------------------------------

ThreadCallWrapper = Callable[[Callable[[], Any]], Any]


@dataclass(frozen=True, slots=True)
class _Registered:
    wrapper: ThreadCallWrapper
    caller_thread: bool
    at_thread_exit: Callable[[], None] | None


_registered: tuple[_Registered, ...] = ()
_wrappers: tuple[ThreadCallWrapper, ...] = ()
_caller_wrappers: tuple[ThreadCallWrapper, ...] = ()


def add_thread_call_wrapper(
    wrapper: ThreadCallWrapper,
    *,
    caller_thread: bool = False,
    at_thread_exit: Callable[[], None] | None = None,
) -> Callable[[], None]:
    """Run every sync task call made on a pool thread as ``wrapper(call)``.

    ``wrapper`` receives the call (no arguments) and must call it once and return its
    value; it may set up and tear down around it. Integrations use this for per-thread
    resource hygiene (the Django adapter closes the pool thread's database connections
    after each task) and to annotate the trace (``wove.annotate``).

    ``caller_thread=True`` also wraps the calls of thread-sensitive tasks, which run on
    the caller's thread (or its thread-sensitive executor): right for observing (counting
    queries), wrong for hygiene (those calls share the caller's resources).
    ``at_thread_exit`` is called on each pool thread as it leaves the pool (idle, or the
    bound was lowered), to release what the thread still holds (a persistent database
    connection). Applies to weaves started after the call; returns a function that
    removes the registration.
    """
    entry = _Registered(wrapper, caller_thread, at_thread_exit)
    with _lock:
        _set_registered((*_registered, entry))

    def remove() -> None:
        with _lock:
            _set_registered(tuple(r for r in _registered if r is not entry))

    return remove


def _set_registered(entries: tuple[_Registered, ...]) -> None:
    global _registered, _wrappers, _caller_wrappers
    _registered = entries
    _wrappers = tuple(r.wrapper for r in entries)
    _caller_wrappers = tuple(r.wrapper for r in entries if r.caller_thread)


def caller_thread_wrappers() -> tuple[ThreadCallWrapper, ...]:
    """The wrappers that also apply on the caller's thread (thread-sensitive tasks)."""
    return _caller_wrappers


def _thread_exit() -> None:
    """Run on a pool thread leaving the pool: the registered exit hooks, none raising."""
    for entry in _registered:
        if entry.at_thread_exit is not None:
            try:
                entry.at_thread_exit()
            except Exception:
                logger.exception("wove: a thread exit hook raised")


def thread_call_wrappers() -> tuple[ThreadCallWrapper, ...]:
    return _wrappers


# --- process-wide singletons, created lazily and forgotten in a forked child -----------

_lock = threading.Lock()
_pool: ThreadPool | None = None
_watcher: DeadlineWatcher | None = None
_loops: list[LoopThread] = []
_max_threads = 256


_serials: list[SerialThread] = []
_pending_sensitive: set[asyncio.Task[Any]] = set()


def serial_thread() -> SerialThread:
    """A dedicated thread-sensitive thread that is neither this thread nor blocked.

    Nearly always the first one. A thread-sensitive task that itself waits on a weave
    with thread-sensitive tasks (and a call abandoned at its timeout) blocks its thread:
    work then goes to the next one, so no thread ever waits on itself.
    """
    ident = threading.get_ident()
    with _lock:
        for serial in _serials:
            if not serial.blocked and serial.thread.ident != ident:
                return serial
        _serials.append(SerialThread(len(_serials)))
        return _serials[-1]


def block_current_thread() -> LoopThread | SerialThread | None:
    """Mark this thread blocked if it is one of Wove's loop or thread-sensitive threads."""
    with _lock:
        return _block_dedicated(threading.get_ident())


def _block_dedicated(ident: int) -> LoopThread | SerialThread | None:
    """With ``_lock`` held: mark Wove's dedicated thread ``ident`` blocked, if it is one."""
    candidates: list[LoopThread | SerialThread] = [*_loops, *_serials]
    for dedicated in candidates:
        if dedicated.thread.ident == ident:
            dedicated.blocked += 1
            return dedicated
    return None


class ForeignThread:
    """A thread that is not Wove's (asgiref's thread-sensitive executor, a caller's),
    blocked by a call abandoned at its timeout."""

    __slots__ = ("blocked",)

    def __init__(self) -> None:
        self.blocked = 0


_foreign = ForeignThread()


def block_thread(ident: int) -> LoopThread | SerialThread | ForeignThread:
    """Mark the thread ``ident`` blocked (by a call abandoned at its timeout)."""
    with _lock:
        dedicated = _block_dedicated(ident)
        if dedicated is not None:
            return dedicated
        _foreign.blocked += 1
        return _foreign


def unblock(dedicated: LoopThread | SerialThread | ForeignThread | None) -> None:
    if dedicated is not None:
        with _lock:
            dedicated.blocked -= 1


def sensitive_lane_for(loop: asyncio.AbstractEventLoop) -> Callable[[Job], None]:
    """How an async caller runs thread-sensitive jobs: through asgiref's
    ``sync_to_async(thread_sensitive=True)`` when asgiref is installed (Django's own
    rule: the request's sync thread under ASGI), else on Wove's dedicated thread."""
    try:
        from asgiref.sync import sync_to_async
    except ImportError:
        return serial_thread().submit
    if getattr(_local, "in_sensitive_job", False):
        # This caller runs inside one of our asgiref thread-sensitive jobs (a loop
        # started by a thread-sensitive task): asgiref would queue the nested job behind
        # the very call that waits for it.
        return serial_thread().submit
    # The caller's context: it holds asgiref's per-request ThreadSensitiveContext, which
    # a job submitted from a pool thread would not carry.
    context = contextvars.copy_context()

    def submit(job: Job) -> None:
        if _foreign.blocked:
            # A call abandoned at its timeout may hold asgiref's thread: do not queue
            # behind it (the same rule as for Wove's own dedicated threads).
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
            task = loop.create_task(run(), context=context.copy())
            _pending_sensitive.add(task)  # asyncio keeps only weak references
            task.add_done_callback(_pending_sensitive.discard)

        loop.call_soon_threadsafe(start)

    return submit


def thread_pool() -> ThreadPool:
    global _pool
    if _pool is None:
        with _lock:
            if _pool is None:
                _pool = ThreadPool(_max_threads)
    return _pool


def deadlines() -> DeadlineWatcher:
    global _watcher
    if _watcher is None:
        with _lock:
            if _watcher is None:
                _watcher = DeadlineWatcher()
    return _watcher


def set_max_threads(count: int) -> None:
    """Bound the shared pool; applies to the pool created next (and to the current one)."""
    global _max_threads
    with _lock:
        _max_threads = count
        if _pool is not None:
            _pool.resize(count)


def loop_for_sync_caller() -> LoopThread:
    """A loop thread for a sync caller's async tasks that no waiting weave blocks.

    A sync caller blocks its thread until its weave is done. When that thread is one of
    Wove's loop threads (a sync weave inside an async task of a sync weave), that loop is
    marked blocked meanwhile, and async work of any weave goes to the next loop, so no
    loop ever waits on itself, directly or through a nested weave on another thread.
    """
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    with _lock:
        for loop_thread in _loops:
            if not loop_thread.blocked and loop_thread.loop is not running:
                return loop_thread
        _loops.append(LoopThread(len(_loops)))
        return _loops[-1]


def _forget_in_child() -> None:
    global _pool, _watcher, _lock
    _serials.clear()
    _pending_sensitive.clear()
    _lock = threading.Lock()
    _pool = None
    _watcher = None
    _loops.clear()
    _local.__dict__.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
