"""``detach``: work a view registers to start once its response has been sent.

The middleware gives each request a list of pending work; after the view returns, it
hooks the response's ``close()``, which both WSGI and ASGI servers call after the last
byte went out, so the client has the response before the work starts. The bookkeeping
(the list, its lock, the checks, starting each item and tracing it) is the shared core,
:mod:`wove.contrib.traces.after_response`; this module is the Django glue. Modes:

- ``"background"`` (formerly ``"thread"``, still accepted with a DeprecationWarning): a
  background weave in this process (its sync work on Wove's pool, with connection
  hygiene). Gone if the process stops.
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

import contextvars
import logging
from collections.abc import Callable
from typing import Any, TypeVar, overload

from django.http import HttpResponseBase

from wove import InvalidOptionError
from wove.contrib.traces import ActiveRequest, RequestRecorder
from wove.contrib.traces.after_response import (
    DetachedWork,
    Detacher,
    PendingWork,
    Starter,
    start_all,
)
from wove.contrib.traces.request import describe

from . import conf
from .recording import recorder

logger = logging.getLogger("wove")

F = TypeVar("F", bound=Callable[..., Any])


def _check_tasks(function: Any, mode: str) -> None:
    """``"tasks"`` takes a Django task, and only that mode does."""
    is_task = callable(getattr(function, "enqueue", None))
    if mode == "tasks" and not is_task:
        raise InvalidOptionError(
            f"detach(mode='tasks') needs a task made with @task (django.tasks, or the "
            f"django_tasks backport on Django 5.2), got {function!r}; decorate it with "
            "@task at module level, or use mode='background' or 'fork'"
        )
    if mode != "tasks" and is_task:
        raise InvalidOptionError(
            f"detach() got a task ({function!r}) with mode={mode!r}; enqueue it with "
            "mode='tasks', or pass the plain function to run it in this process"
        )


_detacher = Detacher(
    "django",
    modes=conf.DETACH_MODES,
    renamed=conf.RENAMED_DETACH_MODES,
    check=_check_tasks,
    missing=(
        "detach() runs work after a request's response, so it must be called while "
        "a request handled by WoveMiddleware is in progress; add "
        "'wove.contrib.django.middleware.WoveMiddleware' to MIDDLEWARE, or outside a "
        "request use `with weave(background=True)`"
    ),
)

Mode = conf.DetachMode | conf.RenamedDetachMode


@overload
def detach(function: F, /, *args: Any, mode: Mode | None = ..., **kwargs: Any) -> F: ...
@overload
def detach(*, mode: Mode | None = ...) -> Callable[[F], F]: ...
def detach(function: Any = None, /, *args: Any, mode: Any = None, **kwargs: Any) -> Any:
    """Run ``function(*args, **kwargs)`` after this request's response has been sent.

    As a call: ``detach(send_receipt, order.pk)``; ``function`` may also be a
    :class:`wove.Weave` class (run as ``weave(cls, **kwargs)``). As a decorator, inside
    the view: ``@detach`` or ``@detach(mode="fork")`` above a ``def`` registers it (with
    no arguments) and leaves the name bound to the function. ``mode`` defaults to
    ``WOVE["DETACH_MODE"]`` (``"background"``). Needs ``WoveMiddleware``.
    """
    return _detacher.detach(function, args, kwargs, mode)


# --- the middleware's side ----------------------------------------------------------------


def open_pending(method: str, path: str) -> tuple[PendingWork, contextvars.Token[Any]]:
    pending = PendingWork(method, path, recorder=_recorder, default_mode=_default_mode)
    return pending, _detacher.enter(pending)


def close_pending(token: contextvars.Token[Any]) -> None:
    _detacher.exit(token)


def current_pending() -> PendingWork | None:
    """The request's pending work, while the middleware handles a request."""
    return _detacher.current()


def start_after(response: HttpResponseBase, pending: PendingWork) -> None:
    """Start ``pending``'s work when the server closes ``response`` (after sending it);
    the middleware's ``process_exception`` set ``dropped_because`` if the view raised."""
    if pending.dropped_because is not None:
        pending.drop(pending.dropped_because)
        return
    if pending.close_if_empty():  # nothing to start: no need to hook close()
        return
    close = response.close

    def close_then_start() -> None:
        try:
            close()
        finally:
            start_all(pending, _STARTERS)

    response.close = close_then_start  # type: ignore[method-assign]


def _recorder() -> RequestRecorder | None:
    return recorder() if conf.wove_settings().record else None


def _default_mode() -> str:
    return conf.wove_settings().detach_mode


def _start_task(item: DetachedWork, label: str, active: ActiveRequest | None) -> None:
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


_STARTERS: dict[str, Starter] = {"tasks": _start_task}  # the core starts "background" and "fork"
