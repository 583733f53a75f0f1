"""Wove's dedicated threads (loop threads, serial threads) and whether one is blocked.

A sync weave blocks the thread that entered it until it is done. When that thread is one
of Wove's dedicated threads, work of any weave must go elsewhere meanwhile, or the thread
would wait on itself. The same holds for a dedicated thread held by a call abandoned at
its timeout. This registry, with its own lock, is where both are marked.
"""

from __future__ import annotations

import os
import threading


class Dedicated:
    """A thread of Wove's that weaves can be blocked on (counted under the registry lock)."""

    blocked: int = 0
    ident: int | None = None


class ForeignThread(Dedicated):
    """Any thread that is not Wove's (asgiref's thread-sensitive executor, a caller's),
    blocked by a call abandoned at its timeout: one shared counter for all of them."""


_lock = threading.Lock()
_threads: dict[int, Dedicated] = {}
foreign = ForeignThread()


def register(dedicated: Dedicated, ident: int) -> None:
    with _lock:
        dedicated.ident = ident
        _threads[ident] = dedicated


def block_current_thread() -> Dedicated | None:
    """Mark this thread blocked if it is one of Wove's dedicated threads."""
    with _lock:
        dedicated = _threads.get(threading.get_ident())
        if dedicated is not None:
            dedicated.blocked += 1
        return dedicated


def block_thread(ident: int) -> Dedicated:
    """Mark the thread ``ident`` blocked (by a call abandoned at its timeout)."""
    with _lock:
        dedicated = _threads.get(ident, foreign)
        dedicated.blocked += 1
        return dedicated


def unblock(dedicated: Dedicated | None) -> None:
    if dedicated is not None:
        with _lock:
            dedicated.blocked -= 1


def is_free(dedicated: Dedicated) -> bool:
    """Not blocked (a racy read, as good as the moment it is made)."""
    return not dedicated.blocked


def _forget_in_child() -> None:
    global _lock, foreign
    _lock = threading.Lock()
    _threads.clear()
    foreign = ForeignThread()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
