"""``CeleryEnv``: the remote environment that runs tasks and detached weaves on Celery.

The caller's side. A task's call travels by value (cloudpickle) inside a signed
envelope, as the one argument of Wove's Celery task (``wove.run``, in
:mod:`wove.contrib.celery.worker`), sent with Celery's JSON serializer. The worker
stores a sealed reply as the task's result; the process's result waiter
(:mod:`wove.contrib.celery.results`) hands it to the awaiting coroutine, which verifies
it before unpickling anything. Each call is sent in the calling task's context, with the
caller's trace context in the envelope and the user's task as Celery's ``shadow`` name
(:mod:`wove.contrib.celery.tracing`).
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Final

from celery import Celery, states
from celery.utils import uuid

from wove import InvalidOptionError, annotate
from wove.contrib.remote.sending import Sender
from wove.lowlevel import DetachedWeave, RemoteCall

from . import capture, replies
from .envelope import EnvelopeError, Keyring, open_envelope, seal
from .failures import UNSENT, failure
from .results import backend_name, waiter_for
from .tracing import call_name, trace_context, weave_name

logger: Final = logging.getLogger("wove")

#: The name of Wove's one Celery task, run by the workers.
TASK_NAME: Final = "wove.run"
#: Envelope kinds: a task's call, a detached weave, a reply.
CALL: Final = "call"
WEAVE: Final = "weave"
REPLY: Final = "reply"


class CeleryEnv:
    """A remote environment on a Celery app; register it with :func:`wove.register_env`.

    ``app``: the Celery app, its dotted path (``"proj.celery:app"``, imported on first
    use) or None for Celery's current app. ``keys``: the secrets envelopes are signed
    with (at least 32 bytes each); the first signs, all verify, so a new key goes first
    and the old one stays until no envelope signed with it is left. A mapping gives the
    key ids; a list derives them. ``max_age``: seconds an envelope stays valid (keep it
    above how long a task may wait in the queue). ``max_payload``: the most bytes a
    call's or a result's pickled payload may take (None: no limit). ``queue``: the
    Celery queue to send to (None: the app's default routing). ``terminate_on_cancel``:
    a cancelled call's task is revoked; when it already runs, True also stops it
    (SIGTERM to the worker process running it), False lets it finish.

    ``lease`` and ``heartbeat``: the liveness of a running call (Redis result backend).
    A worker renews the lease of each call it runs every ``heartbeat`` seconds; a
    caller whose claimed call has had no lease for ``lease`` seconds, and no reply,
    fails it with :class:`wove.RemoteWorkerLost`. A lost worker is so reported within
    ``2 * (lease + heartbeat)`` seconds of its death (5 s by default) with no
    ``timeout=``; a call still queued (no worker took it) is never lost: it waits, up
    to its ``timeout=``. ``heartbeat`` must be below ``lease``; keep ``lease`` above the
    longest pause of a worker process (garbage collection, a stalled VM).

    Configure it the same way in the processes that send and in the workers.
    """

    def __init__(
        self,
        app: Celery | str | None = None,
        *,
        keys: Sequence[str | bytes] | Mapping[str, str | bytes],
        max_age: float = 86400.0,
        max_payload: int | None = 1_000_000,
        queue: str | None = None,
        terminate_on_cancel: bool = True,
        lease: float = 2.0,
        heartbeat: float = 0.5,
    ) -> None:
        if not (app is None or isinstance(app, Celery | str)):
            raise InvalidOptionError(
                f"CeleryEnv's app must be a Celery app, its dotted path ('proj.celery:app') "
                f"or None for the current app, got {type(app).__name__}"
            )
        if isinstance(max_age, bool) or not isinstance(max_age, int | float) or max_age <= 0:
            raise InvalidOptionError(f"max_age must be a number of seconds > 0, got {max_age!r}")
        if max_payload is not None and (type(max_payload) is not int or max_payload < 1):
            raise InvalidOptionError(
                f"max_payload must be a number of bytes >= 1, or None for no limit, "
                f"got {max_payload!r}"
            )
        if not (queue is None or (isinstance(queue, str) and queue)):
            raise InvalidOptionError(f"queue must be a queue name or None, got {queue!r}")
        if not isinstance(terminate_on_cancel, bool):
            raise InvalidOptionError(
                f"terminate_on_cancel must be True or False, got {terminate_on_cancel!r}"
            )
        for name, value in (("lease", lease), ("heartbeat", heartbeat)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise InvalidOptionError(f"{name} must be a number of seconds > 0, got {value!r}")
        if not heartbeat < lease:
            raise InvalidOptionError(
                f"heartbeat ({heartbeat!r} s) must be shorter than lease ({lease!r} s): a "
                f"worker renews a lease every heartbeat, before it expires (e.g. lease=2.0, "
                f"heartbeat=0.5)"
            )
        self.keyring = Keyring.from_config(keys)
        self.max_age = float(max_age)
        self.max_payload = max_payload
        self.queue = queue
        self.terminate_on_cancel = terminate_on_cancel
        self.lease = float(lease)
        self.heartbeat = float(heartbeat)
        self._app_config = app
        self._app: Celery | None = app if isinstance(app, Celery) else None
        self._checked = False
        # Its own sending thread: a broker that does not answer (kombu retries a
        # connection for minutes) holds up this environment's messages, never another's.
        self._sender = Sender("wove-celery-sender")

    def __repr__(self) -> str:
        app = self._app.main if self._app is not None else self._app_config
        return f"CeleryEnv(app={app!r}, keys={self.keyring.key_ids!r}, queue={self.queue!r})"

    @property
    def app(self) -> Celery:
        """The Celery app (imported or looked up on first use)."""
        if self._app is None:
            self._app = _load_app(self._app_config)
        return self._app

    # --- the caller's side -----------------------------------------------------------

    async def run(self, call: RemoteCall) -> Any:
        app = self._results_app()
        task_id = str(uuid())
        body = capture.dumps(
            (call.function, dict(call.kwargs), call.task, call.origin),
            limit=self.max_payload,
            what=f"the envelope for task {call.task!r}",
            parts=lambda: capture.function_parts(call.function, call.kwargs),
        )
        envelope = seal(self.keyring, CALL, task_id, body, trace=trace_context())
        name = call_name(call.function, call.task)
        # The task's context (its span, every contextvar), where anything that observes
        # publishing (Celery's signals, its OpenTelemetry instrumentation) sees it.
        context = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[str, Any, str | None]] = loop.create_future()

        def deliver(state: str, value: Any, traceback: str | None) -> None:  # any thread
            try:
                loop.call_soon_threadsafe(_settle, future, (state, value, traceback))
            except RuntimeError:  # the loop closed: nobody waits any more
                pass

        waiter = waiter_for(app)
        # Before sending: the reply cannot be missed.
        waiter.expect(task_id, deliver, self.lease, self.heartbeat)

        def send() -> None:  # on the sending thread: the loop never waits for the broker
            try:
                self._send(app, task_id, envelope, call.env, call.timeout, name)
            except Exception as error:
                waiter.drop(task_id)
                deliver(UNSENT, error, None)

        self._sender.soon(lambda: context.run(send))
        try:
            state, value, traceback = await future
        except asyncio.CancelledError:  # the weave failed, or the task timed out
            waiter.drop(task_id)
            # After its send, in order (and in the same context: the same thread runs
            # both, one after the other, so the context is never entered twice at once).
            self._sender.soon(lambda: context.run(self._revoke, app, task_id))
            raise
        return self._outcome(call.task, task_id, state, value, traceback)

    def detach(self, weave: DetachedWeave) -> str:
        task_id = str(uuid())
        body = capture.dumps(
            (weave.run, weave.origin),
            limit=self.max_payload,
            what=f"the envelope for the weave at {weave.origin}",
            parts=lambda: _weave_parts(weave),
        )
        envelope = seal(self.keyring, WEAVE, task_id, body, trace=trace_context())
        self._send(self.app, task_id, envelope, weave.env, None, weave_name(weave.origin))
        return task_id

    def _send(
        self,
        app: Celery,
        task_id: str,
        envelope: object,
        env: str,
        expires: float | None,
        name: str,
    ) -> None:
        app.send_task(
            TASK_NAME,
            # What monitoring shows (events, Flower, `celery inspect`, the worker's log);
            # the worker still runs wove.run.
            shadow=name,
            args=[envelope],
            kwargs={"env": env},
            task_id=task_id,
            queue=self.queue,
            expires=expires,
            serializer="json",
            # No subscription on this thread: the result waiter subscribes, and the
            # worker stores the sealed reply itself.
            ignore_result=True,
        )

    def _revoke(self, app: Celery, task_id: str) -> None:
        try:
            app.control.revoke(task_id, terminate=self.terminate_on_cancel, signal="SIGTERM")
        except Exception:
            logger.exception("wove: could not revoke cancelled Celery task %s", task_id)

    def _outcome(
        self, task: str, task_id: str, state: str, value: Any, traceback: str | None
    ) -> Any:
        if state == states.SUCCESS:
            try:
                body = open_envelope(
                    self.keyring, value, kind=REPLY, max_age=self.max_age, message_id=task_id
                )
            except EnvelopeError as refused:
                logger.warning(
                    "wove: refused the reply to Celery task %s (task %r): %s",
                    task_id,
                    task,
                    refused,
                )
                raise
            result, info = replies.outcome(task, task_id, body)
            annotate(celery_task=task_id, worker=info.get("worker"))
            return result
        raise failure(task, task_id, state, value, traceback)

    def _results_app(self) -> Celery:
        """The app, its result backend checked once: Wove needs one any thread reads."""
        app = self.app
        if not self._checked:
            kind = backend_name(app)
            if kind in ("", "DisabledBackend"):
                raise InvalidOptionError(
                    f"Celery app {app.main!r} has no result backend, and a remote task's "
                    f"result comes back through it: set result_backend (e.g. "
                    f"'redis://...'); detached weaves (background=True) need none"
                )
            if kind == "RPCBackend":
                raise InvalidOptionError(
                    f"Celery app {app.main!r} uses the rpc:// result backend, which sends a "
                    f"result to the thread that sent its task; Wove waits for results on "
                    f"one thread of its own: use Redis (recommended) or a database backend"
                )
            self._checked = True
        return app


def _settle(future: asyncio.Future[Any], outcome: Any) -> None:
    if not future.done():
        future.set_result(outcome)


def _weave_parts(weave: DetachedWeave) -> list[tuple[str, object]]:
    parts = [(f"keyword {name!r}", value) for name, value in weave.data.items()]
    if weave.on_done is not None:
        parts += [
            (f"on_done: {label}", part) for label, part in capture.function_parts(weave.on_done, {})
        ]
    for name, function in weave.tasks.items():
        parts += [
            (f"task {name!r}: {label}", part)
            for label, part in capture.function_parts(function, {})
        ]
    return parts


def _load_app(config: Celery | str | None) -> Celery:
    if isinstance(config, Celery):
        return config
    if config is None:
        from celery import current_app

        return current_app._get_current_object()
    module_name, _, attribute = config.replace(":", ".").rpartition(".")
    try:
        app = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise InvalidOptionError(
            f"CeleryEnv's app {config!r} cannot be imported ({error}); give the dotted path "
            f"of the Celery app object, e.g. 'proj.celery:app'"
        ) from error
    if not isinstance(app, Celery):
        raise InvalidOptionError(f"{config!r} is a {type(app).__name__}, not a Celery app")
    return app
