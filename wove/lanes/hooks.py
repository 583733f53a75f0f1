"""Thread-call wrappers and thread-exit hooks: what integrations put around sync calls;
async-call wrappers: what they put around async task calls.

The registry is read on every sync task call, so it is kept as ready-made tuples that
are replaced whole (under this module's lock) and read without a lock.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from .services import logger

ThreadCallWrapper = Callable[[Callable[[], Any]], Any]
AsyncCall = Callable[[], Awaitable[Any]]
AsyncCallWrapper = Callable[[AsyncCall, Executor | None], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class _Registered:
    wrapper: ThreadCallWrapper
    caller_thread: bool
    at_thread_exit: Callable[[], None] | None


_lock = threading.Lock()
_registered: tuple[_Registered, ...] = ()
_wrappers: tuple[ThreadCallWrapper, ...] = ()
_caller_wrappers: tuple[ThreadCallWrapper, ...] = ()
_async_entries: tuple[tuple[object, AsyncCallWrapper], ...] = ()
_async_wrappers: tuple[AsyncCallWrapper, ...] = ()


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
    the caller's thread (or its thread-sensitive executor), and pool tasks that a waiting
    caller runs itself: right for observing (counting queries), wrong for hygiene (those
    calls share the caller's resources). ``at_thread_exit`` is called on each pool thread
    as it leaves the pool (idle, or the bound was lowered), to release what the thread
    still holds (a persistent database connection). Applies to weaves started after the
    call; returns a function that removes the registration.
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


def thread_call_wrappers() -> tuple[ThreadCallWrapper, ...]:
    """The wrappers of calls on pool threads."""
    return _wrappers


def caller_thread_wrappers() -> tuple[ThreadCallWrapper, ...]:
    """The wrappers that also apply on the caller's thread (thread-sensitive tasks)."""
    return _caller_wrappers


def thread_exit() -> None:
    """Run on a pool thread leaving the pool: the registered exit hooks, none raising."""
    for entry in _registered:
        if entry.at_thread_exit is not None:
            try:
                entry.at_thread_exit()
            except Exception:
                logger.exception("wove: a thread exit hook raised")


def wrapped_call(
    wrappers: tuple[ThreadCallWrapper, ...], function: Callable[..., Any], kwargs: dict[str, Any]
) -> Any:
    """Call ``function(**kwargs)`` inside every wrapper (the first registered is the
    outermost)."""

    def call() -> Any:
        return function(**kwargs)

    for wrapper in reversed(wrappers):
        call = _bind(wrapper, call)
    return call()


def _bind(wrapper: ThreadCallWrapper, call: Callable[[], Any]) -> Callable[[], Any]:
    return lambda: wrapper(call)


def add_async_call_wrapper(wrapper: AsyncCallWrapper) -> Callable[[], None]:
    """Run every async task call (each attempt, each item of a mapped task) as
    ``await wrapper(call, thread)``, in that call's context on its event loop.

    ``wrapper`` must await ``call()`` once and return its value. ``thread`` is where the
    call's thread-sensitive sync work belongs: a ``concurrent.futures.Executor`` that runs
    one function at a time, in order, on one thread. When the weave keeps thread-sensitive
    work with its caller (``thread_sensitive=True``, or the configured policy says so:
    inside a database transaction), it sends every function to the caller's thread (a
    sync caller's, or the dedicated one of a background weave); otherwise the thread is
    the call's own: a thread of Wove's pool, counted against ``max_threads``, taken at
    the first function and held until the call ends, its whole session inside the
    thread-call wrappers (``add_thread_call_wrapper``), like a sync task's call. It is
    ``None`` when an async caller keeps thread-sensitive work with it: leave such work
    where the caller's library sends it. The Django adapter hands ``thread`` to
    asgiref's ``sync_to_async(thread_sensitive=True)``, so each async task runs its ORM
    queries on a thread and connection of its own. Applies to weaves started after the
    call; returns a function that removes the registration.
    """
    global _async_entries, _async_wrappers
    entry = (object(), wrapper)  # removed by identity, even if registered twice
    with _lock:
        _async_entries = (*_async_entries, entry)
        _async_wrappers = tuple(e[1] for e in _async_entries)

    def remove() -> None:
        global _async_entries, _async_wrappers
        with _lock:
            _async_entries = tuple(e for e in _async_entries if e is not entry)
            _async_wrappers = tuple(e[1] for e in _async_entries)

    return remove


def async_call_wrappers() -> tuple[AsyncCallWrapper, ...]:
    """The wrappers of async task calls."""
    return _async_wrappers


def wrapped_async_call(
    wrappers: tuple[AsyncCallWrapper, ...], call: AsyncCall, thread: Executor | None
) -> Awaitable[Any]:
    """``call()`` inside every wrapper (the first registered is the outermost)."""
    for wrapper in reversed(wrappers):
        call = _bind_async(wrapper, call, thread)
    return call()


def _bind_async(wrapper: AsyncCallWrapper, call: AsyncCall, thread: Executor | None) -> AsyncCall:
    return lambda: wrapper(call, thread)
