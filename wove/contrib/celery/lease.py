"""A claimed call's liveness signal: the lease its worker holds while the call runs.

When a worker takes a call it claims the task id (``wove-claim-<id>``, kept as long as
an envelope stays valid) and, in the same round trip, writes a lease
(``wove-lease-<id>``) that expires after ``lease`` seconds. One thread per worker
process (``wove-celery-heartbeat``) renews the leases of the calls the process runs
every ``heartbeat`` seconds, until their reply is stored. A worker that dies (SIGKILL,
out of memory, its machine gone) stops renewing, and its leases expire.

The caller's result waiter (:mod:`wove.contrib.celery.results`) reads the claim and the
lease of every call it waits for: claimed and without a lease for ``lease`` seconds of
the caller's own clock, with no reply stored, the call's worker is lost. A call that is
not claimed is still queued (no worker took it): it is never "lost". The renewal also
writes the claim again when it is missing (Redis restarted without its data), so a call
whose worker dies after such a restart is still found.

Redis result backends only: with another backend there is no lease, and a call whose
worker is lost waits until its ``timeout=``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Final

from celery import Celery

from wove.lowlevel import start_service

logger: Final = logging.getLogger("wove")

CLAIM_PREFIX: Final = "wove-claim-"
LEASE_PREFIX: Final = "wove-lease-"


def claim_key(task_id: str) -> str:
    return f"{CLAIM_PREFIX}{task_id}"


def lease_key(task_id: str) -> str:
    return f"{LEASE_PREFIX}{task_id}"


def has_leases(backend: Any) -> bool:
    """Whether ``backend`` is one leases are kept in (Celery's Redis backend)."""
    return type(backend).__name__ == "RedisBackend" and getattr(backend, "client", None) is not None


def claim(client: Any, task_id: str, claim_seconds: int, lease: float) -> bool:
    """Claim ``task_id`` (atomically: False when it already was) and write its first lease.

    One round trip. A refused claim (a replay) writes the lease too: it only keeps an
    existing claim alive ``lease`` seconds longer, which delays nothing but the report
    of a worker lost at that very moment."""
    with client.pipeline(transaction=False) as pipe:
        pipe.set(claim_key(task_id), b"1", nx=True, ex=claim_seconds)
        pipe.set(lease_key(task_id), b"1", px=_ms(lease))
        claimed, _ = pipe.execute()
    return bool(claimed)


class Heartbeat:
    """The thread of a worker process that renews the leases of the calls it runs."""

    def __init__(self, app: Celery) -> None:
        self._app = app
        self._wake = threading.Condition(threading.Lock())
        # task id -> (lease seconds, heartbeat seconds, claim seconds)
        self._held: dict[str, tuple[float, float, int]] = {}
        self._started = False
        self._failing = False

    def hold(self, task_id: str, lease: float, heartbeat: float, claim_seconds: int) -> None:
        """Renew ``task_id``'s lease every ``heartbeat`` seconds until :meth:`release`."""
        with self._wake:
            self._held[task_id] = (lease, heartbeat, claim_seconds)
            if not self._started:
                self._started = True
                start_service(self._serve, "wove-celery-heartbeat")
            if len(self._held) == 1:  # it was idle
                self._wake.notify()

    def release(self, task_id: str) -> None:
        """Stop renewing ``task_id``'s lease (its reply is stored): it expires by itself."""
        with self._wake:
            self._held.pop(task_id, None)

    def _serve(self) -> None:
        from .results import json_backend  # here: results imports this module

        client = json_backend(self._app).client  # this thread's own
        while True:
            with self._wake:
                while not self._held:
                    self._wake.wait()
                every = min(every for _, every, _ in self._held.values())
            # A sleep, not a wait on the condition: a call held meanwhile has its first
            # lease from its claim, and must not cost a round trip of its own.
            time.sleep(every)
            with self._wake:
                held = dict(self._held)
            if held:
                self._renew(client, held)

    def _renew(self, client: Any, held: dict[str, tuple[float, float, int]]) -> None:
        try:
            with client.pipeline(transaction=False) as pipe:
                for task_id, (lease, _, claim_seconds) in held.items():
                    pipe.set(lease_key(task_id), b"1", px=_ms(lease))
                    pipe.set(claim_key(task_id), b"1", nx=True, ex=claim_seconds)
                pipe.execute()
        except Exception as error:  # Redis unreachable: the callers cannot read it either
            if not self._failing:
                logger.warning("wove: could not renew the leases of running calls: %s", error)
            self._failing = True
        else:
            if self._failing:
                logger.warning("wove: renewing the leases of running calls again")
            self._failing = False


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


_beats: dict[int, Heartbeat] = {}
_beats_lock = threading.Lock()


def heartbeat_for(app: Celery) -> Heartbeat:
    """This process's heartbeat for ``app`` (made on first use)."""
    beat = _beats.get(id(app))
    if beat is None:
        with _beats_lock:
            beat = _beats.setdefault(id(app), Heartbeat(app))
    return beat


def _forget_in_child() -> None:
    global _beats_lock
    _beats_lock = threading.Lock()
    _beats.clear()  # the parent's thread did not survive the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
