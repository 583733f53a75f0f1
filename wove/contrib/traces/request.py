"""One HTTP request's weave records, gathered while it runs and frozen when it ends.

Both framework adapters wrap a request in :meth:`RequestRecorder.recording`; everything
framework-specific (when the response status is known, what to do with the trace) stays
in the adapter. The collector is a contextvar, so a plain ``with`` in the thread or task
that handles the request covers the weaves it runs, including their worker threads and
any asyncio task it creates; weaves started elsewhere are not this request's.
"""

from __future__ import annotations

import itertools
import operator
import random
import secrets
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, NamedTuple, overload

from wove import TraceRecord, WeaveStateError
from wove.lowlevel import RawRecord, build_record, collecting_raw

if TYPE_CHECKING:
    from .store import TraceStore


#: The ``method`` of a trace of work detached from a request (it has no response).
DETACHED = "DETACH"


class Deferred(NamedTuple):
    """The attempts of a trace whose :class:`~wove.TraceRecord` objects are not made yet:
    those already made (from ``wove.collecting``) and the raw tuples
    (``wove.lowlevel.collecting_raw``)."""

    records: tuple[TraceRecord, ...]
    raw: tuple[RawRecord, ...]

    def build(self) -> tuple[TraceRecord, ...]:
        records = list(self.records)
        records += map(build_record, self.raw)
        if len(records) > 1:
            records.sort(key=_start)  # stable: ties keep arrival order
        return tuple(records)


class _Records:
    """:attr:`RequestTrace.records`, made on first read.

    Most kept traces are never read (a busy app's store turns over before anyone opens
    a page, and ``Server-Timing`` reads the raw tuples), so the request only keeps its
    raw tuples and the records are made here. A dataclass field may be a descriptor:
    ``RequestTrace(...)`` and ``dataclasses.replace`` still take a tuple, and reading
    always gives one. Two threads reading at once both build the same tuple; either
    one is kept.
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self._key = f"_{name}"

    @overload
    def __get__(self, trace: None, owner: type) -> _Records: ...
    @overload
    def __get__(self, trace: RequestTrace, owner: type) -> tuple[TraceRecord, ...]: ...
    def __get__(
        self, trace: RequestTrace | None, owner: type
    ) -> tuple[TraceRecord, ...] | _Records:
        if trace is None:
            # AttributeError on the class: the dataclass sees a field with no default.
            raise AttributeError(self._key[1:])
        value = trace.__dict__[self._key]
        if type(value) is Deferred:
            value = trace.__dict__[self._key] = value.build()
        return value  # type: ignore[no-any-return]

    def __set__(self, trace: RequestTrace, value: tuple[TraceRecord, ...] | Deferred) -> None:
        trace.__dict__[self._key] = value


def deferred(trace: RequestTrace) -> Deferred | None:
    """The raw attempts of ``trace`` while its records are not made yet, else None."""
    value = trace.__dict__.get("_records")
    return value if type(value) is Deferred else None


@dataclass(frozen=True)
class RequestTrace:
    """A finished request and the task attempts its weaves ran, oldest first.

    ``start`` is on the ``time.perf_counter`` clock the records use, so offsets are exact;
    ``started_at`` is wall-clock time, only for showing when the request happened.
    ``records`` may be given a :class:`Deferred` (what the recorder does): the records
    are then made when first read.
    """

    id: str
    method: str
    path: str
    status: int | None  # None: no response was produced (the handler raised)
    started_at: float
    start: float
    duration: float
    if TYPE_CHECKING:  # what reading it gives; the descriptor also takes a Deferred
        records: tuple[TraceRecord, ...]
    else:
        records: tuple[TraceRecord, ...] = _Records()
    error: str | None

    def offset(self, record: TraceRecord) -> float:
        """Seconds from the start of the request to the start of ``record``."""
        return record.start - self.start

    def end_offset(self, record: TraceRecord) -> float:
        return record.end - self.start

    @property
    def span(self) -> float:
        """The time axis a waterfall needs: the request, stretched if a record outlasts it
        (which only a clock oddity or a snapshot taken mid-task can cause)."""
        latest = max((self.end_offset(r) for r in self.records), default=0.0)
        return max(self.duration, latest)

    @property
    def weave_time(self) -> float:
        """Seconds during which at least one weave was running.

        A union of each weave run's span rather than a plain sum, so a weave nested in
        another weave's task, or two weaves run concurrently, are not counted twice;
        for weaves run one after another it is their sum.
        """
        records = self.records
        if not records:
            return 0.0
        only = records[0].weave_id
        if all(r.weave_id == only for r in records):  # the common case: one weave run
            return max(r.end for r in records) - min(r.start for r in records)
        spans: dict[int, tuple[float, float]] = {}
        for r in records:
            first, last = spans.get(r.weave_id, (r.start, r.end))
            spans[r.weave_id] = (min(first, r.start), max(last, r.end))
        total, reached = 0.0, float("-inf")
        for first, last in sorted(spans.values()):
            if last > reached:
                total += last - max(first, reached)
                reached = last
        return total

    def task_runs(self) -> list[tuple[TraceRecord, ...]]:
        """The records of each task of each weave run (a mapped task's items and every
        attempt together), in order of first start: what one waterfall row or one
        Server-Timing entry shows."""
        runs: dict[tuple[int, str], list[TraceRecord]] = {}
        for record in self.records:
            runs.setdefault((record.weave_id, record.task), []).append(record)
        return [tuple(run) for run in runs.values()]

    @property
    def task_count(self) -> int:
        """Tasks run, counting a mapped task once and a task once per weave run."""
        return len({(r.weave_id, r.task) for r in self.records})

    @property
    def failed(self) -> tuple[TraceRecord, ...]:
        return tuple(r for r in self.records if r.status != "ok")


class ActiveRequest:
    """The request being recorded; handed out by :meth:`RequestRecorder.recording`.

    Records arriving after :meth:`finish` (a background weave, a task that outlived a
    cancelled request) are dropped: the trace is frozen and may already be on display.

    Sampling: every request collects its attempts cheaply (:meth:`collect_raw`, a tuple
    each); their :class:`~wove.TraceRecord` objects and the :class:`RequestTrace` are
    made only for a request that is kept: ``sampled``, or one that failed (a 5xx
    status, an exception, or a task attempt that did not succeed), or one that ran
    ``slow`` seconds or longer.
    """

    def __init__(
        self,
        method: str,
        path: str,
        store: TraceStore | None,
        keep_empty: bool,
        *,
        sampled: bool = True,
        slow: float | None = None,
    ) -> None:
        self.id = f"{_ID_PREFIX}{next(_ids):06x}"
        self.method = method
        self.path = path
        self.started_at = time.time()
        self.start = time.perf_counter()
        self.sampled = sampled
        self._slow = slow
        self._store = store
        self._keep_empty = keep_empty
        self._records: list[TraceRecord] | None = []  # None once finished
        raw: list[RawRecord] = []
        self._raw: list[RawRecord] | None = raw  # None once finished
        #: The collector the adapters use (``wove.lowlevel.collecting_raw``): this
        #: request's list's own ``append``, the cheapest call there is. An attempt that
        #: ends after :meth:`finish` lands in the list the finish swapped out, which
        #: nobody reads: it is dropped, as in :meth:`collect`.
        self.collect_raw: Callable[[RawRecord], None] = raw.append
        self._lock = threading.Lock()
        self._done = False
        self._trace: RequestTrace | None = None

    def collect(self, record: TraceRecord) -> None:
        """A collector of :class:`~wove.TraceRecord` objects (``wove.collecting``), called
        by weaves, possibly from worker threads, once per attempt.

        No lock: ``list.append`` is atomic, and :meth:`finish` swaps the list out before
        reading it, so a record that races with it lands in the old list and is dropped,
        as any record arriving after the finish is.
        """
        records = self._records
        if records is not None:
            records.append(record)

    @property
    def finished(self) -> bool:
        return self._done

    @property
    def trace(self) -> RequestTrace | None:
        """The finished trace (also what :meth:`finish` returned), None until then, and
        None for a request that was not kept (see :meth:`keeps`)."""
        return self._trace

    def keeps(self, status: int | None = None, error: str | None = None) -> bool:
        """Whether the trace will be kept if the request ends now with ``status``."""
        if self.sampled or error is not None or (status is not None and status >= 500):
            return True
        slow = self._slow
        if slow is not None and time.perf_counter() - self.start >= slow:
            return True
        for raw in self._raw or ():
            if raw[9] is not None:  # the attempt's error
                return True
        return any(r.status != "ok" for r in self._records or ())

    def snapshot(self, status: int | None = None) -> RequestTrace:
        """The trace so far, without finishing or storing it.

        For an ASGI adapter that must send ``Server-Timing`` with the response headers,
        before a streamed body (which may still run weaves) is over.
        """
        return self._build(status, None, tuple(self._records or ()), tuple(self._raw or ()))

    def finish(self, status: int | None, error: str | None = None) -> RequestTrace | None:
        """Freeze the trace, store it (unless it ran no weave, did not fail, and empties
        are not kept) and return it; None, with nothing built or stored, for a request
        not kept (not sampled, and neither failed nor slow). A second call is a bug in
        the adapter and raises."""
        with self._lock:
            if self._done:
                raise WeaveStateError(
                    f"request trace {self.id} ({self.method} {self.path}) is already "
                    "finished; call finish() once, or let the recording block finish it"
                )
            keep = self.keeps(status, error)
            self._done = True
            records, self._records = tuple(self._records or ()), None
            raw, self._raw = tuple(self._raw or ()), None
            if not keep:
                return None
            trace = self._trace = self._build(status, error, records, raw)
        # A request kept though not sampled (it failed, or was slow) is kept even with no
        # task rows: it may have collected none (``unsampled_timings=False``).
        if self._store is not None and (
            records or raw or error or self._keep_empty or not self.sampled
        ):
            self._store.add(trace)
        return trace

    def _build(
        self,
        status: int | None,
        error: str | None,
        records: tuple[TraceRecord, ...],
        raw: tuple[RawRecord, ...],
    ) -> RequestTrace:
        attempts: tuple[TraceRecord, ...] | Deferred = Deferred(records, raw)
        for attempt in raw:
            if attempt[9] is not None:
                # Made now: a raw tuple holds the exception, its traceback and frames.
                attempts = Deferred(records, raw).build()
                break
        return RequestTrace(
            id=self.id,
            method=self.method,
            path=self.path,
            status=status,
            started_at=self.started_at,
            start=self.start,
            duration=time.perf_counter() - self.start,
            records=attempts,  # type: ignore[arg-type]  # made when first read
            error=error,
        )


class RequestRecorder:
    """Shared by every request of an app: makes one :class:`ActiveRequest` per request.

    ``keep_empty``: also store requests that ran no weave. Off by default so that static
    files, health checks and the trace page itself do not push real traces out of a
    bounded store.

    ``sample_rate`` (0.0 to 1.0): the share of requests recorded in full, drawn with
    ``sampler`` (a function returning a float in [0, 1), ``random.random`` by default;
    tests pass their own). A request not drawn is still kept if it fails or runs
    ``slow_ms`` milliseconds or longer (None: never for being slow). While it runs, a
    request not drawn collects its tasks' timings and errors only (no annotations, so
    no SQL), as raw tuples, so that a failed or slow one keeps its task rows; with
    ``unsampled_timings=False`` it collects nothing at all (its weaves run as with
    recording off), and a failed or slow one is kept without task rows.
    """

    def __init__(
        self,
        store: TraceStore | None = None,
        *,
        keep_empty: bool = False,
        sample_rate: float = 1.0,
        slow_ms: float | None = None,
        sampler: Callable[[], float] = random.random,
        unsampled_timings: bool = True,
    ) -> None:
        self.store = store
        self.keep_empty = keep_empty
        self.unsampled_timings = unsampled_timings
        self._sampler = sampler
        self.configure_sampling(sample_rate, slow_ms)

    def configure_sampling(self, sample_rate: float, slow_ms: float | None) -> None:
        """Change the sampling of the requests that begin from now on."""
        self.sample_rate = sample_rate
        self.slow_ms = slow_ms
        self._slow = None if slow_ms is None else slow_ms / 1000

    def begin(self, method: str, path: str, *, sample: bool = True) -> ActiveRequest:
        """A request (or a piece of work) to record by hand: run its weaves inside
        ``wove.lowlevel.collecting_raw(active.collect_raw)`` (or
        ``wove.collecting(active.collect)``) and call ``active.finish(...)`` when it is
        over. For work whose end is not the end of a block (a background weave's
        ``on_done``). ``sample=False``: record it in full whatever the sample rate (the
        work detached from a request)."""
        rate = self.sample_rate
        sampled = not sample or rate >= 1.0 or (rate > 0.0 and self._sampler() < rate)
        return ActiveRequest(
            method, path, self.store, self.keep_empty, sampled=sampled, slow=self._slow
        )

    def collecting(self, active: ActiveRequest) -> AbstractContextManager[None]:
        """What collects ``active``'s attempts in the block it covers: everything when it
        was sampled, timings only or nothing when not (``unsampled_timings``)."""
        if active.sampled:
            return collecting_raw(active.collect_raw)
        if self.unsampled_timings:
            return collecting_raw(active.collect_raw, annotations=False)
        return nullcontext()

    def recording(self, method: str, path: str) -> AbstractContextManager[ActiveRequest]:
        """Record the weaves run in this block; finish the trace at exit unless the adapter
        already did (status None then, and the exception's text if one escapes)."""
        active = self.begin(method, path)
        return _Recording(active, self.collecting(active))


class _Recording:
    """:meth:`RequestRecorder.recording`: a class, as one is entered per request."""

    __slots__ = ("_collecting", "active")

    def __init__(self, active: ActiveRequest, collecting: AbstractContextManager[None]) -> None:
        self.active = active
        self._collecting = collecting

    def __enter__(self) -> ActiveRequest:
        self._collecting.__enter__()
        return self.active

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            active = self.active
            if not active.finished:  # cancellation too: the trace says why it ended
                active.finish(None, error=None if exc is None else describe(exc))
        finally:
            self._collecting.__exit__(kind, exc, traceback)


def describe(exc: BaseException) -> str:
    """``"TypeName: message"``, the shape TraceRecord.error uses."""
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


_start = operator.attrgetter("start")
# Trace ids: unique in this process and not guessable across processes; a counter, as
# one is made per request.
_ID_PREFIX = secrets.token_hex(3)
_ids = itertools.count(1)
