"""The spans: one per weave run, one per task attempt (and per mapped item).

Built on :func:`wove.lowlevel.add_instrument` only. The core opens each scope in the
context the work runs in, so making a span current there (``opentelemetry.context``)
is what nests everything: the weave's span under the span current where the block
starts, each attempt's under the weave's, and a span the task's own code opens (an HTTP
client's, a database driver's) under the attempt's, on whichever lane it runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from functools import lru_cache
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.util.types import AttributeValue

from wove.lowlevel import add_instrument

if TYPE_CHECKING:
    from .forked import ChildSpans, ChildWeave

# Span attributes.
WEAVE: Final = "wove.weave"  # "file:line" of the `with weave()` block
TASK: Final = "wove.task"
LANE: Final = "wove.lane"  # "thread", "loop", "caller" or "remote"
ATTEMPT: Final = "wove.attempt"  # 0 for the first try, 1 for the first retry...
ITEM_INDEX: Final = "wove.item_index"  # the item of a mapped task
CANCELLED: Final = "wove.cancelled"  # True: cancelled (the weave failed, or its caller)
SQL_COUNT: Final = "wove.sql.count"  # queries the task ran (the Django adapter)
SQL_TIME: Final = "wove.sql.time"  # their total time, in milliseconds
ANNOTATION_PREFIX: Final = "wove.annotation."  # any other wove.annotate(key=value)

#: ``(attempt, item index)`` of the remote attempt whose span is current: set for lane
#: ``remote`` only, read when the call's trace context is injected (remote.py).
remote_attempt: ContextVar[tuple[int, int | None] | None] = ContextVar(
    "wove_remote_attempt", default=None
)

#: Set in a forked child that reports back (``detach(mode="fork")``): its runs and
#: attempts are written down there, and their spans made in the parent (forked.py).
forked_child: ContextVar[ChildSpans | None] = ContextVar("wove_forked_child", default=None)

# What the Django adapter annotates (wove.contrib.django.queries) -> the attribute.
_KNOWN_ANNOTATIONS: Final = {"queries": SQL_COUNT, "query_ms": SQL_TIME}


@lru_cache(maxsize=4096)
def weave_span_name(origin: str) -> str:
    """``"weave views.py:42"`` for the block at ``/srv/app/views.py:42`` (the full
    ``file:line`` is the span's ``wove.weave`` attribute)."""
    path, sep, line = origin.rpartition(":")
    if not sep:
        return f"weave {origin}"
    name = path.replace("\\", "/").rpartition("/")[2]  # the file's name, on any OS
    return f"weave {name}:{line}"


def _describe(error: BaseException) -> str:
    name = type(error).__name__
    try:
        return f"{name}: {error}"
    except Exception:
        return name


def _record_error(span: Span, error: BaseException) -> None:
    """A cancelled attempt or run says so (status left unset: the failure that caused
    the cancellation has its own span, with status ERROR); any other error, a
    ``TaskTimeout`` included, sets status ERROR and is recorded as an exception event."""
    if isinstance(error, asyncio.CancelledError):
        span.set_attribute(CANCELLED, True)
        return
    span.set_status(Status(StatusCode.ERROR, _describe(error)))
    try:
        span.record_exception(error)
    except Exception:  # an exception whose __str__ raises: the status is enough
        pass


def _annotation_attributes(extra: Mapping[str, object]) -> dict[str, AttributeValue]:
    attributes: dict[str, AttributeValue] = {}
    for key, value in extra.items():
        name = _KNOWN_ANNOTATIONS.get(key)
        if name is None:
            name = ANNOTATION_PREFIX + key
        elif isinstance(value, bool) or not isinstance(value, int | float):
            continue  # the SQL attributes are numbers
        if isinstance(value, bool | int | float | str):
            attributes[name] = value
    return attributes


# The span instruments registered in this process. A process forked from an instrumented
# one inherits them: a child of a fork server started after ``instrument()`` records
# with those, and must not register a second one (each would write every run down).
_registered: list[SpanInstrument] = []


def register(tracer: Tracer) -> Callable[[], None]:
    """Register a :class:`SpanInstrument` of ``tracer`` (``wove.lowlevel.add_instrument``);
    returns the remover."""
    instrument = SpanInstrument(tracer)
    remove = add_instrument(instrument)
    _registered.append(instrument)

    def removed() -> None:
        remove()
        if instrument in _registered:
            _registered.remove(instrument)

    return removed


def registered() -> bool:
    """Whether a :class:`SpanInstrument` observes this process's weave runs."""
    return bool(_registered)


class SpanInstrument:
    """The process-wide instrument (see :class:`wove.lowlevel.Instrument`)."""

    __slots__ = ("tracer",)

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer

    def weave_started(self, origin: str, run_id: int) -> WeaveSpan | ChildWeave | None:
        """Called in the run's own context (a copy of the caller's), before any task."""
        child = forked_child.get()
        if child is not None:  # in a forked child: the parent makes the spans
            return child.weave_started(origin, run_id)
        span = self.tracer.start_span(
            weave_span_name(origin), kind=SpanKind.INTERNAL, attributes={WEAVE: origin}
        )
        if not span.is_recording():
            # No SDK (the API's no-op tracer), or not sampled: no scopes, so the run
            # keeps its lean paths.
            span.end()
            return None
        parent = trace.set_span_in_context(span)
        # The run's context is its own copy and is dropped with the run: nothing to detach.
        otel_context.attach(parent)
        return WeaveSpan(self.tracer, span, parent, origin)


class WeaveSpan:
    """One run of one weave (see :class:`wove.lowlevel.WeaveScope`)."""

    __slots__ = ("origin", "parent", "span", "tracer")

    def __init__(self, tracer: Tracer, span: Span, parent: Context, origin: str) -> None:
        self.tracer = tracer
        self.span = span
        self.parent = parent
        self.origin = origin

    def attempt_started(self, task: str, index: int | None, lane: str, attempt: int) -> AttemptSpan:
        """Called in the attempt's own context, on the thread or loop it runs on."""
        if index is None:
            attributes = _attempt_attributes(self.origin, task, lane, attempt)
        else:
            attributes = {**_attempt_attributes(self.origin, task, lane, attempt)}
            attributes[ITEM_INDEX] = index
        span = self.tracer.start_span(task, self.parent, attributes=attributes)
        token = otel_context.attach(trace.set_span_in_context(span))
        if lane == "thread" or lane == "caller":
            # A sync call runs in a copy of the context made for this attempt and dropped
            # after it: nothing to put back.
            return AttemptSpan(span, None)
        # On the loop: the worker's own context, which runs the next task of its chain.
        remote = remote_attempt.set((attempt, index)) if lane == "remote" else None
        return AttemptSpan(span, token, remote)

    def finished(self, error: BaseException | None) -> None:
        """The run ended (``error``: its first failure); on any thread."""
        try:
            if error is not None:
                _record_error(self.span, error)
        finally:
            self.span.end()


@lru_cache(maxsize=4096)
def _attempt_attributes(
    origin: str, task: str, lane: str, attempt: int
) -> Mapping[str, AttributeValue]:
    """The attributes every attempt of ``task`` at ``attempt`` shares: made once, read
    only (the SDK copies them into the span)."""
    return MappingProxyType({TASK: task, LANE: lane, ATTEMPT: attempt, WEAVE: origin})


class AttemptSpan:
    """One attempt of one task, or of one item (see :class:`wove.lowlevel.AttemptScope`)."""

    __slots__ = ("remote", "span", "token")

    def __init__(
        self,
        span: Span,
        token: Token[Context] | None,
        remote: Token[tuple[int, int | None] | None] | None = None,
    ) -> None:
        self.span = span
        self.token = token
        self.remote = remote

    def finished(self, error: BaseException | None, extra: Mapping[str, object]) -> None:
        """Called in the context of :meth:`WeaveSpan.attempt_started`."""
        span = self.span
        try:
            if extra:
                span.set_attributes(_annotation_attributes(extra))
            if error is not None:
                _record_error(span, error)
        finally:
            span.end()
            if self.remote is not None:
                remote_attempt.reset(self.remote)
            if self.token is not None:
                otel_context.detach(self.token)
