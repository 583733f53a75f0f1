"""Shared by the tests: a counter of calls running at the same time."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Overlap:
    """Counts how many calls are inside ``running()`` at once (the most ever: ``peak``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.calls = 0

    @contextmanager
    def running(self) -> Iterator[None]:
        with self._lock:
            self.now += 1
            self.calls += 1
            self.peak = max(self.peak, self.now)
        try:
            yield
        finally:
            with self._lock:
                self.now -= 1
