"""What a remote environment carries of the caller's trace, and opens with it on the worker.

* :func:`trace_context`: the caller's trace context (its remote attempt span), a small
  ``dict`` of strings to carry with the call (inside the signed envelope when the call
  crosses a broker);
* :func:`task_span`: on the worker, the task's span as the child of that context,
  current while the task runs; :func:`weave_context`: the caller's context, current
  while a detached weave runs there.

All go through :mod:`wove.contrib.opentelemetry.remote` when OpenTelemetry is installed,
and do nothing (at no cost) when it is not, or when the process never imported it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from types import TracebackType
from typing import Final, Protocol

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


def task_span(
    task: str,
    carrier: Mapping[str, str] | None,
    origin: str,
    task_id: str,
    id_attribute: str,
) -> TaskSpan:
    """The worker's span of a call, a child of the caller's (``carrier``), with the
    engine's id of the call as the attribute ``id_attribute`` (``"celery.task_id"``); a
    no-op without a carrier or without OpenTelemetry."""
    if not carrier:
        return NO_SPAN
    try:
        from wove.contrib.opentelemetry.remote import RemoteSpan

        return RemoteSpan(task, carrier, origin=origin, task_id=task_id, id_attribute=id_attribute)
    except Exception:  # opentelemetry missing here (ImportError), or it failed
        logger.debug("wove: no span for remote call %s", task_id, exc_info=True)
        return NO_SPAN


def weave_context(carrier: Mapping[str, str] | None, task_id: str) -> TaskSpan:
    """The caller's context, current while a detached weave runs on the worker."""
    if not carrier:
        return NO_SPAN
    try:
        from wove.contrib.opentelemetry.remote import RemoteContext

        return RemoteContext(carrier)
    except Exception:
        logger.debug("wove: no trace context for remote call %s", task_id, exc_info=True)
        return NO_SPAN
