"""A remote call that ended without a reply -> the error that says what is known.

Three things can be known of such a call, and each has its class (see docs/errors.md):
the function never ran (:class:`wove.RemoteNeverRan`: refused, expired, revoked before
it started, never sent), its worker was lost while holding it
(:class:`wove.RemoteWorkerLost`, it may have started), or it ran and its result was lost
(:class:`wove.RemoteResultLost`; the reply that says so comes from the worker, see
:func:`wove.contrib.celery.replies.outcome`). What Celery alone knows (a time limit,
a terminated task) stays a plain :class:`wove.RemoteTaskError`.
"""

from __future__ import annotations

from typing import Any, Final

from celery import states

from wove import RemoteNeverRan, RemoteResultLost, RemoteTaskError, RemoteWorkerLost

#: The broker did not take the call (the value: the sending error).
UNSENT: Final = "WOVE-UNSENT"
#: The call's lease expired without a reply (the value: the lease in seconds).
WORKER_LOST: Final = "WOVE-WORKER-LOST"
#: The caller could not wait for the reply (the value: the result backend's error).
WAIT_FAILED: Final = "WOVE-WAIT-FAILED"

#: Celery's failures (stored by the worker's parent process) that mean the worker was
#: lost, or that the function never ran.
_WORKER_LOST_TYPES: Final = frozenset({"WorkerLostError"})
_NEVER_RAN_TYPES: Final = frozenset({"EnvelopeError"})


def failure(task: str, task_id: str, state: str, value: Any, traceback: str | None) -> Exception:
    """The error for a call of ``task`` that ended in ``state`` (anything but SUCCESS)."""
    kind = type(value).__name__ if isinstance(value, BaseException) else "Error"
    if state == UNSENT:
        error: RemoteTaskError = RemoteNeverRan(
            task, kind, f"the call was never sent, Celery's broker refused it: {value}", None
        )
        error.__cause__ = value if isinstance(value, BaseException) else None
        return error
    if state == WORKER_LOST:
        return RemoteWorkerLost(
            task,
            "WorkerLost",
            f"the worker running Celery task {task_id} was lost: its lease was not renewed "
            f"for {value:g} s and no reply was stored; the function may have started (and "
            f"even finished), so it is not resent (retries=) unless the task is "
            f"idempotent=True",
            None,
        )
    if state == WAIT_FAILED:
        return RemoteResultLost(
            task,
            "ResultLost",
            f"could not wait for the reply of Celery task {task_id}, the result backend "
            f"failed ({kind}: {value}); the call may have been sent and run",
            None,
        )
    if state == states.REVOKED:
        return _revoked(task, task_id, str(value))
    # FAILURE stored by Celery itself: its exception in Celery's JSON form, text only.
    if kind in _WORKER_LOST_TYPES:
        error = RemoteWorkerLost(
            task,
            kind,
            f"the worker process running Celery task {task_id} was lost ({value}); the "
            f"function may have started",
            traceback,
        )
    elif kind in _NEVER_RAN_TYPES:
        error = RemoteNeverRan(task, kind, str(value), traceback)
        error.add_note(f"wove: the worker refused Celery task {task_id}; the function never ran")
    else:
        error = RemoteTaskError(task, kind, str(value), traceback)
    if traceback:
        error.add_note(f"wove: remote traceback (Celery task {task_id}):\n{traceback}")
    return error


def _revoked(task: str, task_id: str, reason: str) -> RemoteTaskError:
    if "terminated" in reason or "signal" in reason.lower():  # stopped while it ran
        return RemoteTaskError(
            task, "TaskRevokedError", f"Celery task {task_id} was revoked while it ran", None
        )
    why = "expired while queued" if "expired" in reason else "was revoked before it started"
    return RemoteNeverRan(task, "TaskRevokedError", f"Celery task {task_id} {why}", None)
