"""Thread-call wrappers and thread-exit hooks: what integrations put around sync calls.

The registry is read on every sync task call, so it is kept as ready-made tuples that
are replaced whole (under this module's lock) and read without a lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .services import logger

ThreadCallWrapper = Callable[[Callable[[], Any]], Any]


@dataclass(frozen=True, slots=True)
class _Registered:
    wrapper: ThreadCallWrapper
    caller_thread: bool
    at_thread_exit: Callable[[], None] | None


_lock = threading.Lock()
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
