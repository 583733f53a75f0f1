"""How one piece of detached work runs, in each of the modes the web adapters share:
in this process (a background weave, or awaited in the request's task) or in a forked
child that reports back. :mod:`.after_response` decides what runs and when.
"""

from __future__ import annotations

import contextlib
import functools
import keyword
import logging
import os
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from types import CodeType, FunctionType
from typing import Any, TypeGuard

from wove import TraceRecord, Weave, WeaveBlock, WoveResult, collecting, weave
from wove.lowlevel import RESERVED_NAMES, is_async_callable, running_fork_server
from wove.lowlevel import weave_at as weave_named_at

from .forked import (
    ChildScope,
    Followed,
    capture_followed,
    fork_reports,
    resume_followed,
    send_report,
)
from .request import DETACHED, ActiveRequest, describe

logger = logging.getLogger("wove")

_codes: dict[tuple[str, bool], CodeType] = {}


def is_template(function: object) -> TypeGuard[type[Weave]]:
    """A :class:`wove.Weave` class: run as a weave of its own, with keyword data."""
    return isinstance(function, type) and issubclass(function, Weave)


def detached_task(
    function: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> Callable[..., Any]:
    """A task calling ``function(*args, **kwargs)``, sync or async as the function is,
    named after it when it can be (so the trace shows ``send_receipt``, not a wrapper)."""
    is_async = is_async_callable(function)
    wrapper: Callable[..., Any]
    if is_async:

        async def detached_async() -> Any:
            return await function(*args, **kwargs)

        wrapper = detached_async
    else:

        def detached() -> Any:
            return function(*args, **kwargs)

        wrapper = detached
    name = getattr(function, "__name__", "")
    if not name.isidentifier() or keyword.iskeyword(name) or name in RESERVED_NAMES:
        return wrapper
    code = _codes.get((name, is_async))
    if code is None:
        renamed = wrapper.__code__.replace(co_name=name, co_qualname=name)
        code = _codes.setdefault((name, is_async), renamed)
    return FunctionType(code, wrapper.__globals__, name, None, wrapper.__closure__)


@functools.lru_cache(maxsize=512)
def weave_at(origin: str) -> Callable[..., WeaveBlock]:
    """``weave`` as if called at ``origin`` (``file:line``, the user's ``detach()``), so
    every detached weave's trace rows, log messages and spans point at the user's code,
    not into wove/contrib (``wove.lowlevel.weave_at``)."""
    filename, _, line = origin.rpartition(":")
    if not filename or not line.isdigit():
        return weave
    return weave_named_at(origin)


def run_forked(
    function: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    label: str,
    recorded: ActiveRequest | None,
    origin: str = "",
    followed: Followed | None = None,
) -> None:
    """Run ``function(*args, **kwargs)`` (or a Weave class with ``kwargs``) in a detached
    child process. The child sends its error (and, when ``recorded``, its trace) back to
    this process, which logs it and files the trace: even with recording off, a failure
    reaches this process's log rather than the child's /dev/null. ``origin``: the user's
    ``detach()`` call (``file:line``), named as the weave's origin. ``followed``: what
    the fork followers captured at ``detach()`` (None: capture it now), given the
    child's report too (the OpenTelemetry spans)."""
    start = weave_at(origin) if origin else weave
    active = recorded if recorded is not None else ActiveRequest(DETACHED, label, None, False)
    if followed is None:
        followed = capture_followed()
    scopes = _child_scopes(followed)
    reports = fork_reports()
    address = reports.expect(active, followed)
    server = running_fork_server()
    if server is not None:  # forked by a process that never had other threads
        body = functools.partial(
            run_reported,
            *(function, args, kwargs, label, origin, address, active.id, recorded is not None),
            scopes=scopes,  # pickled: each is entered in the child the server forks
        )
        try:
            server.submit(body)
        except Exception as exc:
            reports.abandon(active, describe(exc))
            raise
        return
    parent = os.getpid()

    def on_done(result: WoveResult) -> None:  # runs in the child
        if os.getpid() == parent:  # the child never started: the start watch says so here
            _never_started(active, result, origin)
            reports.abandon(active, describe(result.exception or RuntimeError("not started")))
            return
        error = result.exception
        text = None if error is None else describe(error)
        trace = "" if error is None else "".join(traceback.format_exception(error))
        send_report(address, active, text, trace, _reports(scopes))

    try:
        with contextlib.ExitStack() as stack:
            for _, scope in scopes:  # set in the context the child inherits
                stack.enter_context(scope)
            if recorded is not None:
                stack.enter_context(collecting(active.collect))
            if is_template(function):
                with start(function, background=True, fork=True, on_done=on_done, **kwargs):
                    pass
            else:
                with start(background=True, fork=True, on_done=on_done) as w:
                    w.do(detached_task(function, args, kwargs))
    except Exception as exc:
        reports.abandon(active, describe(exc))
        raise


def run_reported(
    function: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    label: str,
    origin: str,
    address: str,
    report_id: str,
    recorded: bool,
    scopes: Sequence[tuple[str, ChildScope]] = (),
) -> int:
    """In a child of the fork server: run the work to its end here, then send its
    trace (when ``recorded``), error and followers' reports (``scopes``, entered around
    the work: the OpenTelemetry spans) to ``address`` under ``report_id``, as a child
    forked by :func:`run_forked` does. The exit status: 0 when it succeeded."""
    start = _raising(origin)
    active = ActiveRequest(DETACHED, label, None, False)
    active.id = report_id
    error: BaseException | None = None
    try:
        with contextlib.ExitStack() as stack:
            for _, scope in scopes:
                stack.enter_context(scope)
            if recorded:
                stack.enter_context(collecting(active.collect))
            if is_template(function):
                with start(function, **kwargs):
                    pass
            else:
                with start() as w:
                    w.do(detached_task(function, args, kwargs))
    except Exception as exc:
        error = exc
    text = None if error is None else describe(error)
    trace = "" if error is None else "".join(traceback.format_exception(error))
    send_report(address, active, text, trace, _reports(scopes))
    return 0 if error is None else 1


def _reports(scopes: Sequence[tuple[str, ChildScope]]) -> dict[str, object]:
    """In the child, its work done: each follower's report, by its key."""
    extra: dict[str, object] = {}
    for key, scope in scopes:
        try:
            extra[key] = scope.report()
        except Exception:
            logger.exception("wove: %r could not report", scope)
    return extra


def _raising(origin: str) -> Callable[..., WeaveBlock]:
    """``weave`` (at ``origin``) whose block raises the work's failure whatever
    ``wove.config(error_mode=...)`` says: the callers learn of a failure that way, to
    log and trace it."""
    return functools.partial(weave_at(origin) if origin else weave, error_mode="raise")


def _never_started(active: ActiveRequest, result: WoveResult, origin: str) -> None:
    """A record for each task of the weave the killed child never started: cancelled,
    zero length, with the error, so the trace shows what never ran (the core logged it)."""
    error = result.exception
    now = time.perf_counter()
    text = None if error is None else describe(error)
    for task in sorted(result.cancelled):  # every task: none of them ran
        active.collect(
            TraceRecord(origin, 0, task, None, "thread", "", now, now, 0, "cancelled", text)
        )


def _child_scopes(followed: Followed) -> list[tuple[str, ChildScope]]:
    scopes: list[tuple[str, ChildScope]] = []
    for follower, captured in followed:
        try:
            scopes.append((follower.key, follower.child_scope(captured)))
        except Exception:
            logger.exception("wove: %r could not follow detached work", follower)
    return scopes


def start_background(
    function: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    label: str,
    active: ActiveRequest | None,
    origin: str = "",
    followed: Followed = (),
) -> None:
    """Start the work as a background weave in this process and return at once: for an
    adapter that starts it on the server's own thread (Django's ``response.close()``),
    which must not wait for it. Its end (and error) is logged and traced in ``on_done``.
    ``followed``: what the fork followers captured at ``detach()``, made current again
    around the start (the request's span, which has ended by now)."""
    start = weave_at(origin) if origin else weave

    def on_done(result: WoveResult) -> None:
        error = result.exception
        if error is not None:
            logger.error("wove: detached work %s failed", label, exc_info=error)
        if active is not None:
            active.finish(None, error=None if error is None else describe(error))

    with contextlib.ExitStack() as stack:
        resume_followed(stack, followed)
        if active is not None:
            stack.enter_context(collecting(active.collect))
        if is_template(function):
            with start(function, background=True, on_done=on_done, **kwargs):
                pass
        else:
            with start(background=True, on_done=on_done) as w:
                w.do(detached_task(function, args, kwargs))


async def run_here(
    function: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    label: str,
    active: ActiveRequest | None,
    origin: str = "",
    followed: Followed = (),
) -> None:
    """Run the work to its end in the calling task, as a Starlette background task runs
    (so the ASGI server, and the lifespan's shutdown, wait for it). A failure is logged
    and traced, not raised; a cancellation is traced, then raised. ``followed``: as for
    :func:`start_background`."""
    start = _raising(origin)
    error: BaseException | None = None
    try:
        with contextlib.ExitStack() as stack:
            resume_followed(stack, followed)
            if active is not None:
                stack.enter_context(collecting(active.collect))
            if is_template(function):
                async with start(function, **kwargs):
                    pass
            else:
                async with start() as w:
                    w.do(detached_task(function, args, kwargs))
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
