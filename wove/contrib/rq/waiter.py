"""The one thread per :class:`~wove.contrib.rq.RQEnv` that receives its replies and
watches its calls' leases.

It runs while calls wait (it ends when none has for a pop) and pops the environment's
reply list (a blocking pop of at most :data:`POLL` seconds)
and hands each reply to the call waiting for it. Between pops, at most every
:data:`POLL` seconds, it checks the calls waiting longer than that: a call whose job was
claimed by a worker but whose lease has expired without a reply was lost with its worker
(its reply would have been pushed before the lease was released); a job RQ itself
failed, stopped or cancelled before any worker claimed it never ran.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from rq.job import Job

from wove.lowlevel import start_service

from .keys import claim_key, lease_key

logger: Final = logging.getLogger("wove")

#: Seconds of one blocking pop, and between two checks of the leases.
POLL: Final = 1.0
#: RQ job states that end a job no worker claimed: it never ran.
_ENDED: Final = frozenset({"failed", "stopped", "canceled"})

#: How an outcome is handed over: ``(kind, data)`` with kind ``"sealed"`` (the reply
#: envelope), ``"refused"`` (why), ``"lost"`` or ``"never-ran"`` (what is known).
Deliver = Callable[[str, Any], None]


class Waiter:
    """See the module. ``expect`` before sending, ``drop`` when nobody waits any more."""

    def __init__(self, redis: Any, key: str, name: str) -> None:
        self.redis = redis
        self.key = key
        self.name = name
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[Deliver, float]] = {}
        self._started = False

    def expect(self, job_id: str, deliver: Deliver) -> None:
        with self._lock:
            self._pending[job_id] = (deliver, time.monotonic())
            if not self._started:
                start_service(self._serve, f"wove-rq-waiter-{self.name}")
                self._started = True

    def drop(self, job_id: str) -> None:
        with self._lock:
            self._pending.pop(job_id, None)

    def _take(self, job_id: str) -> Deliver | None:
        with self._lock:
            entry = self._pending.pop(job_id, None)
        return None if entry is None else entry[0]

    def _serve(self) -> None:
        checked = time.monotonic()
        failing = False  # Redis unreachable: said once per outage, not at every poll
        while True:
            try:
                popped = self.redis.blpop([self.key], timeout=POLL)
            except Exception as error:
                with self._lock:
                    if not self._pending:  # nobody waits: end, as when idle
                        self._started = False
                        return
                if not failing:
                    logger.warning("wove: could not read RQ replies from %s: %s", self.key, error)
                failing = True
                time.sleep(POLL)
                continue
            failing = False
            if popped is not None:
                self._hand(popped[1])
            else:
                with self._lock:
                    if not self._pending:  # idle: end; the next expect() starts it again
                        self._started = False
                        return
            if time.monotonic() - checked >= POLL:
                checked = time.monotonic()
                try:
                    self._check()
                except Exception:
                    logger.warning("wove: could not check RQ leases", exc_info=True)

    def _hand(self, raw: bytes) -> None:
        try:
            job_id, kind, data = json.loads(raw)
        except (ValueError, TypeError):
            logger.warning("wove: an unreadable entry in %s was dropped", self.key)
            return
        deliver = self._take(job_id) if isinstance(job_id, str) else None
        if deliver is not None:
            deliver(kind, data)

    def _check(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [job_id for job_id, (_, since) in self._pending.items() if now - since >= POLL]
        if not due:
            return
        pipe = self.redis.pipeline(transaction=False)
        for job_id in due:
            pipe.exists(claim_key(job_id))
            pipe.exists(lease_key(job_id))
            pipe.hget(Job.key_for(job_id), "status")
        found = pipe.execute()
        suspects: list[tuple[str, str, Any]] = []
        for index, job_id in enumerate(due):
            claimed, leased, status = found[3 * index : 3 * index + 3]
            state = status.decode() if isinstance(status, bytes) else status
            if claimed and not leased:
                suspects.append((job_id, "lost", state))
            elif not claimed and state in _ENDED:
                suspects.append((job_id, "never-ran", state))
        if not suspects:
            return
        # A reply pushed since the pop is in the list already (it is pushed before its
        # lease is released): hand those over first.
        while (raw := self.redis.lpop(self.key)) is not None:
            self._hand(raw)
        for job_id, kind, state in suspects:
            deliver = self._take(job_id)
            if deliver is not None:
                deliver(kind, state)
