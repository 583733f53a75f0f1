"""A call run on a worker, written once for every environment: :func:`run_call`.

The function runs in the caller's trace (the worker's span, a child of the caller's),
an awaitable it returns is awaited, and the outcome becomes the reply body the caller
turns back into the value or the function's own exception
(:func:`wove.contrib.remote.replies.outcome`).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Mapping
from typing import Any

from . import replies
from .tracing import task_span


def run_call(
    function: Callable[..., Any],
    kwargs: Mapping[str, Any],
    task: str,
    origin: str,
    carrier: Mapping[str, str] | None,
    run_id: str,
    id_attribute: str,
    info: dict[str, Any],
    limit: int | None,
    goes_on_up: Callable[[BaseException], bool] = lambda error: False,
) -> bytes:
    """Run ``function(**kwargs)`` here and return its reply body (value or exception),
    ``info`` (where it ran) completed with how long it took. ``run_id`` is the engine's
    id of the call, the attribute ``id_attribute`` of the worker's span; ``limit`` caps
    the reply's size. ``SystemExit`` and ``KeyboardInterrupt`` raised by the function
    are its errors, as for a local task, and must not end the worker, unless
    ``goes_on_up(error)`` says the worker itself is being stopped (then it is raised)."""
    with task_span(task, carrier, origin, run_id, id_attribute) as span:
        start = time.perf_counter()
        try:
            value = function(**kwargs)
            if inspect.isawaitable(value):
                value = asyncio.run(_awaited(value))
        except (Exception, SystemExit, KeyboardInterrupt) as error:
            if goes_on_up(error):
                raise
            info["seconds"] = time.perf_counter() - start
            span.failed(error)
            return replies.error_body(error, info, limit, origin.rpartition(":")[0])
        info["seconds"] = time.perf_counter() - start
        return replies.ok_body(task, value, info, limit)


async def _awaited(awaitable: Any) -> Any:
    return await awaitable
