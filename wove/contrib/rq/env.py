"""``RQEnv``: the remote environment that runs tasks and detached weaves on RQ workers.

The caller's side. A task's call travels by value (cloudpickle) inside a signed envelope,
as the arguments of one RQ job running :func:`wove.contrib.rq.worker.run_job`, enqueued
from the environment's sending thread (the loop never waits for Redis). The worker
pushes the sealed reply to this environment's reply list; its waiter thread
(:mod:`wove.contrib.rq.waiter`) hands it to the awaiting coroutine, which verifies it
before unpickling anything, and watches the leases of the calls that workers hold.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final

from redis import Redis
from rq import Queue
from rq.command import send_stop_job_command
from rq.job import Job

from wove import (
    InvalidOptionError,
    RemoteNeverRan,
    RemoteTaskError,
    RemoteWorkerLost,
    annotate,
)
from wove.contrib.remote import capture, replies
from wove.contrib.remote.envelope import EnvelopeError, Keyring, open_envelope, seal
from wove.contrib.remote.sending import Sender
from wove.contrib.remote.tracing import trace_context
from wove.lowlevel import DetachedWeave, RemoteCall

from .keys import CALL, JOB_FUNCTION, REFUSED, REPLY, SEALED, WEAVE, replies_key
from .waiter import POLL, Waiter

logger: Final = logging.getLogger("wove")

#: What the sending thread delivers when Redis refused the job: nothing ran.
UNSENT: Final = "unsent"


class RQEnv:
    """A remote environment on RQ; register it with :func:`wove.register_env` in the
    processes that send and in the workers (``rq worker -c <module>``).

    ``connection``: a ``redis.Redis`` client or a Redis URL. ``keys``: the secrets
    envelopes are signed with (at least 32 bytes each; the first signs, all verify).
    ``queue``: the RQ queue's name. ``max_age``: seconds an envelope stays valid (keep
    it above how long a job may wait in the queue). ``max_payload``: the most bytes a
    call's or a result's pickled payload may take (None: no limit). ``lease``: seconds a
    worker's lease on a running call lasts without renewal (renewed every third of it):
    a lost worker fails its call with :class:`~wove.RemoteWorkerLost` within about
    ``lease`` + 2 seconds.
    """

    def __init__(
        self,
        connection: Redis | str,
        *,
        keys: Sequence[str | bytes] | Mapping[str, str | bytes],
        queue: str = "default",
        max_age: float = 86400.0,
        max_payload: int | None = 1_000_000,
        lease: float = 10.0,
    ) -> None:
        if isinstance(connection, str):
            connection = Redis.from_url(connection)
        if not isinstance(connection, Redis):
            raise InvalidOptionError(
                f"RQEnv's connection must be a redis.Redis client or a Redis URL "
                f"('redis://127.0.0.1:6379/0'), got {type(connection).__name__}"
            )
        if not (isinstance(queue, str) and queue):
            raise InvalidOptionError(f"queue must be an RQ queue's name, got {queue!r}")
        if isinstance(max_age, bool) or not isinstance(max_age, int | float) or max_age <= 0:
            raise InvalidOptionError(f"max_age must be a number of seconds > 0, got {max_age!r}")
        if max_payload is not None and (type(max_payload) is not int or max_payload < 1):
            raise InvalidOptionError(
                f"max_payload must be a number of bytes >= 1, or None for no limit, "
                f"got {max_payload!r}"
            )
        if isinstance(lease, bool) or not isinstance(lease, int | float) or lease < 1:
            raise InvalidOptionError(
                f"lease must be a number of seconds >= 1 (how long a lost worker may go "
                f"unnoticed), got {lease!r}"
            )
        self.keyring = Keyring.from_config(keys)
        self.connection = connection
        self.queue = Queue(queue, connection=connection)
        self.max_age = float(max_age)
        self.max_payload = max_payload
        self.lease = float(lease)
        caller = uuid.uuid4().hex
        self._replies = replies_key(caller)
        self._waiter = Waiter(connection, self._replies, caller[:8])
        self._sender = Sender(f"wove-rq-sender-{caller[:8]}")

    def __repr__(self) -> str:
        return f"RQEnv(queue={self.queue.name!r}, keys={self.keyring.key_ids!r})"

    async def run(self, call: RemoteCall) -> Any:
        job_id = uuid.uuid4().hex
        body = capture.dumps(
            (call.function, dict(call.kwargs), call.task, call.origin, self._replies),
            limit=self.max_payload,
            what=f"the envelope for task {call.task!r}",
            parts=lambda: capture.function_parts(call.function, call.kwargs),
        )
        envelope = seal(self.keyring, CALL, job_id, body, trace=trace_context())
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[str, Any]] = loop.create_future()

        def deliver(kind: str, data: Any) -> None:  # any thread
            try:
                loop.call_soon_threadsafe(_settle, future, (kind, data))
            except RuntimeError:  # the loop closed: nobody waits any more
                pass

        self._waiter.expect(job_id, deliver)  # before sending: the reply cannot be missed

        def send() -> None:
            try:
                self._enqueue(job_id, envelope, call.env, call.timeout, f"wove:{call.task}")
            except Exception as error:
                self._waiter.drop(job_id)
                deliver(UNSENT, error)

        self._sender.soon(send)
        try:
            kind, data = await future
        except asyncio.CancelledError:  # the weave failed, or the task timed out
            self._waiter.drop(job_id)
            self._sender.soon(lambda: self._stop(job_id))
            raise
        return self._outcome(call.task, job_id, kind, data)

    def detach(self, weave: DetachedWeave) -> str:
        job_id = uuid.uuid4().hex
        body = capture.dumps(
            (weave.run, weave.origin),
            limit=self.max_payload,
            what=f"the envelope for the weave at {weave.origin}",
            parts=lambda: [(f"keyword {name!r}", value) for name, value in weave.data.items()],
        )
        envelope = seal(self.keyring, WEAVE, job_id, body, trace=trace_context())
        self._enqueue(job_id, envelope, weave.env, None, f"wove:weave {weave.origin}")
        return job_id

    def _enqueue(
        self, job_id: str, envelope: object, env: str, timeout: float | None, name: str
    ) -> None:
        self.queue.enqueue_call(
            JOB_FUNCTION,
            args=(envelope, env, self._replies),
            job_id=job_id,
            description=name,
            # The caller stops the job at its timeout; RQ's own limit is a backstop.
            timeout=-1 if timeout is None else math.ceil(timeout) + 5,
            # A job still queued when its caller gave up, or its envelope expired, is
            # dropped by RQ.
            ttl=math.ceil(timeout if timeout is not None else self.max_age),
            result_ttl=0,  # the reply travels through the reply list
            failure_ttl=int(self.max_age),
        )

    def _stop(self, job_id: str) -> None:
        """Cancel the job if it is queued, stop it (its work horse) if it runs."""
        try:
            job = Job.fetch(job_id, connection=self.connection)
        except Exception:  # already gone (ran and expired, or never enqueued)
            return
        try:
            if job.get_status() == "started":
                send_stop_job_command(self.connection, job_id)
            else:
                job.cancel()
        except Exception:
            logger.warning("wove: could not stop cancelled RQ job %s", job_id, exc_info=True)

    def _outcome(self, task: str, job_id: str, kind: str, data: Any) -> Any:
        if kind == SEALED:
            try:
                body = open_envelope(
                    self.keyring, data, kind=REPLY, max_age=self.max_age, message_id=job_id
                )
            except EnvelopeError as refused:
                logger.warning(
                    "wove: refused the reply to RQ job %s (task %r): %s", job_id, task, refused
                )
                raise
            result, info = replies.outcome(task, f"RQ job {job_id}", body)
            annotate(rq_job=job_id, worker=info.get("worker"))
            return result
        if kind == UNSENT:
            error = RemoteNeverRan(task, type(data).__name__, f"RQ job not enqueued: {data}", None)
            raise error from data
        if kind == REFUSED:
            raise RemoteNeverRan(task, "EnvelopeError", f"RQ job {job_id} refused: {data}", None)
        if kind == "never-ran":
            raise RemoteNeverRan(
                task, "JobNotRun", f"RQ job {job_id} ended {data} before a worker took it", None
            )
        if kind == "lost":
            raise RemoteWorkerLost(
                task,
                "WorkerLost",
                f"the worker holding RQ job {job_id} stopped renewing its lease "
                f"({self.lease:g} s) without a reply: it was lost, or could not store the "
                f"reply",
                None,
                may_have_started=True,
            )
        raise RemoteTaskError(task, "ValueError", f"unknown reply kind {kind!r}", None)


def lost_within(env: RQEnv) -> float:
    """Seconds within which a lost worker's call fails (the lease and two polls)."""
    return env.lease + 2 * POLL


def _settle(future: asyncio.Future[Any], outcome: Any) -> None:
    if not future.done():
        future.set_result(outcome)
