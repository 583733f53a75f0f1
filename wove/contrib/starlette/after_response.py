"""``detach``: work an endpoint registers to start once its response has been sent.

The middleware gives each request a list of pending work (a contextvar, so it is seen
from async endpoints, from sync endpoints on anyio's worker threads, and from the task
an outer ``BaseHTTPMiddleware`` runs the app in). Once the last body message has gone
to the server, and the app (with its own background tasks) has returned, it starts the
work. The bookkeeping (the list, its lock, refusing a late ``detach()``, the checks,
running each item and tracing it) is the shared core,
:mod:`wove.contrib.traces.after_response`; this module is the ASGI glue. Modes:

- ``"background"``: in this process, in the request's task, as a Starlette background
  task is: a weave of one task, so a sync function runs on Wove's pool (never on
  anyio's thread limiter) and an async one on the event loop. Gone if the process stops.
- ``"fork"``: a detached child process (the core's double fork); the child sends its
  trace and error back to this process.

A function, or a :class:`wove.Weave` class (its tasks are then the detached weave's
tasks, each traced). Errors are logged (logger ``"wove"``) and filed in the trace store
as a separate trace named after the work and the request that detached it. If the
endpoint raises, the work it registered is dropped (and logged).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any, TypeVar, overload

from wove.contrib.traces import RequestRecorder
from wove.contrib.traces import after_response as core
from wove.contrib.traces.after_response import PendingWork

from .conf import DETACH_MODES, DetachMode

F = TypeVar("F", bound=Callable[..., Any])

_detacher = core.Detacher(
    "starlette",
    modes=DETACH_MODES,
    missing=(
        "detach() runs work after a request's response, so it must be called while "
        "a request handled by WoveMiddleware is in progress; add "
        "Middleware(wove.contrib.starlette.WoveMiddleware) to the app's middleware, "
        "or outside a request use `with weave(background=True)`"
    ),
)


@overload
def detach(function: F, /, *args: Any, mode: DetachMode | None = ..., **kwargs: Any) -> F: ...
@overload
def detach(*, mode: DetachMode | None = ...) -> Callable[[F], F]: ...
def detach(function: Any = None, /, *args: Any, mode: Any = None, **kwargs: Any) -> Any:
    """Run ``function(*args, **kwargs)`` after this request's response has been sent.

    As a call: ``detach(send_receipt, order_id)``; ``function`` may be sync or async,
    or a :class:`wove.Weave` class (run as ``weave(cls, **kwargs)``). As a decorator,
    inside the endpoint: ``@detach`` or ``@detach(mode="fork")`` above a ``def``
    registers it (with no arguments) and leaves the name bound to the function.
    ``mode`` defaults to the middleware's ``detach_mode`` (``"background"``). Needs
    :class:`~wove.contrib.starlette.WoveMiddleware`.
    """
    return _detacher.detach(function, args, kwargs, mode)


def current_pending() -> PendingWork | None:
    """The request's pending work, while the middleware handles a request."""
    return _detacher.current()


# --- the middleware's side ----------------------------------------------------------------


def open_pending(
    method: str, path: str, recorder: RequestRecorder | None, mode: DetachMode
) -> tuple[PendingWork, contextvars.Token[Any]]:
    pending = PendingWork(method, path, recorder=lambda: recorder, default_mode=lambda: mode)
    return pending, _detacher.enter(pending)


def close_pending(token: contextvars.Token[Any], pending: PendingWork) -> None:
    """The app returned: a later ``detach()`` is refused (its work is about to be run,
    or there is none and nothing would run it)."""
    pending.close()
    _detacher.exit(token)


def drop(pending: PendingWork, reason: str) -> None:
    """The endpoint raised: drop the work it detached (it may rely on what failed)."""
    pending.drop(reason)


async def run_all(pending: PendingWork) -> None:
    """Run (background) or start (fork) everything ``pending`` holds, one after another,
    in the request's task; one item failing does not stop the next."""
    await core.run_all(pending)


__all__ = [
    "PendingWork",
    "close_pending",
    "current_pending",
    "detach",
    "drop",
    "open_pending",
    "run_all",
]
