"""A bounded, thread-safe memory of recent request traces.

Bounded so that leaving tracing on in production cannot grow memory without limit: the
oldest trace is dropped when a new one arrives. A lock, not just the deque, because
``get`` and ``recent`` iterate, and iterating a deque another thread appends to raises.
"""

from __future__ import annotations

import threading
from collections import deque

from .request import RequestTrace


class TraceStore:
    """The last ``max_requests`` traces, newest first when read."""

    def __init__(self, max_requests: int = 100) -> None:
        if isinstance(max_requests, bool) or not isinstance(max_requests, int):
            raise TypeError(f"max_requests must be an int, got {type(max_requests).__name__}")
        if max_requests < 1:
            raise ValueError(f"max_requests must be at least 1, got {max_requests}")
        self._traces: deque[RequestTrace] = deque(maxlen=max_requests)
        self._lock = threading.Lock()

    @property
    def max_requests(self) -> int:
        return self._traces.maxlen or 0

    def add(self, trace: RequestTrace) -> None:
        with self._lock:
            self._traces.append(trace)

    def get(self, trace_id: str) -> RequestTrace | None:
        """The trace with this id, or None once it has been dropped (or never existed)."""
        with self._lock:
            for trace in self._traces:
                if trace.id == trace_id:
                    return trace
        return None

    def recent(self) -> list[RequestTrace]:
        """A copy, newest first, so callers can render it without holding the lock."""
        with self._lock:
            return list(reversed(self._traces))

    def clear(self) -> None:
        with self._lock:
            self._traces.clear()

    def __len__(self) -> int:
        return len(self._traces)
