"""Spans of detached work run in a forked child (``detach(mode="fork")``), made in the
parent from the child's report.

A forked child's span processors cannot be relied on: a ``BatchSpanProcessor``'s
thread is restarted there but the child ends with ``os._exit``, which skips its last
export, and an exporter's connection was pointed at ``/dev/null`` by the detach. So in
the child the instrument makes no span: it writes down each weave run and each attempt
(name, attributes, wall-clock start and end, error) in a :class:`ChildSpans`, which
rides back in the child's report (``wove.contrib.traces.forked``). The parent then
starts and ends those spans on its own tracer with the child's timestamps, under the
context current at ``detach()`` (the request's span, or one the view opened): the same
tree, names and attributes as a weave run in the parent, plus ``wove.pid`` (the child's)
on each weave span. Spans the task's own code opens in the child are the child's SDK's
(under the ``detach()`` context, exported only if its processors get to run).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.util.types import AttributeValue

from wove.contrib.traces.forked import follow_forks, fork_reports, send
from wove.lowlevel import ChildMode, follow_detached, logger

from . import spans
from .spans import ATTEMPT, CANCELLED, ITEM_INDEX, LANE, TASK, WEAVE, _annotation_attributes

#: The child's pid, on the weave spans of a forked child.
PID: Final = "wove.pid"
#: The report's field.
KEY: Final = "opentelemetry"
_LIMIT: Final = 10_000  # spans of one child; more are dropped (its report is bounded)

# The attempt (its entry's id) whose code runs in this context, in the child: the
# parent of a weave that code starts.
_attempt: ContextVar[int | None] = ContextVar("wove_forked_attempt", default=None)


def _exception_type(error: BaseException) -> str:
    """As the SDK's ``record_exception`` names it."""
    kind = type(error)
    module = kind.__module__
    return f"{module}.{kind.__qualname__}" if module and module != "builtins" else kind.__qualname__


def _error_fields(error: BaseException) -> dict[str, Any]:
    """What :func:`spans._record_error` records, as data."""
    if isinstance(error, asyncio.CancelledError):
        return {"cancelled": True}
    try:
        message = str(error)
    except Exception:
        message = ""
    return {
        "description": spans._describe(error),
        "type": _exception_type(error),
        "message": message,
    }


class ChildSpans:
    """The child's runs and attempts, as data (made in the parent before the fork, or
    sent pickled to a spawned child or a fork server's, and filled in the child); also
    the scope (:class:`wove.contrib.traces.forked.ChildScope`) that makes it current in
    the context the child runs in."""

    __slots__ = ("_ids", "_remove", "_token", "entries")

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self._ids = itertools.count()
        self._token: Token[ChildSpans | None] | None = None
        self._remove: Callable[[], None] | None = None

    def __reduce__(self) -> tuple[type[ChildSpans], tuple[()]]:
        """Pickled (sent to a spawned child or a fork server's): a new, empty one."""
        return ChildSpans, ()

    def __enter__(self) -> ChildSpans:
        # Entered in a spawned child (a new interpreter) or in a fork server's (a copy of
        # a process forked perhaps before Wove was instrumented), no span instrument may
        # run yet: then one that only writes down (its tracer is never used).
        if not spans.registered():
            self._remove = spans.register(trace.NoOpTracer())
        self._token = spans.forked_child.set(self)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._token is not None:
            spans.forked_child.reset(self._token)
            self._token = None
        if self._remove is not None:
            self._remove()
            self._remove = None

    def report(self) -> dict[str, Any]:
        """In the child, its work done: the spans to make, for the parent."""
        return {"pid": os.getpid(), "spans": self.entries}

    def open(
        self, name: str, parent: int | None, attributes: dict[str, AttributeValue]
    ) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "id": next(self._ids),
            "parent": parent,
            "name": name,
            "attributes": attributes,
            "start": time.time_ns(),
            "end": None,
        }
        if len(self.entries) < _LIMIT:
            self.entries.append(entry)  # atomic: attempts end on several threads
        return entry

    def weave_started(self, origin: str, run_id: int) -> ChildWeave:
        """In place of :meth:`spans.SpanInstrument.weave_started`, in the child."""
        attributes: dict[str, AttributeValue] = {WEAVE: origin, PID: os.getpid()}
        entry = self.open(spans.weave_span_name(origin), _attempt.get(), attributes)
        return ChildWeave(self, entry, origin)


def _close(entry: dict[str, Any], error: BaseException | None) -> None:
    entry["end"] = time.time_ns()
    if error is not None:
        entry["error"] = _error_fields(error)


class ChildWeave:
    """One run in the child (a :class:`wove.lowlevel.WeaveScope`)."""

    __slots__ = ("child", "entry", "origin")

    def __init__(self, child: ChildSpans, entry: dict[str, Any], origin: str) -> None:
        self.child = child
        self.entry = entry
        self.origin = origin

    def attempt_started(
        self, task: str, index: int | None, lane: str, attempt: int
    ) -> ChildAttempt:
        attributes: dict[str, AttributeValue] = {
            TASK: task,
            LANE: lane,
            ATTEMPT: attempt,
            WEAVE: self.origin,
        }
        if index is not None:
            attributes[ITEM_INDEX] = index
        entry = self.child.open(task, self.entry["id"], attributes)
        return ChildAttempt(entry, _attempt.set(entry["id"]))

    def finished(self, error: BaseException | None) -> None:
        _close(self.entry, error)


class ChildAttempt:
    """One attempt in the child (a :class:`wove.lowlevel.AttemptScope`)."""

    __slots__ = ("entry", "token")

    def __init__(self, entry: dict[str, Any], token: Token[int | None]) -> None:
        self.entry = entry
        self.token = token

    def finished(self, error: BaseException | None, extra: Mapping[str, object]) -> None:
        try:
            if extra:
                self.entry["attributes"].update(_annotation_attributes(extra))
            _close(self.entry, error)
        finally:
            _attempt.reset(self.token)


class SpanFollower:
    """The :class:`wove.contrib.traces.forked.ForkFollower` of the instrumentor: keeps
    the context current at ``detach()``, and makes the child's spans under it."""

    key = KEY

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer

    def capture(self) -> object:
        return otel_context.get_current()

    def child_scope(self, captured: object) -> ChildSpans:
        return ChildSpans()

    @contextlib.contextmanager
    def resumed(self, captured: object) -> Iterator[None]:
        """The context of ``detach()`` current again: a weave started here is a child
        of the span current then, though that span may have ended."""
        if not isinstance(captured, Context):
            yield
            return
        token = otel_context.attach(captured)
        try:
            yield
        finally:
            otel_context.detach(token)

    def received(self, captured: object, data: object) -> None:
        if not isinstance(data, dict) or not isinstance(data.get("spans"), list):
            return
        root = captured if isinstance(captured, Context) else Context()
        made: dict[int, Context] = {}
        for entry in data["spans"][:_LIMIT]:  # a parent comes before its children
            fields = _valid(entry)
            if fields is None:
                continue
            number, parent_number = fields
            if parent_number is None:
                parent = root
            elif parent_number in made:
                parent = made[parent_number]
            else:
                continue  # its parent was not recorded (not sampled, or invalid)
            span = self._make(entry, parent)
            if span is not None:
                made[number] = trace.set_span_in_context(span, parent)

    def _make(self, entry: dict[str, Any], parent: Context) -> Span | None:
        start: int = entry["start"]
        end = entry["end"] if isinstance(entry["end"], int) else start
        attributes = {
            key: value
            for key, value in entry["attributes"].items()
            if isinstance(key, str) and isinstance(value, bool | int | float | str)
        }
        span = self.tracer.start_span(
            entry["name"],
            context=parent,
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            start_time=start,
        )
        if not span.is_recording():
            span.end(end_time=max(start, end))
            return None
        error = entry.get("error")
        if isinstance(error, dict):
            if error.get("cancelled") is True:
                span.set_attribute(CANCELLED, True)
            else:
                span.set_status(Status(StatusCode.ERROR, str(error.get("description", ""))))
                span.add_event(
                    "exception",
                    {
                        "exception.type": str(error.get("type", "")),
                        "exception.message": str(error.get("message", "")),
                    },
                    timestamp=max(start, end),
                )
        span.end(end_time=max(start, end))
        return span


def _valid(entry: object) -> tuple[int, int | None] | None:
    """``(id, parent id)`` of a well-formed entry (the child is ours, but its report
    crossed a socket), else None."""
    if not isinstance(entry, dict):
        return None
    number, parent = entry.get("id"), entry.get("parent")
    if not isinstance(number, int) or not (parent is None or isinstance(parent, int)):
        return None
    if not isinstance(entry.get("name"), str) or not isinstance(entry.get("start"), int):
        return None
    if not isinstance(entry.get("attributes"), dict):
        return None
    return number, parent


class ReportingChild:
    """A :class:`wove.lowlevel.DetachedChild`: in the child of a ``weave(background=True,
    fork=...)``, writes down its runs and attempts as a :class:`ChildSpans` and sends
    them to the parent when its work (the weave and ``on_done``) is over."""

    def __init__(self, address: str, report_id: str) -> None:
        self.address = address
        self.report_id = report_id

    def __call__(self, body: Callable[[], int]) -> int:
        recorded = ChildSpans()
        try:
            with recorded:
                return body()
        finally:
            try:
                send(self.address, {"id": self.report_id, KEY: recorded.report()})
            except Exception:
                logger.exception("wove: the detached weave's spans could not be sent back")


class DetachedWeaves:
    """The :data:`wove.lowlevel.DetachFollower` of the instrumentor: keeps the context
    current where a ``weave(background=True, fork=...)`` block ends, and makes the
    child's spans under it when its report arrives."""

    def __init__(self, tracer: Tracer) -> None:
        self.follower = SpanFollower(tracer)

    def __call__(self, origin: str, mode: ChildMode) -> ReportingChild | None:
        if spans.forked_child.get() is not None:
            return None  # detach(mode="fork"): its own report carries the spans
        captured = otel_context.get_current()
        report_id = f"spans-{os.getpid()}-{next(_report_ids)}"
        address = fork_reports().expect_report(
            report_id, functools.partial(self._received, captured)
        )
        return ReportingChild(address, report_id)

    def _received(self, captured: Context, report: dict[str, Any] | None) -> None:
        if report is not None:  # None: the child never reported (killed, or too late)
            self.follower.received(captured, report.get(KEY))


_report_ids = itertools.count(1)


def follow(tracer: Tracer) -> Callable[[], None]:
    """Follow detached work into its child processes with ``tracer``: ``detach(mode=
    "fork")`` and ``weave(background=True, fork=...)``; returns the remover."""
    unfollow_forks = follow_forks(SpanFollower(tracer))
    unfollow_weaves = follow_detached(DetachedWeaves(tracer))

    def remove() -> None:
        unfollow_forks()
        unfollow_weaves()

    return remove
