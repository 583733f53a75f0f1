"""``await merge(fn)`` / ``await merge(fn, items)`` inside a running task."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar, overload

from .engine import Run, current_run
from .errors import DefinitionError, WeaveStateError
from .graph import check_iterable
from .task_spec import is_async_callable

T = TypeVar("T")


@overload
def merge(function: Callable[[], Awaitable[T]] | Callable[[], T], /) -> Awaitable[T]: ...
@overload
def merge(
    function: Callable[[Any], Awaitable[T]] | Callable[[Any], T], items: Iterable[Any], /
) -> Awaitable[list[T]]: ...


def merge(function: Callable[..., Any], items: Iterable[Any] | None = None, /) -> Awaitable[Any]:
    """Call ``function`` once, or once per item concurrently, from inside a running task.

    Sync callables run on the weave's threads, async ones on its loop. With ``items`` the
    result is a list in input order; the first item to fail cancels the others and its
    exception is raised. Raises :class:`wove.WeaveStateError` at once outside an async
    task of a running weave.
    """
    run = current_run()
    if run is None or run.finished:
        raise WeaveStateError(
            "merge() was called outside a running weave; call `await merge(fn)` inside an "
            "async task of a `with weave()` block (or call the function directly)"
        )
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise WeaveStateError(
            "merge() must be awaited, so it works inside `async def` tasks only; in a sync "
            "task, call the function directly"
        ) from None
    if not callable(function):
        raise DefinitionError(f"merge() expects a callable, got {type(function).__name__}")
    if items is None:
        return _call(run, function, ())
    check_iterable(f"merge({getattr(function, '__name__', 'function')})", None, items)
    return _call_each(run, function, list(items))


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
