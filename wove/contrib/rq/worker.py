"""The worker's side: the function every Wove job runs on an RQ worker, :func:`run_job`.

RQ imports it by its dotted path (``wove.contrib.rq.worker.run_job``). It takes a signed
envelope and the environment's name, verifies the envelope before anything is unpickled
(a forged, tampered, expired or replayed one is refused, logged and never run), claims
the job, and holds a lease on it that the process's lease thread renews while the
function runs. The
sealed reply (value or exception) is pushed to the caller's reply list, and the lease
released, in one transaction.

The worker's process must have the environment registered under the same name with the
same keys: start it with ``rq worker -c <module>`` where the module calls
``wove.register_env`` (or, under django-rq, with Wove's Django settings).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import Any, Final, cast

import cloudpickle  # noqa: F401  (imported here: a work horse forked per job has it)
from rq import get_current_job

from wove import InvalidOptionError
from wove.contrib.remote import capture
from wove.contrib.remote.envelope import EnvelopeError, envelope_trace, open_envelope, seal
from wove.contrib.remote.running import run_call
from wove.contrib.remote.tracing import weave_context
from wove.lowlevel import get_env

from .env import RQEnv
from .keys import CALL, REFUSED, REPLY, SEALED, WEAVE, claim_key, lease_key

logger: Final = logging.getLogger("wove")

#: The attribute of the worker's span that holds the RQ job id.
JOB_ID_ATTRIBUTE: Final = "rq.job_id"


def run_job(envelope: Any, env: str, reply_to: str | None = None) -> None:
    """Verify ``envelope``, run what it holds, push the sealed reply to ``reply_to``."""
    job = get_current_job()
    if job is None:
        raise RuntimeError("wove.contrib.rq.worker.run_job runs only as an RQ job")
    job_id, redis = job.id, job.connection
    kind = envelope.get("kind") if isinstance(envelope, dict) else None
    expected = kind if kind in (CALL, WEAVE) else CALL
    try:
        remote = _environment(env)
        body = open_envelope(
            remote.keyring, envelope, kind=expected, max_age=remote.max_age, message_id=job_id
        )
    except EnvelopeError as refused:
        logger.warning("wove: refused the envelope of RQ job %s: %s", job_id, refused)
        if isinstance(reply_to, str) and reply_to.startswith("wove:rq:replies:"):
            notice = json.dumps([job_id, REFUSED, f"{refused.reason}: {refused.message}"])
            redis.rpush(reply_to, notice)
        raise
    lease = _Lease(redis, job_id, remote.lease)
    if not lease.claim(remote.max_age):
        logger.warning(
            "wove: refused the envelope of RQ job %s: it already ran; an envelope runs once",
            job_id,
        )
        return
    carrier = envelope_trace(envelope)  # verified with the rest: signed by the sender
    try:
        if expected == WEAVE:
            run, origin = cast(tuple[Any, str], capture.loads(body))
            logger.info("wove: running the detached weave at %s (RQ job %s)", origin, job_id)
            with weave_context(carrier, job_id):
                run()  # logs its own failure, calls on_done
            return
        function, kwargs, task, origin, reply_key = cast(
            tuple[Any, dict[str, Any], str, str, str], capture.loads(body)
        )
        reply = _call(function, kwargs, task, origin, carrier, job_id, remote.max_payload)
        sealed = seal(remote.keyring, REPLY, job_id, reply)
        pipe = redis.pipeline(transaction=True)
        pipe.rpush(reply_key, json.dumps([job_id, SEALED, sealed]))
        pipe.expire(reply_key, int(remote.max_age))
        pipe.delete(lease_key(job_id))
        pipe.execute()
    finally:
        lease.stop()


def _call(
    function: Any,
    kwargs: dict[str, Any],
    task: str,
    origin: str,
    carrier: dict[str, str] | None,
    job_id: str,
    limit: int | None,
) -> bytes:
    info: dict[str, Any] = {"worker": socket.gethostname()}
    return run_call(function, kwargs, task, origin, carrier, job_id, JOB_ID_ATTRIBUTE, info, limit)


class _Lease:
    """The job's claim and its lease, renewed by the process's :class:`_Renewer`."""

    def __init__(self, redis: Any, job_id: str, seconds: float) -> None:
        self.redis = redis
        self.job_id = job_id
        self.seconds = seconds

    def claim(self, max_age: float) -> bool:
        pipe = self.redis.pipeline(transaction=True)
        # The lease first, in the same transaction: a caller never sees a claim without
        # a lease while the function runs.
        pipe.set(lease_key(self.job_id), b"1", px=int(self.seconds * 1000))
        pipe.set(claim_key(self.job_id), b"1", nx=True, ex=int(max_age) + 60)
        _, claimed = pipe.execute()
        if not claimed:
            return False
        _renewer.add(self.job_id, self.redis, self.seconds)
        return True

    def stop(self) -> None:
        _renewer.remove(self.job_id)


class _Renewer:
    """The leases of the jobs running in this process, each renewed every third of its
    length by one thread per process (not one per job: starting and joining a thread
    per job cost more than the job on a fast worker). A forked child (RQ's work horse)
    starts its own on its first lease."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        # Called again in a forked child: the parent's lock may have been held at the
        # fork, and its thread does not exist there.
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._leases: dict[str, tuple[Any, float, float]] = {}  # redis, seconds, due
        self._thread: threading.Thread | None = None

    def add(self, job_id: str, redis: Any, seconds: float) -> None:
        with self._lock:
            self._leases[job_id] = (redis, seconds, time.monotonic() + seconds / 3)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="wove-rq-lease", daemon=True)
                self._thread.start()
        self._wake.set()

    def remove(self, job_id: str) -> None:
        with self._lock:
            self._leases.pop(job_id, None)

    def _run(self) -> None:
        while True:
            with self._lock:
                due = min((lease[2] for lease in self._leases.values()), default=None)
            self._wake.wait(None if due is None else max(0.0, due - time.monotonic()))
            self._wake.clear()
            now = time.monotonic()
            with self._lock:
                expiring = [
                    (job_id, redis, seconds)
                    for job_id, (redis, seconds, due) in self._leases.items()
                    if due <= now
                ]
                for job_id, redis, seconds in expiring:
                    self._leases[job_id] = (redis, seconds, now + seconds / 3)
            for job_id, redis, seconds in expiring:
                try:
                    redis.set(lease_key(job_id), b"1", px=int(seconds * 1000), xx=True)
                except Exception:  # Redis unreachable for a moment: the next renewal retries
                    logger.warning("wove: could not renew the lease of RQ job %s", job_id)


_renewer: Final = _Renewer()
os.register_at_fork(after_in_child=_renewer._reset)


def _environment(name: str) -> RQEnv:
    try:
        env = get_env(name) if isinstance(name, str) and name else None
    except InvalidOptionError:
        env = None
    if not isinstance(env, RQEnv):
        raise EnvelopeError(
            "unknown-env",
            f"no RQEnv is registered as {name!r} in this worker; start the worker with "
            f"`rq worker -c <module>` where the module registers the same environments, "
            f"under the same names and with the same keys, as the sender's process",
        )
    return env
