"""Every task run -> :class:`TraceRecord`, sent to the collectors active in the context.

Collectors are plain callables taking a record; they are looked up once per weave, so a
weave with no collector pays nothing per task. Records are small frozen values that never
hold a task's result. Collectors may be called from worker threads and must be cheap.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Final, Literal, NamedTuple

Status = Literal["ok", "error", "timeout", "cancelled"]
Collector = Callable[["TraceRecord"], None]

_collectors: contextvars.ContextVar[tuple[Collector, ...]] = contextvars.ContextVar(
    "wove_collectors", default=()
)
# The annotations of the traced task call running in this context (None: not traced).
_annotations: contextvars.ContextVar[dict[str, object] | None] = contextvars.ContextVar(
    "wove_annotations", default=None
)
NO_EXTRA: Final[Mapping[str, object]] = MappingProxyType({})


class TraceRecord(NamedTuple):
    """One attempt of one task (or one item of a mapped task).

    Immutable; a named tuple rather than a frozen dataclass because one is made per
    task attempt while tracing, and this is several times cheaper to build.
    """

    weave: str  # "file:line" of the `with weave()` that ran it
    weave_id: int  # distinguishes two runs of the same block
    task: str
    index: int | None  # type: ignore[assignment]  # item index of a mapped task (shadows tuple.index)
    # a pool thread, the loop, the caller's thread, or a remote environment (a worker)
    lane: Literal["thread", "loop", "caller", "remote"]
    thread: str  # name of the thread it ran on
    start: float  # time.perf_counter() seconds
    end: float
    attempt: int  # 0 for the first try, 1 for the first retry...
    status: Status
    error: str | None  # "TypeName: message" when status is not "ok"
    # What the call passed to wove.annotate() (read-only; shared and empty when nothing).
    extra: Mapping[str, object] = NO_EXTRA

    @property
    def duration(self) -> float:
        return self.end - self.start


def active_collectors() -> tuple[Collector, ...]:
    return _collectors.get()


def annotate(**values: object) -> None:
    """Attach values to the trace record of the task call running in this context.

    For integrations and users alike: the Django adapter records each task's SQL query
    count and time this way. Later values for a key replace earlier ones. Calls made
    through ``merge()`` annotate the task that merged them. Outside a task call, or when
    no collector is active (tracing off), this does nothing and costs one lookup.
    """
    current = _annotations.get()
    if current is not None:
        current.update(values)


def annotating() -> bool:
    """Whether this task call is traced, i.e. whether :func:`annotate` would keep values.
    For integrations that should not even measure what nobody records."""
    return _annotations.get() is not None


def annotations_set(extra: dict[str, object] | None) -> contextvars.Token[dict[str, object] | None]:
    """Make ``extra`` the annotations of the call about to run in this context."""
    return _annotations.set(extra)


def annotations_reset(token: contextvars.Token[dict[str, object] | None]) -> None:
    _annotations.reset(token)


def open_annotations(context: contextvars.Context) -> dict[str, object]:
    """Give a task call about to run in ``context`` its own annotations."""
    extra: dict[str, object] = {}
    context.run(_annotations.set, extra)
    return extra


@contextmanager
def collecting(collector: Collector) -> Iterator[None]:
    """Send the records of every weave run in this context (and tasks it starts) to
    ``collector`` as well, until the block ends. Framework middleware uses this."""
    token = _collectors.set((*_collectors.get(), collector))
    try:
        yield
    finally:
        _collectors.reset(token)


@contextmanager
def collect() -> Iterator[list[TraceRecord]]:
    """``with wove.collect() as records:`` gathers the records of the weaves run inside."""
    records: list[TraceRecord] = []
    with collecting(records.append):
        yield records
