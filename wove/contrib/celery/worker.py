"""The worker's side: Wove's one Celery task, ``wove.run``.

It is a shared task, so every Celery app that imports :mod:`wove.contrib.celery`
registers it (``Celery(..., include=["wove.contrib.celery"])``, or the Django app's
autodiscovery). It takes one argument, a signed envelope, and verifies it before
anything is unpickled: a forged, tampered or expired envelope is refused, logged and
never run. A call's envelope holds a task's function and arguments; the task runs
here and its sealed reply (value or exception) is stored as the Celery result. A weave's
envelope holds a whole detached weave, which runs here, ``on_done`` included. The
sender's trace context, when the envelope carries one, is the parent of the task's span
here (see :mod:`wove.contrib.celery.tracing`).
"""

from __future__ import annotations

import logging
import math
import socket
import time
from typing import Any, Final, cast

from billiard.common import terminate_handler_fired
from celery import Task, shared_task, states
from celery.exceptions import Ignore

from wove import InvalidOptionError
from wove.contrib.remote.running import run_call
from wove.lowlevel import get_env

from . import capture, replies
from .env import CALL, REPLY, TASK_NAME, WEAVE, CeleryEnv
from .envelope import EnvelopeError, envelope_trace, open_envelope, seal
from .lease import claim, claim_key, has_leases, heartbeat_for
from .results import json_backend
from .tracing import CELERY_TASK_ID, weave_context

logger: Final = logging.getLogger("wove")

#: How long (seconds) a worker tries to record that a reply it could not store is
#: lost, before it gives up (its caller then reports the worker lost).
LOST_PATIENCE: Final = 60.0


def _run(self: Task, envelope: Any, env: str | None = None) -> None:
    """Verify ``envelope``, run what it holds, and store the sealed reply."""
    task_id = self.request.id
    remote, kind, body = _opened(envelope, env, task_id)
    # (A detached weave needs no result backend; a call's reply travels through it.)
    backend = json_backend(self.app) if self.app.conf.result_backend else None
    leased = kind == CALL and backend is not None and has_leases(backend)
    if backend is not None:
        _claim(backend, remote, task_id, self.request, leased)
    if not leased:
        _call(self, remote, kind, body, envelope, backend)
        return
    heartbeat = heartbeat_for(self.app)
    heartbeat.hold(task_id, remote.lease, remote.heartbeat, _claim_seconds(remote))
    try:
        _call(self, remote, kind, body, envelope, backend)
    finally:  # stored (or given up): the lease expires by itself
        heartbeat.release(task_id)


def _call(
    self: Task, remote: CeleryEnv, kind: str, body: bytes, envelope: Any, backend: Any
) -> None:
    """Run the weave or call of a verified envelope and store its reply."""
    task_id = self.request.id
    carrier = envelope_trace(envelope)  # verified with the rest: signed by the sender
    if kind == WEAVE:
        run, origin = cast(tuple[Any, str], capture.loads(body))
        logger.info("wove: running the detached weave at %s (Celery task %s)", origin, task_id)
        with weave_context(carrier, task_id):  # the weave's span joins the caller's trace
            status = run()  # logs its own failure, calls on_done
        info = _info(self)
        reply = replies.ok_body("the detached weave", status, info, remote.max_payload)
        _store(backend, remote, task_id, reply, self.request, info)
        return
    function, kwargs, task, origin = cast(tuple[Any, dict[str, Any], str, str], capture.loads(body))
    info = _info(self)
    # The caller's span's child (a no-op without a trace context or OpenTelemetry),
    # current while the task runs: the spans its code opens nest under it.
    reply = run_call(
        *(function, kwargs, task, origin, carrier, task_id, CELERY_TASK_ID, info),
        remote.max_payload,
        # One raised because the pool process is being terminated (a revoke with
        # terminate=True) goes on up: it is the worker's stop, not the task's error.
        goes_on_up=lambda error: not isinstance(error, Exception) and terminate_handler_fired(),
    )
    _store(backend, remote, task_id, reply, self.request, info)


def _info(task: Task) -> dict[str, Any]:
    return {"worker": task.request.hostname or socket.gethostname()}


def _store(
    backend: Any,
    env: CeleryEnv,
    task_id: str,
    reply: bytes,
    request: Any,
    info: dict[str, Any],
) -> None:
    """Store the sealed reply, trying for up to ``env.lease`` seconds. When that fails
    the function has run but its reply is lost: what is recorded instead says so (see
    :func:`_record_lost`), so its caller hears that, never a stored failure it could
    mistake for the function's own."""
    if backend is None:
        return
    sealed = seal(env.keyring, REPLY, task_id, reply)
    tries = max(1, math.ceil(env.lease / env.heartbeat))
    # Celery's default retries a store for about 20 s: long enough to deliver a reply
    # late, too long for a caller to learn what happened while Redis is away.
    # store_result() takes no retry policy of its own, so it is set on the backend for
    # this store (and the record of a lost reply) only: the backend is this thread's,
    # reused by whatever else the thread stores or reads later.
    previous = backend.retry_policy
    backend.retry_policy = {
        "max_retries": tries,
        "interval_start": env.heartbeat,
        "interval_step": 0,
        "interval_max": env.heartbeat,
    }
    try:
        try:
            backend.store_result(task_id, sealed, states.SUCCESS, request=request)
        except Exception as error:
            logger.error(
                "wove: the reply of Celery task %s could not be stored (%s: %s); recording "
                "that its function ran and its result was lost",
                task_id,
                type(error).__name__,
                error,
            )
            _record_lost(backend, env, task_id, replies.lost_body(error, info), request)
    finally:
        backend.retry_policy = previous


def _record_lost(backend: Any, env: CeleryEnv, task_id: str, lost: bytes, request: Any) -> None:
    """Store ``lost`` as the reply, retrying every ``heartbeat`` for up to
    :data:`LOST_PATIENCE` seconds (the call's lease is renewed meanwhile: its caller
    goes on waiting for this record). After that the lease lapses, and the caller
    reports the worker lost."""
    deadline = time.monotonic() + LOST_PATIENCE
    sealed = seal(env.keyring, REPLY, task_id, lost)
    while True:
        try:
            backend.store_result(task_id, sealed, states.SUCCESS, request=request)
            return
        except Exception as error:
            if time.monotonic() > deadline:
                logger.error(
                    "wove: could not record that the result of Celery task %s was lost "
                    "(%s); its caller will report its worker lost",
                    task_id,
                    error,
                )
                return
            time.sleep(env.heartbeat)


def _claim_seconds(env: CeleryEnv) -> int:
    return int(env.max_age) + 60  # as long as an envelope stays valid


def _claim(backend: Any, env: CeleryEnv, task_id: str, request: Any, leased: bool) -> None:
    """Claim the task id: a message whose task already started or ran is a replay (or a
    duplicate delivery), refused without storing anything over its result.

    With Redis, one atomic ``SET NX`` (kept as long as an envelope stays valid), sent
    with the call's first lease (``leased``: see :mod:`.lease`); with other backends,
    the task's state is read and STARTED stored (not atomic: two copies delivered at
    the same instant could both pass)."""
    if has_leases(backend):
        if leased:
            claimed = claim(backend.client, task_id, _claim_seconds(env), env.lease)
        else:
            claimed = backend.client.set(claim_key(task_id), b"1", nx=True, ex=_claim_seconds(env))
        status = None if claimed else "claimed"
    else:
        status = backend.get_task_meta(task_id).get("status")
        status = None if status == states.PENDING else status
        if status is None:
            backend.store_result(task_id, None, states.STARTED, request=request)
    if status is not None:
        logger.warning(
            "wove: refused the envelope of Celery task %s: it already ran (%s); an "
            "envelope runs once",
            task_id,
            status,
        )
        raise Ignore()


def _opened(envelope: Any, name: str | None, task_id: str) -> tuple[CeleryEnv, str, bytes]:
    """The environment, kind and body of a verified envelope; refused ones raise (and
    are logged), and Celery stores that failure as the task's result."""
    kind = envelope.get("kind") if isinstance(envelope, dict) else None
    try:
        env = _environment(name)
        expected = kind if kind in (CALL, WEAVE) else CALL
        body = open_envelope(
            env.keyring, envelope, kind=expected, max_age=env.max_age, message_id=task_id
        )
    except EnvelopeError as refused:
        logger.warning("wove: refused the envelope of Celery task %s: %s", task_id, refused)
        raise
    return env, expected, body


def _environment(name: str | None) -> CeleryEnv:
    try:
        env = get_env(name) if isinstance(name, str) and name else None
    except InvalidOptionError:
        env = None
    if not isinstance(env, CeleryEnv):
        raise EnvelopeError(
            "unknown-env",
            f"no CeleryEnv is registered as {name!r} in this worker; register the same "
            f"environments, under the same names and with the same keys, in the worker's "
            f"process as in the sender's",
        )
    return env


#: Wove's Celery task: a shared task, so every app importing this module has it. It
#: stores its own (sealed) reply, so Celery stores nothing else but its failures.
run_envelope: Final[Any] = shared_task(
    name=TASK_NAME, bind=True, ignore_result=True, store_errors_even_if_ignored=True
)(_run)
