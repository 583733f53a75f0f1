"""The worker process's side: run each call received on the pipe, send back its reply.

A worker serves one call at a time, in order, until the pool closes its end of the
pipe (or the pool's process exits: the same end-of-file). The pipe is private to the
pool's process and this one, so its bytes are trusted and unpickled as they come.
"""

from __future__ import annotations

import os
from multiprocessing.connection import Connection
from typing import Any, Final, cast

from wove.contrib.remote import capture, replies
from wove.contrib.remote.running import run_call
from wove.contrib.remote.tracing import weave_context

#: Payload kinds: a task's call, a detached weave.
CALL: Final = "call"
WEAVE: Final = "weave"
#: The attribute of the worker's span that holds the worker's process id.
PID_ATTRIBUTE: Final = "process.pid"


def serve(connection: Connection) -> None:
    """Serve calls from ``connection`` until it closes (the pool's entry point)."""
    while True:
        try:
            payload = connection.recv_bytes()
        except (EOFError, OSError):  # the pool closed its end, or its process is gone
            return
        connection.send_bytes(run_payload(payload))


def run_payload(payload: bytes) -> bytes:
    """The reply to one payload: its call's value or exception, as a reply body."""
    message = cast(tuple[Any, ...], capture.loads(payload))
    info: dict[str, Any] = {"worker": f"pid {os.getpid()}"}
    if message[0] == WEAVE:
        run, origin, carrier = message[1:]
        with weave_context(carrier, origin):  # the weave's span joins the caller's trace
            status = run()  # logs its own failure, calls on_done
        return replies.ok_body("the detached weave", status, info, None)
    function, kwargs, task, origin, carrier = message[1:]
    pid = str(os.getpid())
    return run_call(function, kwargs, task, origin, carrier, pid, PID_ATTRIBUTE, info, None)
