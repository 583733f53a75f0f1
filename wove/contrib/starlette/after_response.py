"""``detach``: work an endpoint registers to start once its response has been sent.

The middleware gives each request a list of pending work (a contextvar, so it is seen
from async endpoints, from sync endpoints on anyio's worker threads, and from the task
an outer ``BaseHTTPMiddleware`` runs the app in). Once the last body message has gone
to the server, and the app (with its own background tasks) has returned, it starts the
work. Modes:

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

import contextlib
import contextvars
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from wove import InvalidOptionError, WeaveStateError, collecting, weave
from wove.contrib.traces import DETACHED, ActiveRequest, RequestRecorder
from wove.contrib.traces.detached import detached_task, is_template, run_forked
from wove.contrib.traces.request import describe

from .conf import DETACH_MODES, DetachMode

logger = logging.getLogger("wove")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class DetachedWork:
    function: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    mode: DetachMode

    @property
    def name(self) -> str:
        return getattr(self.function, "__qualname__", None) or repr(self.function)


@dataclass(slots=True)
class PendingWork:
    """What one request's endpoint registered; the middleware starts it."""

    method: str
    path: str
    recorder: RequestRecorder | None  # None: recording is off
    default_mode: DetachMode
    items: list[DetachedWork] = field(default_factory=list)
    dropped_because: str | None = None
    closed: bool = False  # the app returned: what detach() adds now would never run


_pending: contextvars.ContextVar[PendingWork | None] = contextvars.ContextVar(
    "wove_starlette_detach_pending", default=None
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
    if function is None:
        if args or kwargs:
            raise InvalidOptionError(
                "detach() got arguments but no function; call detach(function, *args) "
                "or use @detach / @detach(mode=...) as a decorator"
            )
        return lambda decorated: detach(decorated, mode=mode)
    pending = _pending.get()
    if pending is None:
        raise WeaveStateError(
            "detach() runs work after a request's response, so it must be called while "
            "a request handled by WoveMiddleware is in progress; add "
            "Middleware(wove.contrib.starlette.WoveMiddleware) to the app's middleware, "
            "or outside a request use `with weave(background=True)`"
        )
    if pending.closed:
        raise WeaveStateError(
            f"detach() was called after {pending.method} {pending.path} was over (from a "
            "task that outlived the request?); its detached work has already been started, "
            "so this would never run; use `with weave(background=True)` instead"
        )
    chosen = pending.default_mode if mode is None else mode
    if chosen not in DETACH_MODES:
        raise InvalidOptionError(
            f"detach mode must be one of {', '.join(map(repr, DETACH_MODES))}, got {chosen!r}"
        )
    if not callable(function):
        raise InvalidOptionError(f"detach() needs a function to call, got {function!r}")
    if is_template(function) and args:
        raise InvalidOptionError(
            f"detach({function.__name__}, ...) runs a Weave class with keyword data only; "
            "pass its inputs as keywords"
        )
    pending.items.append(DetachedWork(function, args, kwargs, chosen))
    return function


def current_pending() -> PendingWork | None:
    """The request's pending work, while the middleware handles a request."""
    return _pending.get()


# --- the middleware's side ----------------------------------------------------------------


def open_pending(
    method: str, path: str, recorder: RequestRecorder | None, mode: DetachMode
) -> tuple[PendingWork, contextvars.Token[Any]]:
    pending = PendingWork(method, path, recorder, mode)
    return pending, _pending.set(pending)


def close_pending(token: contextvars.Token[Any], pending: PendingWork) -> None:
    pending.closed = True
    _pending.reset(token)


def drop(pending: PendingWork, reason: str) -> None:
    """The endpoint raised: drop the work it detached (it may rely on what failed)."""
    items, pending.items = pending.items, []
    pending.dropped_because = reason
    for item in items:
        logger.warning(
            "wove: detached work %s of %s %s was not started: %s",
            item.name,
            pending.method,
            pending.path,
            reason,
        )


async def run_all(pending: PendingWork) -> None:
    """Start (fork) or run (background) everything ``pending`` holds, one after another;
    one item failing does not stop the next."""
    items, pending.items = pending.items, []
    for position, item in enumerate(items):
        label = f"{item.name} after {pending.method} {pending.path}"
        active = pending.recorder.begin(DETACHED, label) if pending.recorder else None
        try:
            if item.mode == "fork":
                _start_fork(item, label, active)
            else:
                await _run_here(item, label, active)
        except Exception:
            logger.exception("wove: detached work %s could not be started", label)
        except BaseException as exc:  # cancelled: say what will not run
            pending.items = items[position + 1 :]
            drop(pending, f"the request's task was stopped ({type(exc).__name__})")
            raise


async def _run_here(item: DetachedWork, label: str, active: ActiveRequest | None) -> None:
    error: BaseException | None = None
    try:
        with collecting(active.collect) if active is not None else contextlib.nullcontext():
            if is_template(item.function):
                async with weave(item.function, **item.kwargs):
                    pass
            else:
                async with weave() as w:
                    w.do(detached_task(item.function, item.args, item.kwargs))
    except Exception as exc:
        error = exc
        logger.error("wove: detached work %s failed", label, exc_info=exc)
    except BaseException as exc:  # cancelled (a server's shutdown): file it, then stop
        logger.warning("wove: detached work %s was stopped: %s", label, describe(exc))
        if active is not None:
            active.finish(None, error=describe(exc))
        raise
    if active is not None:
        active.finish(None, error=None if error is None else describe(error))


def _start_fork(item: DetachedWork, label: str, active: ActiveRequest | None) -> None:
    run_forked(item.function, item.args, item.kwargs, label, active)
