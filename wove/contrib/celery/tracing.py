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

import logging
import os
import sys
from collections.abc import Callable, Mapping
from functools import lru_cache
from types import TracebackType
from typing import Any, Final, Protocol

from .envelope import trace_problem

logger: Final = logging.getLogger("wove")

#: The keys kept when a trace context is over the envelope's limits (a huge baggage).
_ESSENTIAL: Final = ("traceparent", "tracestate")


class TaskSpan(Protocol):
    """What :func:`task_span` returns: a context manager with ``failed(error)``."""

    def __enter__(self) -> TaskSpan: ...

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...

    def failed(self, error: BaseException) -> None: ...


class _NoSpan:
    __slots__ = ()

    def __enter__(self) -> _NoSpan:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def failed(self, error: BaseException) -> None:
        return None


NO_SPAN: Final = _NoSpan()


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


def trace_context() -> dict[str, str] | None:
    """The trace context current here (the caller's remote attempt span), to carry in
    the envelope; None without OpenTelemetry, or when no span is current."""
    if "opentelemetry.trace" not in sys.modules:  # never imported: nothing is current
        return None
    try:
        from wove.contrib.opentelemetry.remote import current_carrier

        carrier = current_carrier()
    except Exception:  # tracing never stops a call
        logger.debug("wove: no trace context for a remote call", exc_info=True)
        return None
    if not carrier:
        return None
    if trace_problem(carrier) is not None:
        carrier = {key: carrier[key] for key in _ESSENTIAL if key in carrier}
        if trace_problem(carrier) is not None:
            return None
    return carrier


def task_span(task: str, carrier: Mapping[str, str] | None, origin: str, task_id: str) -> TaskSpan:
    """The worker's span of a call, a child of the caller's (``carrier``); a no-op
    without a carrier or without OpenTelemetry."""
    if not carrier:
        return NO_SPAN
    try:
        from wove.contrib.opentelemetry.remote import RemoteSpan

        return RemoteSpan(task, carrier, origin=origin, task_id=task_id)
    except Exception:  # opentelemetry missing here (ImportError), or it failed
        logger.debug("wove: no span for Celery task %s", task_id, exc_info=True)
        return NO_SPAN


def weave_context(carrier: Mapping[str, str] | None, task_id: str) -> TaskSpan:
    """The caller's context, current while a detached weave runs on the worker."""
    if not carrier:
        return NO_SPAN
    try:
        from wove.contrib.opentelemetry.remote import RemoteContext

        return RemoteContext(carrier)
    except Exception:
        logger.debug("wove: no trace context for Celery task %s", task_id, exc_info=True)
        return NO_SPAN
