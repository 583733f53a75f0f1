"""``detach``: work a view registers to start once its response has been sent.

The middleware gives each request a list of pending work; after the view returns, it
hooks the response's ``close()``, which both WSGI and ASGI servers call after the last
byte went out, so the client has the response before the work starts. Modes:

- ``"thread"``: a background weave in this process (its sync work on Wove's pool, with
  connection hygiene). Gone if the process stops.
- ``"fork"``: a detached child process (the core's double fork); inherited database
  connections are forgotten in the child, never closed, so the parent's keep working.
  The child sends its trace and error back to this process.
- ``"tasks"``: Django's tasks framework (``django.tasks`` on Django 6, the
  ``django-tasks`` backport on 5.2): the function must be a task (``@task``); it is
  enqueued on its backend, for work that must survive a restart.

Errors are logged (logger ``"wove"``) and filed in the trace store as a separate trace
named after the work and the request that detached it. If the view raises, the work it
registered is dropped (and logged), like ``transaction.on_commit`` after a rollback.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from django.http import HttpResponseBase

from wove import InvalidOptionError, WeaveStateError, WoveResult, collecting, weave
from wove.contrib.traces.detached import detached_task, run_forked
from wove.contrib.traces.request import DETACHED, ActiveRequest, describe

from . import conf
from .recording import recorder

logger = logging.getLogger("wove")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class DetachedWork:
    function: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    mode: conf.DetachMode

    @property
    def name(self) -> str:
        target = getattr(self.function, "func", self.function)  # a django task's function
        return getattr(target, "__qualname__", None) or repr(target)


@dataclass(slots=True)
class PendingWork:
    """What one request's views registered; the middleware starts it."""

    method: str
    path: str
    items: list[DetachedWork] = field(default_factory=list)
    dropped_because: str | None = None
    over: bool = False  # its work was started (or dropped): nothing registered now runs


_registering = threading.Lock()  # detach() against the start: no item left behind
_pending: contextvars.ContextVar[PendingWork | None] = contextvars.ContextVar(
    "wove_detach_pending", default=None
)


@overload
def detach(function: F, /, *args: Any, mode: conf.DetachMode | None = ..., **kwargs: Any) -> F: ...
@overload
def detach(*, mode: conf.DetachMode | None = ...) -> Callable[[F], F]: ...
def detach(function: Any = None, /, *args: Any, mode: Any = None, **kwargs: Any) -> Any:
    """Run ``function(*args, **kwargs)`` after this request's response has been sent.

    As a call: ``detach(send_receipt, order.pk)``. As a decorator, inside the view:
    ``@detach`` or ``@detach(mode="fork")`` above a ``def`` registers it (with no
    arguments) and leaves the name bound to the function. ``mode`` defaults to
    ``WOVE["DETACH_MODE"]`` (``"thread"``). Needs ``WoveMiddleware``.
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
            "'wove.contrib.django.middleware.WoveMiddleware' to MIDDLEWARE, or outside a "
            "request use `with weave(background=True)`"
        )
    chosen = conf.wove_settings().detach_mode if mode is None else mode
    if chosen not in conf.DETACH_MODES:
        raise InvalidOptionError(
            f"detach mode must be one of {', '.join(map(repr, conf.DETACH_MODES))}, got {chosen!r}"
        )
    is_task = callable(getattr(function, "enqueue", None))
    if chosen == "tasks" and not is_task:
        raise InvalidOptionError(
            f"detach(mode='tasks') needs a task made with @task (django.tasks, or the "
            f"django_tasks backport on Django 5.2), got {function!r}; decorate it with "
            "@task at module level, or use mode='thread' or 'fork'"
        )
    if chosen != "tasks" and is_task:
        raise InvalidOptionError(
            f"detach() got a task ({function!r}) with mode={chosen!r}; enqueue it with "
            "mode='tasks', or pass the plain function to run it in this process"
        )
    if chosen != "tasks" and not callable(function):
        raise InvalidOptionError(f"detach() needs a function to call, got {function!r}")
    with _registering:
        if pending.over:
            raise WeaveStateError(
                f"detach() was called after the response of {pending.method} {pending.path} "
                "was sent (by work that outlived the request, such as a background weave the "
                "view started), so nothing would start it; run the work there directly, or "
                "use `with weave(background=True)`"
            )
        pending.items.append(DetachedWork(function, args, kwargs, chosen))
    return function


# --- the middleware's side ----------------------------------------------------------------


def open_pending(method: str, path: str) -> tuple[PendingWork, contextvars.Token[Any]]:
    pending = PendingWork(method, path)
    return pending, _pending.set(pending)


def close_pending(token: contextvars.Token[Any]) -> None:
    _pending.reset(token)


def start_after(response: HttpResponseBase, pending: PendingWork) -> None:
    """Start ``pending``'s work when the server closes ``response`` (after sending it)."""
    with _registering:
        if not pending.items or pending.dropped_because is not None:
            pending.over = True
    if not pending.items:
        return
    if pending.dropped_because is not None:
        for item in pending.items:
            logger.warning(
                "wove: detached work %s of %s %s was not started: %s",
                item.name,
                pending.method,
                pending.path,
                pending.dropped_because,
            )
        return
    close = response.close

    def close_then_start() -> None:
        try:
            close()
        finally:
            start_all(pending)

    response.close = close_then_start  # type: ignore[method-assign]


def start_all(pending: PendingWork) -> None:
    with _registering:
        pending.over = True
        items, pending.items = pending.items, []
    for item in items:
        try:
            _START[item.mode](item, f"{item.name} after {pending.method} {pending.path}")
        except Exception:
            logger.exception("wove: detached work %s could not be started", item.name)


def _begin(label: str) -> ActiveRequest | None:
    return recorder().begin(DETACHED, label) if conf.wove_settings().record else None


def _start_thread(item: DetachedWork, label: str) -> None:
    active = _begin(label)

    def on_done(result: WoveResult) -> None:
        error = result.exception
        if error is not None:
            logger.error("wove: detached work %s failed", label, exc_info=error)
        if active is not None:
            active.finish(None, error=None if error is None else describe(error))

    with (
        collecting(active.collect) if active is not None else contextlib.nullcontext(),
        weave(background=True, on_done=on_done) as w,
    ):
        w.do(detached_task(item.function, item.args, item.kwargs))


def _start_fork(item: DetachedWork, label: str) -> None:
    run_forked(item.function, item.args, item.kwargs, label, _begin(label))


def _start_task(item: DetachedWork, label: str) -> None:
    active = _begin(label)
    try:
        result = item.function.enqueue(*item.args, **item.kwargs)  # type: ignore[attr-defined]
    except Exception as exc:
        logger.exception("wove: detached task %s could not be enqueued", label)
        if active is not None:
            active.finish(None, error=describe(exc))
        return
    if active is not None:
        active.finish(None, error=None)
    logger.debug("wove: enqueued %s as task result %s", label, getattr(result, "id", "?"))


_START: dict[str, Callable[[DetachedWork, str], None]] = {
    "thread": _start_thread,
    "fork": _start_fork,
    "tasks": _start_task,
}


def current_pending() -> PendingWork | None:
    """The request's pending work, while the middleware handles a request."""
    return _pending.get()
