"""Every task run -> :class:`TraceRecord`, sent to the collectors active in the context.

Collectors are plain callables taking a record; they are looked up once per weave, so a
weave with no collector pays nothing per task. Records are small frozen values that never
hold a task's result. Collectors may be called from worker threads and must be cheap.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Final, Literal, NamedTuple, Protocol

from .registry import Registry

Status = Literal["ok", "error", "timeout", "cancelled"]
Collector = Callable[["TraceRecord"], None]

RawRecord = tuple[
    str,  # weave
    int,  # weave_id
    str,  # task
    int | None,  # index
    str,  # lane
    str,  # thread
    float,  # start
    float,  # end
    int,  # attempt
    BaseException | None,  # the error (None: ok)
    dict[str, object] | None,  # the annotations (None or empty: none)
    bool,  # timed out (status "timeout")
]
"""What the engine hands a raw collector per attempt: the fields of a
:class:`TraceRecord` before anything is derived from them (status, error text, a
read-only copy of the annotations). :func:`build_record` makes the record."""


class RawCollector(NamedTuple):
    """A collector that takes :data:`RawRecord` tuples (see :func:`collecting_raw`)."""

    append: Callable[[RawRecord], None]
    annotations: bool = True


_collectors: contextvars.ContextVar[tuple[Collector | RawCollector, ...]] = contextvars.ContextVar(
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


def active_collectors() -> tuple[Collector | RawCollector, ...]:
    return _collectors.get()


def describe_error(error: BaseException) -> str:
    """``"TypeName: message"``, whatever the exception's ``__str__`` does: describing an
    error must never raise into the engine."""
    name = type(error).__name__
    try:
        return f"{name}: {error}"
    except BaseException:
        return f"{name}: <the exception's __str__ raised>"


def build_record(raw: RawRecord) -> TraceRecord:
    """The :class:`TraceRecord` of a :data:`RawRecord`."""
    if raw[9] is None and not raw[10]:  # the common case: it succeeded, nothing annotated
        return _new_tuple(TraceRecord, (*raw[:9], "ok", None, NO_EXTRA))
    weave, run_id, task, index, lane, thread, start, end, attempt, error, extra, timed_out = raw
    status: Status
    if error is None:
        status = "ok"
    elif timed_out:
        status = "timeout"
    elif isinstance(error, asyncio.CancelledError):
        status = "cancelled"
    else:
        status = "error"
    return TraceRecord(  # positional: this runs once per traced attempt
        weave,
        run_id,
        task,
        index,
        lane,  # type: ignore[arg-type]  # the engine's lanes are the Literal's values
        thread,
        start,
        end,
        attempt,
        status,
        None if error is None else describe_error(error),
        MappingProxyType(dict(extra)) if extra else NO_EXTRA,
    )


_new_tuple = tuple.__new__


class AttemptScope(Protocol):
    """What an instrument keeps for one attempt of one task (see :class:`Instrument`)."""

    def finished(self, error: BaseException | None, extra: Mapping[str, object]) -> None:
        """The attempt ended: ``error`` is None on success, a ``CancelledError`` when it
        was cancelled, a ``TaskTimeout`` at its timeout. Called in the context of
        :meth:`WeaveScope.attempt_started`."""


class WeaveScope(Protocol):
    """What an instrument keeps for one run of one weave."""

    def attempt_started(
        self, task: str, index: int | None, lane: str, attempt: int
    ) -> AttemptScope | None:
        """An attempt of ``task`` (item ``index`` of a mapped task) starts on ``lane``;
        called in the attempt's own context, on the thread or loop it runs on, so the
        instrument can make its span current for the task's own code."""

    def finished(self, error: BaseException | None) -> None:
        """The run ended (``error``: its first failure); called on any thread."""


class Instrument(Protocol):
    """A process-wide observer of every weave run (the OpenTelemetry instrumentation is
    one): :meth:`weave_started` is called in the run's context, before any task."""

    def weave_started(self, origin: str, run_id: int) -> WeaveScope | None:
        """A run of the weave at ``origin`` (``file:line``) starts; None to ignore it."""


_instruments: Registry[Instrument] = Registry()


def add_instrument(instrument: Instrument) -> Callable[[], None]:
    """Observe every weave run started from now on; returns a function that stops it.

    For instrumentation libraries: each run, each task attempt and each mapped item get
    a scope opened in the context they run in (see :class:`Instrument`). Costs one tuple
    check per weave while none is registered."""
    return _instruments.add(instrument)


def active_instruments() -> tuple[Instrument, ...]:
    return _instruments.items


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


class collecting_raw:  # used as a function: ``with collecting_raw(...):``
    """Like :func:`collecting`, but ``append`` receives each attempt as a
    :data:`RawRecord` tuple, built with no derived field, for a collector that keeps
    most attempts unread (a framework's request traces) and makes the records of the
    ones it keeps with :func:`build_record`. ``append`` may be a list's ``append``:
    called from worker threads, it must be cheap and must not raise. The raw tuple
    holds the attempt's exception, if any, and its annotations' dict: keep it no longer
    than the work it describes.

    ``annotations=False``: timings only. Unless another collector or an instrument
    wants them, the task calls get no annotations (:func:`annotating` is False, so an
    integration does not even measure what it would annotate) and the records have no
    ``extra``: the cheapest recording there is.

    A class rather than a generator: one is entered per recorded request.
    """

    __slots__ = ("_collector", "_token")

    def __init__(self, append: Callable[[RawRecord], None], *, annotations: bool = True) -> None:
        self._collector = RawCollector(append, annotations)
        self._token: contextvars.Token[tuple[Collector | RawCollector, ...]] | None = None

    def __enter__(self) -> None:
        self._token = _collectors.set((*_collectors.get(), self._collector))

    def __exit__(self, *exc_info: object) -> None:
        token, self._token = self._token, None
        if token is not None:
            _collectors.reset(token)


@contextmanager
def collect() -> Iterator[list[TraceRecord]]:
    """``with wove.collect() as records:`` gathers the records of the weaves run inside."""
    records: list[TraceRecord] = []
    with collecting(records.append):
        yield records
