"""Celery replies: the shared :mod:`wove.contrib.remote.replies`, a remote traceback
naming the Celery task it came from."""

from __future__ import annotations

from typing import Any

from wove.contrib.remote import replies
from wove.contrib.remote.replies import error_body, lost_body, ok_body

__all__ = ["error_body", "lost_body", "ok_body", "outcome"]


def outcome(task: str, task_id: str, body: bytes) -> tuple[Any, dict[str, Any]]:
    """:func:`wove.contrib.remote.replies.outcome` for the reply of Celery task
    ``task_id``."""
    return replies.outcome(task, f"Celery task {task_id}", body)
