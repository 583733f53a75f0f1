"""The middleware's options, checked once when the app builds it.

The defaults mirror the Django adapter's: traces recorded and kept in memory,
``Server-Timing`` and the trace pages only while the app runs with ``debug=True``.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from starlette.requests import Request

from wove import InvalidOptionError

DetachMode = Literal["background", "fork"]
DETACH_MODES: tuple[DetachMode, ...] = ("background", "fork")

#: Decides who sees the trace pages: takes the request, returns (or awaits to) a bool.
TraceAccess: TypeAlias = Callable[[Request], "bool | Awaitable[bool]"]


@dataclass(frozen=True, slots=True)
class WoveOptions:
    record: bool = True
    server_timing: bool | None = None  # None: only when the app has debug=True
    server_timing_entries: int = 20
    trace_store_size: int = 100
    keep_empty_traces: bool = False
    trace_sample_rate: float = 1.0  # share of requests recorded in full
    trace_slow_ms: float | None = 500.0  # kept even if not sampled; None: never for that
    trace_unsampled_timings: bool = True  # unsampled requests collect task timings
    trace_path: str | None = "/wove/"  # None: no trace pages
    trace_access: TraceAccess | None = None  # None: only when the app has debug=True
    max_threads: int | None = None  # wove.configure(max_threads=...) at startup
    detach_mode: DetachMode = "background"
    shutdown_timeout: float = 30.0  # seconds the lifespan's shutdown waits for work

    def __post_init__(self) -> None:
        for name in ("record", "keep_empty_traces", "trace_unsampled_timings"):
            _flag(name, getattr(self, name))
        if self.server_timing is not None:
            _flag("server_timing", self.server_timing)
        _count("server_timing_entries", self.server_timing_entries)
        _count("trace_store_size", self.trace_store_size)
        rate = self.trace_sample_rate
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
            raise InvalidOptionError(
                "WoveMiddleware(trace_sample_rate=...) must be a number from 0.0 (only failed "
                f"and slow requests) to 1.0 (every request), got {rate!r}"
            )
        slow = self.trace_slow_ms
        if slow is not None and (
            isinstance(slow, bool)
            or not isinstance(slow, int | float)
            or not 0 <= slow < float("inf")
        ):
            raise InvalidOptionError(
                "WoveMiddleware(trace_slow_ms=...) must be None (never) or milliseconds >= 0, "
                f"got {slow!r}"
            )
        if self.max_threads is not None:
            _count("max_threads", self.max_threads)
        path = self.trace_path
        if path is not None and (
            not isinstance(path, str) or not path.startswith("/") or not path.endswith("/")
        ):
            raise InvalidOptionError(
                f"WoveMiddleware(trace_path=...) must be None or a path starting and ending "
                f"with '/', such as '/wove/'; got {path!r}"
            )
        if self.trace_access is not None and not callable(self.trace_access):
            raise InvalidOptionError(
                "WoveMiddleware(trace_access=...) must be None (only with debug=True) or a "
                f"function taking the request and returning a bool; got {self.trace_access!r}"
            )
        if self.detach_mode not in DETACH_MODES:
            raise InvalidOptionError(
                "WoveMiddleware(detach_mode=...) must be one of "
                f"{', '.join(map(repr, DETACH_MODES))}, got {self.detach_mode!r}"
            )
        timeout = self.shutdown_timeout
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0:
            raise InvalidOptionError(
                f"WoveMiddleware(shutdown_timeout=...) must be seconds >= 0, got {timeout!r}"
            )


async def allowed(options: WoveOptions, request: Request, debug: bool) -> bool:
    """Whether ``request`` may see the trace pages."""
    if options.trace_access is None:
        return debug
    verdict: Any = options.trace_access(request)
    if inspect.isawaitable(verdict):
        verdict = await verdict
    return bool(verdict)


def _flag(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise InvalidOptionError(f"WoveMiddleware({name}=...) must be True or False, got {value!r}")


def _count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidOptionError(f"WoveMiddleware({name}=...) must be an int >= 1, got {value!r}")
