"""A thread for the thread-sensitive work of one async task call.

Thread-sensitive sync calls (asgiref's ``sync_to_async(thread_sensitive=True)``, and so
Django's async ORM) run one at a time, in order, on one thread. With one such thread per
request, every async task of a weave queues behind the others. A :class:`TaskThread` is
the thread of one async task call instead:

- its own: a thread borrowed from the shared pool at the call's first submit (so it
  counts against ``max_threads``), held until the call ends, its whole session inside
  the thread-call wrappers, as a pool task's call is (a database integration opens the
  thread's connection for the session and closes or returns it at the end);
- or the lane of thread-sensitive sync tasks, when the weave keeps thread-sensitive
  work with its caller (inside a transaction): every call goes there, in order.

An integration maps it onto its library (``wove.lowlevel.add_async_call_wrapper``).
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, Final

from . import hooks, pool, services
from .services import Job

_CLOSE: Final = object()

_Item = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class TaskThread(Executor):
    """An executor running one call at a time, in submission order, on one thread.

    ``route`` None: a pool thread of its own, taken at the first submit and given back
    by :meth:`close`. Else each call is sent to ``route`` (a serial lane: the waiting
    caller's thread), inside the thread-call wrappers that apply there."""

    def __init__(self, route: Callable[[Job], None] | None = None) -> None:
        self._route = route
        self._lock = threading.Lock()
        self._items: queue.SimpleQueue[_Item | object] = queue.SimpleQueue()
        self._started = False
        self._closed = False
        self._cancel_queued = False
        self._ended: Future[None] | None = None
        self._context: contextvars.Context | None = None
        self._broken: BaseException | None = None  # a wrapper failed around the session

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Run ``fn(*args, **kwargs)`` after the calls submitted before it; its future."""
        future: Future[Any] = Future()
        item: _Item = (future, fn, args, kwargs)
        route = self._route
        with self._lock:
            if self._closed:
                raise RuntimeError(
                    "cannot schedule new futures after the async task call that owns this "
                    "thread has ended"
                )
            if self._broken is not None:  # its session never ran, or ended: say why
                future.set_exception(self._broken)
                return future
            start = not self._started
            if start:
                self._started = True
                # The submitting task call's context (its trace annotations, say): the
                # wrappers run in it, as they do around a sync task's call.
                context = contextvars.copy_context()
                context.run(pool.in_pool_call.set, route is None)
                self._context = context
                if route is None:
                    self._ended = Future()
            if route is None:
                self._items.put(item)
        if route is not None:
            route(lambda: self._routed(item))
        elif start:
            pool.thread_pool().submit(self._session)
        return future

    def close(self) -> Future[None] | None:
        """No more calls: the session ends after the calls already submitted. A future
        set once the thread has been given back (after its wrappers' cleanup), or None
        when there is nothing to wait for."""
        with self._lock:
            if not self._closed and self._ended is not None:
                self._items.put(_CLOSE)  # after every call submitted (submit holds the lock)
            self._closed = True
        return self._ended

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if cancel_futures:
            self._cancel_queued = True
        ended = self.close()
        if wait and ended is not None:
            ended.result()

    # --- its own thread -------------------------------------------------------------

    def _session(self) -> None:
        assert self._context is not None
        assert self._ended is not None
        try:
            self._context.run(hooks.wrapped_call, hooks.thread_call_wrappers(), self._serve, {})
        except BaseException as error:  # a wrapper failed (a connection not opened, say)
            self._fail_queued(error)
        finally:
            self._context = None
            self._ended.set_result(None)

    def _serve(self) -> None:
        get = self._items.get
        while (item := get()) is not _CLOSE:
            assert isinstance(item, tuple)
            if self._cancel_queued:
                item[0].cancel()
            else:
                _run(item)
            del item

    def _fail_queued(self, error: BaseException) -> None:
        """The calls waiting, and any submitted later, fail with ``error``: never left
        waiting for a session that is over."""
        failed = 0
        with self._lock:
            self._broken = error
            while True:
                try:
                    item = self._items.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, tuple) and item[0].set_running_or_notify_cancel():
                    item[0].set_exception(error)
                    failed += 1
        if not failed:
            services.logger.error(
                "wove: a thread-call wrapper failed around an async task's thread",
                exc_info=(type(error), error, error.__traceback__),
            )

    # --- the caller's lane ----------------------------------------------------------

    def _routed(self, item: _Item) -> None:
        context = self._context
        assert context is not None
        context.run(hooks.wrapped_call, hooks.caller_thread_wrappers(), _run, {"item": item})


def _run(item: _Item) -> None:
    future, fn, args, kwargs = item
    if not future.set_running_or_notify_cancel():
        return
    try:
        result = fn(*args, **kwargs)
    except BaseException as error:
        future.set_exception(error)
    else:
        future.set_result(result)
