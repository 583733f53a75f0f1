"""The worker's side: Wove's one Celery task, ``wove.run``.

It is a shared task, so every Celery app that imports :mod:`wove.contrib.celery`
registers it (``Celery(..., include=["wove.contrib.celery"])``, or the Django app's
autodiscovery). It takes one argument, a signed envelope, and verifies it before
anything is unpickled: a forged, tampered or expired envelope is refused, logged and
never run. A call's envelope holds a task's function and arguments; the task runs
here and its sealed reply (value or exception) is stored as the Celery result. A weave's
envelope holds a whole detached weave, which runs here, ``on_done`` included.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
import time
from typing import Any, Final, cast

from celery import Task, shared_task, states

from . import capture, replies
from .env import CALL, REPLY, TASK_NAME, WEAVE, CeleryEnv, env_for_key
from .envelope import EnvelopeError, open_envelope, seal

logger: Final = logging.getLogger("wove")


def _run(self: Task, envelope: Any) -> None:
    """Verify ``envelope``, run what it holds, and store the sealed reply."""
    task_id = self.request.id
    env, kind, body = _opened(envelope, task_id)
    if kind == WEAVE:
        run, origin = cast(tuple[Any, str], capture.loads(body))
        logger.info("wove: running the detached weave at %s (Celery task %s)", origin, task_id)
        run()  # logs its own failure, calls on_done
        return
    function, kwargs, task, origin = cast(tuple[Any, dict[str, Any], str, str], capture.loads(body))
    info: dict[str, Any] = {"worker": self.request.hostname or socket.gethostname()}
    start = time.perf_counter()
    try:
        value = function(**kwargs)
        if inspect.isawaitable(value):
            value = asyncio.run(_awaited(value))
    except Exception as error:
        info["seconds"] = time.perf_counter() - start
        source = origin.rpartition(":")[0]
        reply = replies.error_body(error, info, env.max_payload, source)
    else:
        info["seconds"] = time.perf_counter() - start
        reply = replies.ok_body(task, value, info, env.max_payload)
    sealed = seal(env.keyring, REPLY, task_id, reply)
    self.backend.store_result(task_id, sealed, states.SUCCESS, request=self.request)


#: Wove's Celery task: a shared task, so every app importing this module has it. It
#: stores its own (sealed) reply, so Celery stores nothing else but its failures.
run_envelope: Final[Any] = shared_task(
    name=TASK_NAME, bind=True, ignore_result=True, store_errors_even_if_ignored=True
)(_run)


def _opened(envelope: Any, task_id: str) -> tuple[CeleryEnv, str, bytes]:
    """The environment, kind and body of a verified envelope; refused ones raise (and
    are logged), and Celery stores that failure as the task's result."""
    key_id = envelope.get("kid") if isinstance(envelope, dict) else None
    kind = envelope.get("kind") if isinstance(envelope, dict) else None
    env = env_for_key(key_id)
    try:
        if env is None:
            raise EnvelopeError(
                "unknown-key",
                f"no CeleryEnv in this worker knows key id {key_id!r}; configure the same "
                f"CeleryEnv (same keys) in the worker's process as in the sender's",
            )
        expected = kind if kind in (CALL, WEAVE) else CALL
        body = open_envelope(
            env.keyring, envelope, kind=expected, max_age=env.max_age, message_id=task_id
        )
    except EnvelopeError as refused:
        logger.warning("wove: refused the envelope of Celery task %s: %s", task_id, refused)
        raise
    return env, expected, body


async def _awaited(awaitable: Any) -> Any:
    return await awaitable
