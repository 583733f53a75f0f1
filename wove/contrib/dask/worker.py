"""The worker's side: the function every Wove call runs on a Dask worker.

Dask pickles the call's function and arguments itself (cloudpickle: closures travel by
value) and sends them through its scheduler; :func:`run_call` runs the function in the
caller's trace context and returns a reply body (the value, or the function's exception
with the worker's traceback), so that every environment rebuilds outcomes the same way.
"""

from __future__ import annotations

import socket
from typing import Any, Final

from wove.contrib.remote import running

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
    return running.run_call(
        function, kwargs, task, origin, carrier, key, KEY_ATTRIBUTE, info, limit
    )


def run_weave(run: Any, origin: str, carrier: dict[str, str] | None) -> int:
    """Run a detached weave here; its exit status (0: success)."""
    from wove.contrib.remote.tracing import weave_context

    with weave_context(carrier, origin):
        status: int = run()
    return status
