"""Traces across processes: a remote task's span on the worker, in the caller's trace.

The caller's side, :func:`current_carrier`: the trace context current where a remote
call is made (the task's attempt span, lane ``remote``), injected with the configured
propagators (W3C ``traceparent``, ``tracestate`` and ``baggage`` by default) into a
small ``dict`` of strings, plus the attempt's number and item index. A remote
environment carries it to the worker (the Celery integration inside its signed
envelope).

The worker's side, :class:`RemoteSpan`: a span named after the task, a child of that
context, current while the task runs there, so the spans its code opens nest under it.
It is recorded by the tracer of :class:`~wove.contrib.opentelemetry.WoveInstrumentor`
when the worker instruments Wove, else by the global tracer provider's (nothing is
recorded without an SDK).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import Token
from types import TracebackType
from typing import Final

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Tracer
from opentelemetry.util.types import AttributeValue

from wove import __version__

from .spans import ATTEMPT, ITEM_INDEX, LANE, TASK, WEAVE, _record_error, remote_attempt

#: The attribute with the Celery task id of the worker's span (the default
#: ``id_attribute``; other environments name their own, e.g. ``rq.job_id``).
CELERY_TASK_ID: Final = "celery.task_id"
#: Keys of the carrier beside the propagators' own.
ATTEMPT_KEY: Final = "wove-attempt"
ITEM_INDEX_KEY: Final = "wove-item-index"

_instrumented_tracer: Tracer | None = None
_global_tracer: Tracer | None = None


def use_tracer(tracer: Tracer | None) -> None:
    """The tracer of the worker's spans: the instrumentor's (None: the global one)."""
    global _instrumented_tracer
    _instrumented_tracer = tracer


def _tracer() -> Tracer:
    global _global_tracer
    if _instrumented_tracer is not None:
        return _instrumented_tracer
    if _global_tracer is None:  # a proxy until an SDK sets the global provider
        _global_tracer = trace.get_tracer("wove.contrib.opentelemetry", __version__)
    return _global_tracer


def current_carrier() -> dict[str, str] | None:
    """The current trace context as a carrier for a remote call, or None when no valid
    span is current (nothing to continue)."""
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    attempt = remote_attempt.get()
    if attempt is not None:
        carrier[ATTEMPT_KEY] = str(attempt[0])
        if attempt[1] is not None:
            carrier[ITEM_INDEX_KEY] = str(attempt[1])
    return carrier


def _number(carrier: Mapping[str, str], key: str) -> int | None:
    text = carrier.get(key)
    if text is None or not text.isdecimal() or len(text) > 18:
        return None
    return int(text)


def _continues(extracted: Context) -> bool:
    """Whether ``extracted`` is the parent to use: a valid context, and the trace is not
    already continued here (by ``opentelemetry-instrumentation-celery``'s run span,
    from the message's headers: then the current span, deeper in the same trace, is)."""
    remote = trace.get_current_span(extracted).get_span_context()
    if not remote.is_valid:
        return False
    current = trace.get_current_span().get_span_context()
    return not (current.is_valid and current.trace_id == remote.trace_id)


class RemoteSpan:
    """``with RemoteSpan(task, carrier, origin=..., task_id=...) as span:`` around a
    remote task's run on the worker: a span named ``task``, of kind ``CONSUMER`` (the
    processing of a message), a child of the context in ``carrier``, current inside the
    block. Its attributes: ``wove.task``, ``wove.lane`` (``"remote"``), ``wove.weave``
    (``origin``), ``wove.attempt`` and ``wove.item_index`` (from the carrier, when the
    caller instruments Wove) and the engine's id of the call, ``task_id``, under
    ``id_attribute`` (``celery.task_id`` unless the environment names its own).

    ``span.failed(error)`` records the task's error (status ``ERROR`` and an exception
    event) when the block handles it; an exception leaving the block is recorded too.

    When a span of the same trace is already current (the run span of
    ``opentelemetry-instrumentation-celery``, itself a child of the publish), the new
    span nests under it instead, so the tree has no gap. ``carrier`` None or without a
    valid context: a span of the current context (a new trace if none).
    """

    __slots__ = ("_parent", "_token", "span")

    def __init__(
        self,
        task: str,
        carrier: Mapping[str, str] | None,
        *,
        origin: str | None = None,
        task_id: str | None = None,
        id_attribute: str = CELERY_TASK_ID,
    ) -> None:
        parent: Context | None = None
        if carrier:
            extracted = propagate.extract(carrier)
            if _continues(extracted):
                parent = extracted
        attributes: dict[str, AttributeValue] = {TASK: task, LANE: "remote"}
        if origin is not None:
            attributes[WEAVE] = origin
        if carrier:
            attempt = _number(carrier, ATTEMPT_KEY)
            if attempt is not None:
                attributes[ATTEMPT] = attempt
            index = _number(carrier, ITEM_INDEX_KEY)
            if index is not None:
                attributes[ITEM_INDEX] = index
        if task_id is not None:
            attributes[id_attribute] = task_id
        self.span: Span = _tracer().start_span(
            task, context=parent, kind=SpanKind.CONSUMER, attributes=attributes
        )
        self._token: Token[Context] | None = None
        self._parent = parent

    def __enter__(self) -> RemoteSpan:
        self._token = otel_context.attach(trace.set_span_in_context(self.span, self._parent))
        return self

    def failed(self, error: BaseException) -> None:
        """The task raised ``error``: status ``ERROR``, the exception recorded."""
        if self.span.is_recording():
            _record_error(self.span, error)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if error is not None:
                self.failed(error)
        finally:
            self.span.end()
            if self._token is not None:
                otel_context.detach(self._token)


class RemoteContext:
    """``with RemoteContext(carrier):`` makes the context in ``carrier`` current (no
    span of its own): a detached weave run on a worker, whose own span (when the worker
    instruments Wove) is then a child of the span current where it was sent."""

    __slots__ = ("_context", "_token")

    def __init__(self, carrier: Mapping[str, str] | None) -> None:
        self._context: Context | None = None
        self._token: Token[Context] | None = None
        if carrier:
            extracted = propagate.extract(carrier)
            if _continues(extracted):
                self._context = extracted

    def __enter__(self) -> RemoteContext:
        if self._context is not None:
            self._token = otel_context.attach(self._context)
        return self

    def failed(self, error: BaseException) -> None:
        """Nothing to record: the weave's own span records its failures."""

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._token is not None:
            otel_context.detach(self._token)
