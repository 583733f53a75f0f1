"""The worker's side: the function every Wove call runs on a Dask worker.

Dask pickles the call's function and arguments itself (cloudpickle: closures travel by
value) and sends them through its scheduler; :func:`run_call` runs the function in the
caller's trace context and returns a reply body (the value, or the function's exception
with the worker's traceback), so that every environment rebuilds outcomes the same way.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import time
from typing import Any, Final

from wove.contrib.remote import replies
from wove.contrib.remote.tracing import task_span

#: The attribute of the worker's span that holds the Dask key of the call.
KEY_ATTRIBUTE: Final = "dask.key"


def run_call(
    function: Any,
    kwargs: dict[str, Any],
    task: str,
    origin: str,
    carrier: dict[str, str] | None,
    key: str,
    limit: int | None,
) -> bytes:
    """Run ``function(**kwargs)`` here; its reply body (value or exception)."""
    info: dict[str, Any] = {"worker": socket.gethostname()}
    with task_span(task, carrier, origin, key, KEY_ATTRIBUTE) as span:
        start = time.perf_counter()
        try:
            value = function(**kwargs)
            if inspect.isawaitable(value):
                value = asyncio.run(_awaited(value))
        # SystemExit and KeyboardInterrupt raised by the task's code are its errors, as
        # for a local task; they must not end the worker.
        except (Exception, SystemExit, KeyboardInterrupt) as error:
            info["seconds"] = time.perf_counter() - start
            span.failed(error)
            return replies.error_body(error, info, limit, origin.rpartition(":")[0])
        info["seconds"] = time.perf_counter() - start
        return replies.ok_body(task, value, info, limit)


def run_weave(run: Any, origin: str, carrier: dict[str, str] | None) -> int:
    """Run a detached weave here; its exit status (0: success)."""
    from wove.contrib.remote.tracing import weave_context

    with weave_context(carrier, origin):
        status: int = run()
    return status


async def _awaited(awaitable: Any) -> Any:
    return await awaitable
