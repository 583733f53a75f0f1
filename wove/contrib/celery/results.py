"""Celery task ids -> their results, delivered as they arrive, all on one thread.

One :class:`ResultWaiter` per Celery app serves every pending remote call of the
process: callers hand it a task id and a delivery callback (:meth:`ResultWaiter.expect`)
and go on awaiting an asyncio future, so no thread is held per pending task. Its thread
alone touches its result backend (Celery's backends are per thread unless configured
otherwise): with a backend that pushes results (Redis), it subscribes and drains the
pushed messages; with the others (database, file...), it polls them.

Callers send their task without subscribing (Wove's task stores its own reply), so a
reply may be stored before the waiter subscribes: after subscribing, the waiter reads
the result once, and a reply already there is delivered at once.

With Redis, the waiter also watches the liveness of its pending calls (see
:mod:`wove.contrib.celery.lease`): every heartbeat it reads their claims and leases in
one round trip, and a call claimed by a worker whose lease has been missing for a whole
lease (as this process's clock measures it, and only while Redis answers), with no
reply stored, is delivered as lost.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from celery import Celery, states
from celery.app.backends import by_url
from celery.result import AsyncResult

from wove.lowlevel import start_service

from .failures import WAIT_FAILED, WORKER_LOST
from .lease import claim_key, has_leases, lease_key

logger: Final = logging.getLogger("wove")

#: ``deliver(state, result, traceback)``: the task's final state, its result (the reply
#: envelope for SUCCESS, the exception for FAILURE) and the worker's traceback text.
Deliver = Callable[[str, Any, "str | None"], None]

#: How long the waiter listens for pushed results before it takes new registrations
#: (only while results are pending: an idle waiter sleeps until one is registered).
PUSH_WAIT: Final = 0.005
#: How often a backend that does not push results is read, per pending task.
POLL_INTERVAL: Final = 0.05


class ResultWaiter:
    """The one thread that waits for the remote results of one Celery app."""

    def __init__(self, app: Celery) -> None:
        self._app = app
        self._wake = threading.Condition(threading.Lock())
        self._inbox: list[tuple[str, Deliver, float, float]] = []
        self._dropped: list[str] = []
        self._started = False
        # The waiter thread's own state (touched by it alone).
        self._pending: dict[str, tuple[Deliver, AsyncResult | None]] = {}
        self._watched: dict[str, tuple[float, float]] = {}  # id -> (lease, heartbeat)
        self._missing: dict[str, float] = {}  # id -> when its lease was first missed
        self._next_watch = 0.0

    # --- any thread ------------------------------------------------------------------

    def expect(self, task_id: str, deliver: Deliver, lease: float, heartbeat: float) -> None:
        """Call ``deliver`` (on the waiter's thread) once ``task_id`` is ready, or once
        it is claimed and its lease has been missing for ``lease`` seconds (checked every
        ``heartbeat``): then as :data:`~wove.contrib.celery.failures.WORKER_LOST`."""
        with self._wake:
            self._inbox.append((task_id, deliver, lease, heartbeat))
            if not self._started:
                self._started = True
                start_service(self._serve, "wove-celery-results")
            self._wake.notify()

    def drop(self, task_id: str) -> None:
        """Stop waiting for ``task_id`` (its caller was cancelled); nothing is delivered."""
        with self._wake:
            self._dropped.append(task_id)
            self._wake.notify()

    # --- the waiter's thread ---------------------------------------------------------

    def _serve(self) -> None:
        backend = json_backend(self._app)  # this thread's own
        pushed = bool(getattr(backend, "is_async", False))
        leased = has_leases(backend)
        failing = False
        while True:
            try:
                self._take_new(backend, pushed, leased)
                if not self._pending:
                    continue
                if self._watched and time.monotonic() >= self._next_watch:
                    self._watch(backend)
                if pushed:
                    self._drain(backend)
                else:
                    self._poll(backend)
                if failing:
                    logger.warning("wove: waiting for Celery results works again")
                    failing = False
            except Exception:  # a broken connection: the backend reconnects on next use
                if not failing:  # once per outage, not every POLL_INTERVAL
                    logger.exception("wove: waiting for Celery results failed; retrying")
                    failing = True
                with self._wake:
                    self._wake.wait(POLL_INTERVAL)

    def _take_new(self, backend: Any, pushed: bool, leased: bool) -> None:
        with self._wake:
            while not (self._inbox or self._dropped or self._pending):
                self._wake.wait()
            new, self._inbox = self._inbox, []
            dropped, self._dropped = self._dropped, []
        for task_id, deliver, lease, heartbeat in new:
            result: AsyncResult | None = None
            try:
                if pushed:
                    result = AsyncResult(task_id, backend=backend, app=self._app)
                    result.then(self._on_ready)  # subscribes
                self._pending[task_id] = (deliver, result)
                if leased:
                    due = time.monotonic() + heartbeat
                    self._next_watch = min(self._next_watch, due) if self._watched else due
                    self._watched[task_id] = (lease, heartbeat)
                # Stored before the subscription? Then it is here already.
                self._check(backend, task_id)
            except Exception as error:  # the backend is unreachable: the caller hears it
                self._forget(task_id)
                deliver(WAIT_FAILED, error, None)
        for task_id in dropped:
            entry = self._forget(task_id)
            if entry is not None and entry[1] is not None:
                backend.remove_pending_result(entry[1])  # unsubscribes

    def _drain(self, backend: Any) -> None:
        try:
            backend.result_consumer.drain_events(timeout=PUSH_WAIT)
        except TimeoutError:
            pass

    def _poll(self, backend: Any) -> None:
        for task_id in list(self._pending):
            self._check(backend, task_id)
        with self._wake:
            if not (self._inbox or self._dropped):
                self._wake.wait(POLL_INTERVAL)

    def _check(self, backend: Any, task_id: str) -> None:
        meta = backend.get_task_meta(task_id)
        if meta.get("status") not in states.READY_STATES:
            return
        entry = self._pending.get(task_id)
        if entry is not None and entry[1] is not None:
            # Through the consumer, as a pushed message would go: it settles the
            # AsyncResult (and so calls _on_ready) and unsubscribes.
            backend.result_consumer.on_state_change(meta, None)
            return
        self._settle(task_id, meta["status"], meta.get("result"), meta.get("traceback"))

    def _on_ready(self, result: AsyncResult) -> None:
        self._settle(result.id, result.state, result.result, result.traceback)

    def _watch(self, backend: Any) -> None:
        """Read the claims and leases of the watched calls; deliver the lost ones."""
        ids = list(self._watched)
        now = time.monotonic()
        self._next_watch = now + min(heartbeat for _, heartbeat in self._watched.values())
        try:
            values = backend.client.mget([key(i) for i in ids for key in (claim_key, lease_key)])
        except Exception:
            # Unreadable: nothing is known, and absence must be seen for a whole lease
            # of answers (a lease expired while Redis was away is renewed when it is back).
            self._missing.clear()
            raise
        for index, task_id in enumerate(ids):
            claimed, alive = values[2 * index], values[2 * index + 1]
            if alive is not None or claimed is None:  # running, or still queued
                self._missing.pop(task_id, None)
                continue
            lease = self._watched[task_id][0]
            if now - self._missing.setdefault(task_id, now) < lease:
                continue
            self._check(backend, task_id)  # a reply stored just now wins
            entry = self._pending.get(task_id)
            if entry is not None:
                if entry[1] is not None:
                    backend.remove_pending_result(entry[1])  # unsubscribes
                self._settle(task_id, WORKER_LOST, lease, None)

    def _forget(self, task_id: str) -> tuple[Deliver, AsyncResult | None] | None:
        self._watched.pop(task_id, None)
        self._missing.pop(task_id, None)
        return self._pending.pop(task_id, None)

    def _settle(self, task_id: str, state: str, value: Any, traceback: str | None) -> None:
        entry = self._forget(task_id)
        if entry is None:  # dropped, or already delivered
            return
        try:
            entry[0](state, value, traceback)
        except Exception:
            logger.exception("wove: delivering the result of Celery task %s failed", task_id)


def json_backend(app: Celery) -> Any:
    """A result backend of ``app`` (same class and URL) that writes and reads JSON only.

    Wove's replies are JSON objects (sealed envelopes). Reading them with a backend that
    accepts only JSON means nothing stored under a task id, whatever the app's
    ``result_serializer`` and ``accept_content``, is ever unpickled before the envelope
    is verified. One instance per thread: Celery's backends are not thread-safe.
    """
    cache: dict[int, Any] = _local.__dict__.setdefault("backends", {})
    backend = cache.get(id(app))
    if backend is None:
        cls, url = by_url(app.conf.result_backend, app.loader)
        backend = cache[id(app)] = cls(app=app, url=url, serializer="json", accept=["json"])
    return backend


def backend_name(app: Celery) -> str:
    """The class name of ``app``'s result backend ("" when none is configured), without
    making one (a backend holds a connection pool)."""
    if not app.conf.result_backend:
        return ""
    cls, _ = by_url(app.conf.result_backend, app.loader)
    return str(cls.__name__)


_local = threading.local()
_waiters: dict[int, ResultWaiter] = {}
_waiters_lock = threading.Lock()


def waiter_for(app: Celery) -> ResultWaiter:
    """The process's result waiter for ``app`` (made on first use)."""
    waiter = _waiters.get(id(app))
    if waiter is None:
        with _waiters_lock:
            waiter = _waiters.setdefault(id(app), ResultWaiter(app))
    return waiter


def _forget_in_child() -> None:
    global _waiters_lock, _local
    _waiters_lock = threading.Lock()
    _local = threading.local()  # the parent's backends' connections are not ours
    _waiters.clear()  # their threads did not survive the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
