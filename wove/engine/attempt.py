"""The policy of one task call, written once for sync and async calls: attempts and
retries, the timeout of each attempt (abandonment included, see :mod:`.timed`), the
annotations and the trace record of each attempt.

The two call functions differ only where they must (one awaits); every decision they
take is a function of this module that both call: :func:`again` (trace this attempt;
retry?), :func:`arm_timeout` and :func:`describe_error`.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
import time
from collections.abc import Callable, Mapping
from types import CoroutineType
from typing import TYPE_CHECKING, Any, Final

from ..errors import RemoteTaskError, TaskTimeout
from ..lanes import hooks, loops, pool, services, timer
from ..lanes.task_thread import TaskThread
from ..placement import REMOTE, THREAD, Lane
from ..task_spec import NO_OPTIONS, TaskSpec
from ..tracing import (
    NO_EXTRA,
    AttemptScope,
    Collector,
    RawCollector,
    RawRecord,
    WeaveScope,
    annotations_reset,
    annotations_set,
    build_record,
    describe_error,
    open_annotations,
)
from . import timed as timed_calls
from .timed import CANCEL_GRACE, TimedCall

if TYPE_CHECKING:
    from .run import Run

_current_thread = threading.current_thread
ABANDONED: Final = object()  # a call given up at its timeout (already reported)
_perf = time.perf_counter

Outcome = tuple[Any, BaseException | None, float]
"""(value, error, start time) of a call; value is :data:`ABANDONED` when it was."""


def add_note(error: BaseException, note: str) -> None:
    """Add ``note`` to ``error`` (once), unless its ``__notes__`` is not a list: then the
    exception is left exactly as it is."""
    notes = getattr(error, "__notes__", None)
    if notes is None:
        try:
            error.add_note(note)
        except Exception:  # a read-only exception type: leave it as it is
            pass
    elif type(notes) is list and note not in notes:
        notes.append(note)


class Recorder:
    """What observes one run: the trace record of each attempt, sent to the collectors,
    and the scopes of the instruments (``wove.lowlevel.add_instrument``).

    Raw collectors (``wove.tracing.collecting_raw``) get each attempt as a plain tuple;
    a :class:`TraceRecord` is built only when an ordinary collector is active."""

    __slots__ = (
        "_seen",
        "annotate",
        "collectors",
        "collects",
        "origin",
        "raw",
        "run_id",
        "scopes",
    )

    def __init__(
        self,
        collectors: tuple[Collector | RawCollector, ...],
        origin: str,
        run_id: int,
        scopes: tuple[WeaveScope, ...] = (),
    ) -> None:
        self.origin = origin
        self.run_id = run_id
        self.scopes = scopes
        plain: list[Collector] = []
        raw: list[Callable[[RawRecord], None]] = []
        annotate = bool(scopes)  # whether task calls get annotations (not for timings only)
        for collector in collectors:
            if type(collector) is RawCollector:
                raw.append(collector.append)
                annotate = annotate or collector.annotations
            else:
                plain.append(collector)  # type: ignore[arg-type]  # not a RawCollector
                annotate = True
        self.collectors: tuple[Collector, ...] = tuple(plain)
        self.raw: tuple[Callable[[RawRecord], None], ...] = tuple(raw)
        self.annotate = annotate
        # False: only instruments observe the run (the OpenTelemetry spans): no records.
        self.collects = bool(plain or raw)
        self._seen: set[str] = set()  # tasks with a record (set.add is atomic)

    def begin(
        self, name: str, index: int | None, lane: Lane, attempt: int
    ) -> tuple[AttemptScope, ...]:
        """Open each instrument's scope of an attempt; call in the attempt's context."""
        opened = []
        for scope in self.scopes:
            try:
                attempt_scope = scope.attempt_started(name, index, lane, attempt)
            except Exception:  # a broken instrument must not break the weave
                services.logger.exception("wove: instrument scope %r failed", scope)
                continue
            if attempt_scope is not None:
                opened.append(attempt_scope)
        return tuple(opened)

    def end(
        self,
        opened: tuple[AttemptScope, ...],
        error: BaseException | None,
        extra: Mapping[str, object] | None,
    ) -> None:
        """Close what :meth:`begin` opened; call in the same context."""
        for attempt_scope in opened:
            try:
                attempt_scope.finished(error, extra or NO_EXTRA)
            except Exception:
                services.logger.exception("wove: instrument scope %r failed", attempt_scope)

    def finish(self, error: BaseException | None) -> None:
        """The run is over: close each instrument's scope of it."""
        for scope in self.scopes:
            try:
                scope.finished(error)
            except Exception:
                services.logger.exception("wove: instrument scope %r failed", scope)

    def record_unstarted(
        self, specs: Mapping[str, TaskSpec], lanes: Mapping[str, Lane], failure: BaseException
    ) -> None:
        """A record with status "cancelled", zero length, attempt 0 and no thread, for
        each task that never started because the run failed first."""
        if not self.collects:
            return
        reason = asyncio.CancelledError(
            f"not started: the weave failed ({describe_error(failure)})"
        )
        for name in specs:
            if name not in self._seen:
                now = _perf()
                self._seen.add(name)
                raw: RawRecord = (
                    self.origin, self.run_id, name, None, lanes[name], "", now, now, 0,
                    reason, None, False,
                )  # fmt: skip
                self._emit(raw)

    def record(
        self,
        name: str,
        index: int | None,
        lane: Lane,
        start: float,
        attempt: int,
        error: BaseException | None,
        extra: dict[str, object] | None = None,
        *,
        timed_out: bool = False,
    ) -> None:
        """``timed_out``: the attempt ran past its own timeout (status "timeout"; a
        TaskTimeout raised inside it, by a nested weave, is an "error" of this task)."""
        # Once per traced attempt: the raw tuple only, inline; a TraceRecord is built
        # only for ordinary collectors (build_record).
        if not self.collects:
            return
        self._seen.add(name)
        raw: RawRecord = (
            self.origin,
            self.run_id,
            name,
            index,
            lane,
            _current_thread().name,
            start,
            _perf(),
            attempt,
            error,
            extra or None,
            timed_out,
        )
        self._emit(raw)

    def _emit(self, raw: RawRecord) -> None:
        for append in self.raw:
            try:
                append(raw)
            except Exception:  # a broken collector must not break the weave
                services.logger.exception("wove: trace collector %r failed", append)
        if not self.collectors:
            return
        record = build_record(raw)
        for collector in self.collectors:
            try:
                collector(record)
            except Exception:  # a broken collector must not break the weave
                services.logger.exception("wove: trace collector %r failed", collector)


def again(
    run: Run,
    spec: TaskSpec,
    index: int | None,
    began: float,
    attempt: int,
    error: BaseException | None,
    extra: dict[str, object] | None,
    timed_out: bool = False,
) -> bool:
    """Trace this attempt; True to try again. Exceptions are retried while retries are
    left and the run has not failed, but not the attempt's own timeout (``timed_out``),
    KeyboardInterrupt or SystemExit, nor a remote call that may have run (see
    :func:`may_have_run`) unless the task is ``idempotent=True``. (A TaskTimeout
    from a weave nested in the task is an ordinary exception of this task, and is
    retried.)"""
    if run.recorder is not None:
        lane = run.lanes[spec.name]
        run.recorder.record(
            spec.name, index, lane, began, attempt, error, extra, timed_out=timed_out
        )
    return (
        isinstance(error, Exception)
        and not timed_out
        and attempt < spec.retries
        and not run.failed
        and not (run.lanes[spec.name] == REMOTE and may_have_run(error) and not spec.idempotent)
    )


def may_have_run(error: BaseException) -> bool:
    """Whether a remote call that failed with ``error`` may have run its function:
    resending it could then run non-idempotent work twice. Only a call known never to
    have started (:class:`~wove.RemoteNeverRan`) is safe to resend; the function's own
    exception says it ran, and a lost worker or result that it may have."""
    return not (isinstance(error, RemoteTaskError) and not error.may_have_started)


def arm_timeout(run: Run, spec: TaskSpec, index: int | None, *, sync: bool) -> TimedCall:
    """Arm the deadline of one attempt: at the timeout for a sync call (abandoned then),
    at the timeout plus :data:`CANCEL_GRACE` for an async one (``asyncio.timeout``
    cancels it at the timeout; the deadline abandons it only if it will not stop)."""
    timeout = spec.timeout
    assert timeout is not None
    timed = TimedCall(run.lock)
    name = spec.name
    # The asyncio task an async attempt runs in: once abandoned, it no longer counts,
    # and the run's straggler check must not count it again.
    task = None if sync else asyncio.current_task()

    def expire() -> None:
        if not timed.abandon(on_thread=sync):
            return
        if task is not None:
            run.forget_task(task)
        error = TaskTimeout(name, timeout, index, run.merged)
        if sync:
            position = services.where_is(timed.thread_id)
            error.add_note(
                "wove: the sync call was abandoned at its timeout; its thread keeps running"
                f"{f' at {position}' if position else ''} until the call returns"
            )
        else:
            error.add_note(
                f"wove: the task did not stop within {CANCEL_GRACE:g} s of being cancelled "
                "at its timeout (it swallows CancelledError); the weave stopped waiting for "
                "it, and it keeps running on its event loop"
            )
        services.logger.warning("wove: %s; abandoning it", describe_error(error))
        if run.recorder is not None:
            lane = run.lanes[name]
            run.recorder.record(name, index, lane, _perf() - timeout, 0, error, timed_out=True)
        run.fail(name, index, error, ended_call=True)

    delay = timeout if sync else timeout + CANCEL_GRACE
    timed.deadline = timer.deadlines().arm(time.monotonic() + delay, expire)
    return timed


def call_sync(
    run: Run, spec: TaskSpec, index: int | None, kwargs: dict[str, Any], lane: Lane
) -> Outcome:
    """Call a sync task (or item) with its retries and timeouts, on this thread."""
    function, timeout = spec.function, spec.timeout
    wrappers = run.wrappers_for(lane)
    base = run.thread_context if lane == THREAD else run.context
    if spec.options is NO_OPTIONS:
        recorder = run.recorder
        if recorder is None:
            return _call_once(function, kwargs, wrappers, base)  # the common case, kept lean
        # Observed, but with no retry or timeout: one attempt, none of the loop's bookkeeping.
        return _call_once_observed(run, recorder, spec, index, kwargs, lane, wrappers, base)
    attempt, start = 0, _perf()
    while True:
        began = _perf()
        timed = arm_timeout(run, spec, index, sync=True) if timeout is not None else None
        context = base.copy()
        recorder = run.recorder
        extra = opened = None
        if recorder is not None:
            if recorder.annotate:
                extra = open_annotations(context)
            if recorder.scopes:
                opened = context.run(recorder.begin, spec.name, index, lane, attempt)
        previous = timed_calls.running(timed) if timed is not None else None
        error: BaseException | None = None
        try:
            if wrappers:
                value = context.run(hooks.wrapped_call, wrappers, function, kwargs)
            else:
                value = context.run(function, **kwargs)
            if type(value) is CoroutineType:
                value = _run_to_completion(value, context)
        except BaseException as exc:
            value, error = None, exc
        if timed is not None:
            timed_calls.running(previous)
            if timed.settle():  # the timeout already failed the task
                if opened and recorder is not None and timeout is not None:
                    timed_out = TaskTimeout(spec.name, timeout, index, run.merged)
                    context.run(recorder.end, opened, timed_out, extra)
                return ABANDONED, None, start
        if opened and recorder is not None:
            context.run(recorder.end, opened, error, extra)
        if not again(run, spec, index, began, attempt, error, extra):
            return value, error, start
        attempt += 1


async def call_async(
    run: Run, spec: TaskSpec, index: int | None, kwargs: dict[str, Any]
) -> Outcome:
    """Call an async task (or item) with its retries and timeouts, in this task.

    ``CancelledError`` from outside (the weave failed) propagates; any other exception,
    ``KeyboardInterrupt`` and ``SystemExit`` included, is the call's outcome, so it never
    reaches the event loop."""
    function, timeout = spec.function, spec.timeout
    if run.async_wrappers:
        function = functools.partial(wrapped_async, run, function)
    attempt, start = 0, _perf()
    while True:
        began = _perf()
        extra: dict[str, object] | None = None
        recorder, opened = run.recorder, None
        if recorder is not None:  # this worker's context: the annotations of this call
            if recorder.annotate:
                extra = {}
                token = annotations_set(extra)
            if recorder.scopes:
                opened = recorder.begin(spec.name, index, run.lanes[spec.name], attempt)
        timed = arm_timeout(run, spec, index, sync=False) if timeout is not None else None
        error: BaseException | None = None
        value = None
        timed_out = False
        try:
            if timeout is None:
                value = await function(**kwargs)
            else:
                async with asyncio.timeout(timeout) as scope:
                    value = await function(**kwargs)
                if scope.expired():  # it caught the cancellation and returned
                    timed_out = True
                    value, error = None, TaskTimeout(spec.name, timeout, index, run.merged)
                    error.add_note(
                        "wove: the task caught the cancellation at its timeout and returned "
                        "a value; the value was dropped"
                    )
        except asyncio.CancelledError as cancelled:
            if opened and recorder is not None:
                recorder.end(opened, cancelled, extra)
            if timed is not None and timed.settle():
                return ABANDONED, None, start
            raise
        except BaseException as exc:
            error = exc
            if timeout is not None and isinstance(exc, TimeoutError) and scope.expired():
                timed_out = True
                error = TaskTimeout(spec.name, timeout, index, run.merged)
                error.__cause__ = exc
        finally:
            if extra is not None:
                annotations_reset(token)
        if opened and recorder is not None:
            recorder.end(opened, error, extra)
        if timed is not None and timed.settle():
            return ABANDONED, None, start
        if not again(run, spec, index, began, attempt, error, extra, timed_out):
            return value, error, start
        attempt += 1


async def wrapped_async(run: Run, function: Callable[..., Any], /, **kwargs: Any) -> Any:
    """An async call inside the async-call wrappers, with the thread of its
    thread-sensitive work (``run.task_thread()``) given back when it ends: awaited, so
    its cleanup (a database connection closed) is done when the call is."""
    thread = run.task_thread()
    call = functools.partial(function, **kwargs)
    try:
        value = await hooks.wrapped_async_call(run.async_wrappers, call, thread)
    except asyncio.CancelledError:
        if thread is not None:
            thread.close()  # (not awaited: a cancelled call does not wait for its thread)
        raise
    except BaseException:
        await _given_back(thread)
        raise
    await _given_back(thread)
    return value


async def _given_back(thread: TaskThread | None) -> None:
    ended = thread.close() if thread is not None else None
    if ended is not None:
        await asyncio.wrap_future(ended)


def _call_once(
    function: Callable[..., Any],
    kwargs: dict[str, Any],
    wrappers: tuple[hooks.ThreadCallWrapper, ...],
    base: contextvars.Context,
) -> Outcome:
    """One attempt with no option and no observer: no timeout, retry, trace or scope."""
    start = _perf()
    context = base.copy()
    try:
        if wrappers:
            value = context.run(hooks.wrapped_call, wrappers, function, kwargs)
        else:
            value = context.run(function, **kwargs)
        if type(value) is CoroutineType:
            value = _run_to_completion(value, context)
    except BaseException as error:
        return None, error, start
    return value, None, start


def _call_once_observed(
    run: Run,
    recorder: Recorder,
    spec: TaskSpec,
    index: int | None,
    kwargs: dict[str, Any],
    lane: Lane,
    wrappers: tuple[hooks.ThreadCallWrapper, ...],
    base: contextvars.Context,
) -> Outcome:
    """:func:`_call_once` plus the annotations, the instruments' scopes and the record:
    what a recorded request or an instrumented run pays per sync task with no option."""
    start = _perf()
    context = base.copy()
    extra = open_annotations(context) if recorder.annotate else None
    name = spec.name
    opened = context.run(recorder.begin, name, index, lane, 0) if recorder.scopes else None
    error: BaseException | None = None
    try:
        if wrappers:
            value = context.run(hooks.wrapped_call, wrappers, spec.function, kwargs)
        else:
            value = context.run(spec.function, **kwargs)
        if type(value) is CoroutineType:
            value = _run_to_completion(value, context)
    except BaseException as exc:
        value, error = None, exc
    if opened:
        context.run(recorder.end, opened, error, extra)
    recorder.record(name, index, run.lanes[name], start, 0, error, extra)
    return value, error, start


def _run_to_completion(coroutine: CoroutineType[Any, Any, Any], context: Any) -> Any:
    """A sync callable returned a coroutine (a ``functools.wraps`` or ``lru_cache``
    wrapper around an ``async def``, a lambda calling one): it is awaited, on one of
    Wove's loop threads, while this thread waits, as the published wove does. It must
    not be run here: this thread may already run a loop (a plain ``with`` in async
    code), and a coroutine left unawaited would only warn."""

    async def awaited() -> Any:
        return await coroutine

    # This thread only waits: a pool thread lends its place meanwhile, as for a nested
    # weave (the coroutine may merge sync calls, which need a thread).
    with pool.thread_pool().blocking():
        return context.run(loops.run_coroutine, awaited()).result()
