"""``merge(fn)`` / ``merge(fn, items)`` inside a running task: awaited in an async task,
a plain blocking call in a sync one."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import sys
from collections.abc import Callable, Iterable
from typing import Any

from . import process_defaults
from .engine import Run, current_run
from .errors import DefinitionError, InvalidOptionError, MaxPendingError, WeaveStateError
from .graph import check_iterable
from .task_spec import UNSET, TaskOptions, _Unset, check_options, is_async_callable
from .weave import WeaveBlock, weave_at


def merge(
    function: Callable[..., Any],
    items: Iterable[Any] | None = None,
    /,
    *,
    retries: int | _Unset = UNSET,
    timeout: float | _Unset | None = UNSET,
    workers: int | _Unset | None = UNSET,
    limit_per_minute: float | _Unset | None = UNSET,
) -> Any:
    """Call ``function`` once, or once per item concurrently, from inside a running task.

    In an ``async def`` task, ``await merge(...)``; in a sync task, ``merge(...)`` blocks
    and returns the value (the pool thread lends its place while it waits, so a weave
    with ``max_workers=1`` cannot deadlock). Sync callables run on the weave's threads,
    async ones on its loop; a sync callable that returns a coroutine has it awaited.
    With ``items`` the result is a list in input order; the first item to fail cancels
    the others and its exception is raised. ``retries``, ``timeout``, ``workers`` and
    ``limit_per_minute`` mean what they mean on ``@w.do`` (the last two with ``items``
    only). Raises :class:`wove.WeaveStateError` outside a task of a running weave.
    """
    run = current_run()
    if run is None or run.finished:
        raise WeaveStateError(
            "merge() was called outside a running weave; call it inside a task of a "
            "`with weave()` block (`await merge(fn)` in an async task), or call the "
            "function directly"
        )
    if not callable(function):
        raise DefinitionError(f"merge() expects a callable, got {type(function).__name__}")
    options = TaskOptions(
        retries=retries, timeout=timeout, workers=workers, limit_per_minute=limit_per_minute
    ).normalized()
    if items is None:
        for option in ("workers", "limit_per_minute"):
            value = getattr(options, option)
            if value is not UNSET:
                raise InvalidOptionError(
                    f"merge({_name(function)}, {option}={value!r}): {option} only applies "
                    f"when merge() calls the function once per item; pass the items too: "
                    f"merge(fn, items, {option}={value!r})"
                )
    check_options(options, mapped=items is not None)
    if items is not None:
        check_iterable(f"merge({_name(function)})", None, items)
        items = list(items)
        # The weave's max_pending (its own, else wove.config's) bounds merged items as
        # it bounds a mapped task's.
        if run.max_pending is not None and len(items) > run.max_pending:
            raise MaxPendingError(f"merge({_name(function)})", len(items), run.max_pending)
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # a sync task (on a thread without a loop): a blocking call
        return _nested_blocking(function, items, options, run.max_pending, _caller())
    if options != TaskOptions() or process_defaults.shapes_merge():
        return _nested_awaited(function, items, options, run.max_pending, _caller())
    if items is None:
        return _call(run, function, ())
    return _call_each(run, function, items)


def _caller() -> str:
    frame = sys._getframe(2)
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


def _nested(origin: str, max_pending: int | None, function: Callable[..., Any]) -> WeaveBlock:
    """A weave for one merge() call, named after the line that calls merge() (its errors
    name ``merge(function)``, not the task standing for the call). Its one
    task calls the function (mapped over the items) with the options: the engine's own
    policy of a task (threads or the loop, retries, timeouts, workers, rate limits, a
    returned coroutine awaited) applies to merged calls as it is. Its error_mode is
    always "raise": merge() raises the first failure to its caller; its max_pending is
    the calling weave's."""
    return weave_at(origin, merged=_name(function))(error_mode="raise", max_pending=max_pending)


def _register(
    block: WeaveBlock, function: Callable[..., Any], items: list[Any] | None, options: TaskOptions
) -> None:
    given = {
        name: getattr(options, name)
        for name in ("retries", "timeout", "workers", "limit_per_minute")
        if getattr(options, name) is not UNSET
    }
    decorate = block.do(**given) if items is None else block.do(items, **given)
    if is_async_callable(function):
        if items is None:

            async def merge() -> Any:
                return await function()
        else:

            async def merge(item: Any) -> Any:  # type: ignore[misc]
                return await function(item)
    elif items is None:

        def merge() -> Any:  # type: ignore[misc]
            return function()
    else:

        def merge(item: Any) -> Any:  # type: ignore[misc]
            return function(item)

    decorate(merge)


def _nested_blocking(
    function: Callable[..., Any],
    items: list[Any] | None,
    options: TaskOptions,
    max_pending: int | None,
    origin: str,
) -> Any:
    with _nested(origin, max_pending, function) as block:
        _register(block, function, items, options)
    return block.result["merge"]


async def _nested_awaited(
    function: Callable[..., Any],
    items: list[Any] | None,
    options: TaskOptions,
    max_pending: int | None,
    origin: str,
) -> Any:
    async with _nested(origin, max_pending, function) as block:
        _register(block, function, items, options)
    return block.result["merge"]


async def _call(run: Run, function: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    if is_async_callable(function):
        return await function(*args)
    value = await _in_thread(run, function, args)
    if inspect.iscoroutine(value):  # a sync callable returning a coroutine: awaited
        value = await value
    return value


async def _in_thread(run: Run, function: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    loop = asyncio.get_running_loop()
    # The outcome travels as a (value, error) pair, never through set_exception: a
    # future refuses some exceptions (StopIteration), and the call would never settle.
    future: asyncio.Future[tuple[Any, BaseException | None]] = loop.create_future()
    context = contextvars.copy_context()

    def settle(value: Any, error: BaseException | None) -> None:
        if not future.done():
            future.set_result((value, error))

    def job() -> None:
        if future.cancelled():
            return
        try:
            value = context.run(run.thread_call, function, args)
        except BaseException as error:
            loop.call_soon_threadsafe(settle, None, error)
        else:
            loop.call_soon_threadsafe(settle, value, None)

    run.submit_counted(job)
    value, error = await future
    if error is not None:
        if isinstance(error, StopIteration):
            # Raised as it is, it would end this coroutine as if it returned; asyncio
            # turns it into a RuntimeError anyway: say which call raised it.
            raise RuntimeError(f"{_name(function)} raised StopIteration") from error
        raise error
    return value


def _name(function: Callable[..., Any]) -> str:
    return getattr(function, "__qualname__", None) or type(function).__name__


async def _call_each(run: Run, function: Callable[..., Any], items: list[Any]) -> list[Any]:
    if not items:
        return []
    calls = [asyncio.ensure_future(_call(run, function, (item,))) for item in items]
    try:
        await asyncio.wait(calls, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        pending = [call for call in calls if not call.done()]
        for call in pending:
            call.cancel()
        if pending:
            await asyncio.wait(pending)
    for call in calls:
        if not call.cancelled() and call.exception() is not None:
            raise call.exception()  # type: ignore[misc]
    return [call.result() for call in calls]
