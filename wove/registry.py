"""A process-wide registration list: what integrations add (error hints, instruments)
and the engine reads on every weave.

Read without a lock, as a tuple that is replaced whole; written under its own lock,
which a forked child renews (a fork while another thread registers must not leave the
child's next registration waiting forever).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

_all: weakref.WeakSet[Registry[object]] = weakref.WeakSet()


class Registry(Generic[T]):
    __slots__ = ("__weakref__", "_lock", "items")

    def __init__(self) -> None:
        self.items: tuple[T, ...] = ()
        self._lock = threading.Lock()
        _all.add(self)  # type: ignore[arg-type]

    def add(self, item: T) -> Callable[[], None]:
        """Register ``item``; returns a function that removes it (this registration)."""
        with self._lock:
            self.items = (*self.items, item)

        def remove() -> None:
            with self._lock:
                self.items = tuple(i for i in self.items if i is not item)

        return remove

    def _renew_lock(self) -> None:
        self._lock = threading.Lock()


def _forget_in_child() -> None:
    for registry in list(_all):
        registry._renew_lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
