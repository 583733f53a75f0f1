"""What monitoring and tracing see of a remote call.

* The name Celery's monitoring shows (events, Flower, ``celery inspect``, the worker's
  log): every call is Wove's one task, ``wove.run``, sent with Celery's ``shadow`` name
  :func:`call_name` (``wove:<module>.<function>.<task>``) or :func:`weave_name`
  (``wove:weave <file>:<line>``).
* The caller's trace context, :func:`trace_context`, carried in the signed envelope;
  on the worker, :func:`task_span` opens the task's span as its child. Both go through
  :mod:`wove.contrib.opentelemetry.remote` when OpenTelemetry is installed, and do
  nothing (at no cost) when it is not, or when the process never imported it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, Final

from wove.contrib.remote import tracing
from wove.contrib.remote.tracing import NO_SPAN, TaskSpan, trace_context, weave_context

__all__ = [
    "CELERY_TASK_ID",
    "NO_SPAN",
    "TaskSpan",
    "call_name",
    "task_span",
    "trace_context",
    "weave_context",
    "weave_name",
]

#: The attribute of the worker's span that holds the Celery task id.
CELERY_TASK_ID: Final = "celery.task_id"


def call_name(function: Callable[..., Any], task: str) -> str:
    """The name a call shows under in Celery's monitoring: ``wove:`` and where the task
    is defined, ``catalog.views.author_report.royalties`` for the task ``royalties``
    written inside ``author_report`` in ``catalog/views.py``."""
    module = getattr(function, "__module__", None)
    qualname = getattr(function, "__qualname__", None)
    return _call_name(
        module if isinstance(module, str) else None,
        qualname if isinstance(qualname, str) else None,
        task,
    )


@lru_cache(maxsize=1024)
def _call_name(module: str | None, qualname: str | None, task: str) -> str:
    scope = [part for part in (qualname or "").split(".") if part and part != "<locals>"]
    path = [*([module] if module else []), *scope[:-1], task]
    return "wove:" + ".".join(path)


@lru_cache(maxsize=256)
def weave_name(origin: str) -> str:
    """The name a detached weave shows under: ``wove:weave views.py:42``."""
    path, sep, line = origin.rpartition(":")
    if not sep:
        return f"wove:weave {origin}"
    return f"wove:weave {os.path.basename(path.replace(chr(92), '/'))}:{line}"


def task_span(task: str, carrier: Mapping[str, str] | None, origin: str, task_id: str) -> TaskSpan:
    """The worker's span of Celery task ``task_id`` (see
    :func:`wove.contrib.remote.tracing.task_span`)."""
    return tracing.task_span(task, carrier, origin, task_id, CELERY_TASK_ID)
