"""Graph -> a :class:`Run`: dataflow execution of one weave.

Each task starts the moment its own inputs are done, never in tiers. Sync tasks run in
worker jobs on the thread lane, async tasks in worker coroutines on the event loop. When
a task finishes, the worker that finished it runs one newly ready task of its own kind
itself, as a continuation, and hands the others to their lanes: a chain of sync tasks
runs on one pool thread, a chain of async tasks in one asyncio task, with no hop between
links.

A mapped task is run by ``k`` workers (``k`` = its ``workers=`` or its item count) that
claim item indexes from a shared counter until none are left.

The first failure (in time) is kept; no task starts after it, async work is cancelled,
and the run ends once every call still running on a thread has returned (or has been
abandoned at its timeout). Shared state is guarded by ``self._lock``, not by the GIL.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import itertools
import threading
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final, Literal

from . import lanes
from .errors import TaskTimeout
from .graph import DATA, Graph, check_iterable
from .lanes import Job
from .result import WoveResult
from .task_spec import NO_OPTIONS, TaskSpec
from .tracing import (
    NO_EXTRA,
    Collector,
    Status,
    TraceRecord,
    annotations_reset,
    annotations_set,
    open_annotations,
)


class _RunRef:
    """What task contexts hold: emptied when the run ends, so a context captured by
    anything (a timer handle, a library) does not keep the run and its values alive."""

    __slots__ = ("run",)

    def __init__(self, run: Run) -> None:
        self.run: Run | None = run


_current_run: contextvars.ContextVar[_RunRef | None] = contextvars.ContextVar(
    "wove_current_run", default=None
)
_ids = itertools.count(1)
_perf = time.perf_counter
_ABANDONED: Final = object()  # a sync call given up at its timeout (already reported)

# Where a task's calls run: the event loop, the shared thread pool, the caller's thread
# (thread-sensitive sync tasks: they share its database connection), or a remote
# environment (awaited on the event loop, like an async task).
Lane = Literal["loop", "thread", "caller", "remote"]
LOOP: Final = "loop"
REMOTE: Final = "remote"
THREAD: Final = "thread"
CALLER: Final = "caller"


def current_run() -> Run | None:
    """The run whose task is executing in this context, if any."""
    ref = _current_run.get()
    return None if ref is None else ref.run


class LoopBinding:
    """The event loop a run's async tasks run on, and the thread running it."""

    __slots__ = ("loop", "thread_id")

    def __init__(self, loop: asyncio.AbstractEventLoop, thread_id: int) -> None:
        self.loop = loop
        self.thread_id = thread_id

    def call(self, callback: Callable[[], None]) -> None:
        lanes.call_on_loop(self.loop, self.thread_id, callback)


class _Mapped:
    """A mapped task's items and their progress (guarded by the run's lock)."""

    __slots__ = (
        "broken",
        "claimed",
        "first_start",
        "item_param",
        "items",
        "kwargs",
        "last_end",
        "left",
        "name",
        "results",
        "spacing",
        "spec",
        "started_at",
    )

    def __init__(
        self, spec: TaskSpec, item_param: str, kwargs: dict[str, Any], items: list[Any]
    ) -> None:
        self.name = spec.name
        self.spec = spec
        self.item_param = item_param
        self.kwargs = kwargs
        self.items = items
        self.results: list[Any] = [None] * len(items)
        self.left = len(items)
        self.claimed = 0
        self.broken = False  # an item failed or was cancelled (fan-out path)
        self.first_start = float("inf")
        self.last_end = 0.0
        self.started_at = time.monotonic()
        limit = spec.limit_per_minute
        self.spacing = 60.0 / limit if limit else 0.0

    def worker_count(self) -> int:
        workers = self.spec.workers
        return min(workers, len(self.items)) if workers else len(self.items)


#: What a worker runs next: an unmapped task (its name) or a mapped task's items.
Work = str | _Mapped


class _TimedCall:
    """A sync attempt under a timeout: the deadline and the thread race to settle it."""

    __slots__ = ("abandoned", "blocking", "deadline", "lent", "live", "thread_id")

    def __init__(self) -> None:
        self.live = True
        self.abandoned = False
        self.thread_id = threading.get_ident()
        self.deadline: lanes.Deadline | None = None
        self.lent = False
        self.blocking: lanes.LoopThread | lanes.SerialThread | lanes.ForeignThread | None = None


class Run:
    def __init__(
        self,
        graph: Graph,
        data: Mapping[str, Any],
        *,
        submit: Callable[[Job], None],
        loop: LoopBinding | None,
        on_finish: Callable[[], None],
        origin: str,
        stuck_after: float | None = None,
        sensitive: frozenset[str] = frozenset(),
        submit_sensitive: Callable[[Job], None] | None = None,
    ) -> None:
        self.origin = origin
        self.id = next(_ids)
        self.submit = submit
        self.loop = loop
        self.failed_at: tuple[str, int | None] | None = None
        self._specs = graph.specs
        self._nodes = graph.shape.nodes
        self._roots = graph.shape.roots
        # Each task's lane, decided once: sync tasks in `sensitive` run on the caller's
        # thread, the other sync tasks on the pool, async tasks on the loop (routed
        # remote tasks are async tasks with an env: awaited there, traced as remote).
        self._lanes: dict[str, Lane] = {
            name: (REMOTE if spec.env else LOOP)
            if spec.is_async
            else CALLER
            if name in sensitive
            else THREAD
            for name, spec in graph.specs.items()
        }
        self._submit_sensitive = submit_sensitive or submit
        self._wrappers = lanes.thread_call_wrappers()
        self._caller_wrappers = lanes.caller_thread_wrappers()
        self._on_finish = on_finish
        self._lock = threading.Lock()
        self._values: dict[str, Any] = {**data, DATA: dict(data)}
        self._errors: dict[str, BaseException] = {}
        self._timings: dict[str, float] = {}
        self._waiting = dict(graph.shape.waiting)
        self._unfinished = len(graph.specs)
        self._running = 0  # calls in progress (on threads or the loop)
        # Every asyncio task the run started (kept, not pruned: cancelling a done task is a
        # no-op, and appending is cheaper than tracking completion).
        self._async_workers: list[asyncio.Task[Any]] = []
        self._failure: BaseException | None = None
        self._finished = False
        self._collectors: tuple[Collector, ...] = ()
        self._stuck_after = stuck_after
        self._started: dict[str, float] = {}  # for stuck reports (debug only)
        self._context = contextvars.copy_context()
        self._ref = _RunRef(self)
        self._context.run(_current_run.set, self._ref)

    # --- lifecycle -------------------------------------------------------------------

    def start(self, collectors: tuple[Collector, ...] = ()) -> None:
        """Start the root tasks. Called on the caller's thread (the loop's, if async)."""
        self._collectors = collectors
        if self._stuck_after is not None:
            self._arm_stuck_report(self._stuck_after)
        if not self._specs:
            self._finish_if_done()
            return
        self._dispatch(list(self._roots), None)

    def submit_counted(self, job: Job) -> None:
        """Run a job on the run's thread lane, counted as a running call: the weave does
        not end while it runs (``merge`` sends a task's sync calls here)."""
        with self._lock:
            self._running += 1

        def counted() -> None:
            try:
                job()
            finally:
                self._call_ended()

        self.submit(counted)

    def thread_call(self, function: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        """Call a sync function on a pool thread of this run, inside the registered
        thread-call wrappers (``merge`` uses it for its sync calls)."""
        if not self._wrappers:
            return function(*args)
        return _wrapped(self._wrappers, function, dict(enumerate(args)), positional=True)

    def cancel(self, reason: BaseException) -> None:
        """Stop the run from outside (its caller was cancelled or interrupted)."""
        self._fail(None, None, reason, ended_call=False)

    @property
    def finished(self) -> bool:
        return self._finished

    def result(self) -> WoveResult:
        with self._lock:
            return WoveResult(
                order=tuple(self._specs),
                values=dict(self._values),
                errors=dict(self._errors),
                timings=dict(self._timings),
                exception=self._failure,
            )

    # --- dispatch --------------------------------------------------------------------

    def _dispatch(self, ready: list[str], continue_as: Lane | None) -> Work | None:
        """Start ready tasks; return one of lane ``continue_as`` for the calling worker to
        run itself."""
        continuation: Work | None = None
        for name in ready:  # may grow: a task mapped over nothing completes at once
            spec, lane = self._specs[name], self._lanes[name]
            work: Work
            if spec.map_source is None:
                work, count = name, 1
            else:
                mapped = self._begin_mapped(spec)
                if mapped is None:
                    continue
                if not mapped.items:
                    ready.extend(self._complete(name, [], 0.0))
                    continue
                # The caller's thread is one thread: its items run one after another.
                work, count = mapped, 1 if lane == CALLER else mapped.worker_count()
                if lane == LOOP and self._plain(spec):
                    self._launch_fan_out(mapped)
                    continue
            if continuation is None and lane == continue_as:
                continuation, count = work, count - 1
            for _ in range(count):
                self._launch(work, lane)
        return continuation

    def _plain(self, spec: TaskSpec) -> bool:
        """No retries, timeout, worker bound, rate limit or tracing: the lean paths."""
        return not self._collectors and (spec.options is NO_OPTIONS or spec.options == NO_OPTIONS)

    def _begin_mapped(self, spec: TaskSpec) -> _Mapped | None:
        node, source = self._nodes[spec.name], spec.map_source
        assert source is not None
        assert node.item_param is not None
        value = self._values[source.name] if source.name is not None else source.iterable
        try:
            check_iterable(spec.name, source.name, value)
            items = list(value)  # type: ignore[arg-type]
        except BaseException as error:
            self._fail(spec.name, None, error, ended_call=False)
            return None
        kwargs = self._inputs(node.inputs)
        return _Mapped(spec, node.item_param, kwargs, items)

    def _launch(self, work: Work, lane: Lane) -> None:
        if lane == THREAD:
            self.submit(lambda: self._sync_worker(work, THREAD))
            return
        if lane == CALLER:
            self._submit_sensitive(lambda: self._sync_worker(work, CALLER))
            return
        loop = self.loop
        assert loop is not None, "an async task needs a loop"
        loop.call(lambda: self._spawn(loop.loop, work))

    def _spawn(self, loop: asyncio.AbstractEventLoop, work: Work) -> None:
        worker = loop.create_task(self._async_worker(work), context=self._context.copy())
        self._keep_tasks([worker])

    def _keep_tasks(self, tasks: list[asyncio.Task[Any]]) -> None:
        with self._lock:
            self._async_workers.extend(tasks)
            failed = self._failure is not None
        if failed:
            for task in tasks:
                task.cancel()

    # A plain mapped async task has the shape of asyncio.gather: one asyncio task per
    # item, straight on the item's coroutine, settled by a done callback.

    def _launch_fan_out(self, mapped: _Mapped) -> None:
        loop = self.loop
        assert loop is not None, "an async task needs a loop"
        loop.call(lambda: self._fan_out(loop.loop, mapped))

    def _fan_out(self, loop: asyncio.AbstractEventLoop, mapped: _Mapped) -> None:
        function, kwargs, item_param = mapped.spec.function, mapped.kwargs, mapped.item_param
        context, tasks = self._context, list[asyncio.Task[Any]]()
        mapped.claimed = len(mapped.items)
        mapped.first_start = _perf()
        # Settled by one callback on the loop thread, which alone touches `mapped.left`
        # here: the items count down without the lock, and the values are read from the
        # tasks once all are done, as gather does.
        settle = functools.partial(self._item_settled, mapped, tasks)
        for item in mapped.items:
            try:
                awaitable = function(**kwargs, **{item_param: item})
            except Exception as error:  # raised before awaiting (e.g. a wrong argument)
                awaitable = _raise(error)
            if not asyncio.iscoroutine(awaitable):
                awaitable = _await(awaitable)
            task = loop.create_task(awaitable, context=context.copy())
            task.add_done_callback(settle)
            tasks.append(task)
        with self._lock:  # none of them has run yet: this callback holds the loop
            self._running += len(tasks)
        self._keep_tasks(tasks)

    def _item_settled(
        self, mapped: _Mapped, tasks: list[asyncio.Task[Any]], task: asyncio.Task[Any]
    ) -> None:
        if task.cancelled():
            if self._failure is None:  # cancelled from outside the weave
                self._fail(
                    mapped.name, tasks.index(task), asyncio.CancelledError(), ended_call=False
                )
            mapped.broken = True
        elif (error := task.exception()) is not None:
            self._fail(mapped.name, tasks.index(task), error, ended_call=False)
            mapped.broken = True
        mapped.left -= 1
        if mapped.left:
            return
        end = _perf()
        ready: list[str] = []
        with self._lock:
            if not mapped.broken:
                values = [done.result() for done in tasks]
                ready = self._complete_locked(mapped.name, values, end - mapped.first_start)
            # One call stays counted while the ready tasks are dispatched.
            self._running -= len(tasks) - 1 if ready else len(tasks)
            finished = self._finishing_locked()
        if finished:
            self._on_finish()
        if ready:
            self._dispatch_ready(ready, None)

    def _inputs(self, names: tuple[str, ...]) -> dict[str, Any]:
        # No lock: a value is written under the lock before its dependents become ready,
        # and never changes after.
        values = self._values
        if len(names) == 1:
            return {names[0]: values[names[0]]}
        return {name: values[name] for name in names}

    def _start_call(self, name: str) -> bool:
        """Count a call as running; False if the run has failed (start nothing)."""
        with self._lock:
            if self._failure is not None:
                return False
            self._running += 1
            if self._stuck_after is not None:
                self._started.setdefault(name, time.monotonic())
        return True

    def _claim(self, mapped: _Mapped) -> int:
        """The next item index to run, counted as running; -1 when none is left."""
        with self._lock:
            if self._failure is not None or mapped.claimed >= len(mapped.items):
                return -1
            index = mapped.claimed
            mapped.claimed += 1
            self._running += 1
            if self._stuck_after is not None:
                self._started.setdefault(mapped.name, time.monotonic())
        return index

    def _start_delay(self, mapped: _Mapped, index: int) -> float:
        if not mapped.spacing or not index:
            return 0.0
        return mapped.started_at + index * mapped.spacing - time.monotonic()

    # --- sync lane -------------------------------------------------------------------

    def _sync_worker(self, work: Work | None, lane: Lane) -> None:
        while work is not None:
            if isinstance(work, str):
                work = self._sync_chain(work, lane) if self._start_call(work) else None
            else:
                work = self._sync_items(work, lane)

    def _sync_chain(self, name: str | None, lane: Lane) -> Work | None:
        """Run ``name`` (counted as running), then each sync task it hands over to."""
        while name is not None:
            spec = self._specs[name]
            kwargs = self._inputs(self._nodes[name].inputs)
            value, error, start = self._call_sync(spec, None, kwargs, lane)
            if value is _ABANDONED:
                return None
            name, work = self._handover(name, value, error, start, lane)
            if work is not None:
                return work
        return None

    def _sync_items(self, mapped: _Mapped, lane: Lane) -> Work | None:
        while (index := self._claim(mapped)) >= 0:
            delay = self._start_delay(mapped, index)
            if delay > 0:  # rate-limited: give the thread back, come back on time
                self._call_ended()
                lanes.deadlines().arm(
                    time.monotonic() + delay,
                    lambda: self._resubmit(mapped, index, lane),
                )
                return None
            ready = self._sync_item(mapped, index, lane)
            if ready:
                return self._dispatch_ready(ready, lane)
        return None

    def _resubmit(self, mapped: _Mapped, index: int, lane: Lane) -> None:
        submit = self._submit_sensitive if lane == CALLER else self.submit
        submit(lambda: self._sync_resume(mapped, index, lane))

    def _sync_resume(self, mapped: _Mapped, index: int, lane: Lane) -> None:
        if not self._start_call(mapped.name):
            return
        ready = self._sync_item(mapped, index, lane)
        following = self._dispatch_ready(ready, lane) if ready else None
        self._sync_worker(following or mapped, lane)

    def _sync_item(self, mapped: _Mapped, index: int, lane: Lane) -> list[str]:
        kwargs = {**mapped.kwargs, mapped.item_param: mapped.items[index]}
        value, error, start = self._call_sync(mapped.spec, index, kwargs, lane)
        if value is _ABANDONED:
            return []
        return self._settle_item(mapped, index, value, error, start)

    def _call_sync(
        self, spec: TaskSpec, index: int | None, kwargs: dict[str, Any], lane: Lane
    ) -> tuple[Any, BaseException | None, float]:
        """Call with retries (and a timeout per attempt); (value, error, start time)."""
        function, timeout = spec.function, spec.timeout
        attempt, start = 0, _perf()
        while True:
            began = _perf()
            timed = self._arm_sync_timeout(spec.name, index, timeout, lane) if timeout else None
            error: BaseException | None = None
            value = None
            context = self._context.copy()
            extra = open_annotations(context) if self._collectors else None
            try:
                wrappers = self._wrappers if lane == THREAD else self._caller_wrappers
                if wrappers:
                    value = context.run(_wrapped, wrappers, function, kwargs)
                else:
                    value = context.run(function, **kwargs)
            except BaseException as exc:
                error = exc
            if timed is not None and self._settle_timed(timed):
                return _ABANDONED, None, start  # the timeout already failed the task
            if not _retryable(error, attempt, spec) or self._failure is not None:
                break
            self._trace(spec.name, index, lane, began, attempt, error, extra)
            attempt += 1
        if self._collectors:
            self._trace(spec.name, index, lane, began, attempt, error, extra)
        return value, error, start

    def _arm_sync_timeout(
        self, name: str, index: int | None, timeout: float, lane: Lane
    ) -> _TimedCall:
        timed = _TimedCall()

        def expire() -> None:
            with self._lock:
                if not timed.live:
                    return
                timed.live, timed.abandoned = False, True
            error = TaskTimeout(name, timeout, index)
            position = lanes.where_is(timed.thread_id)
            error.add_note(
                "wove: the sync call was abandoned at its timeout; its thread keeps running"
                f"{f' at {position}' if position else ''} until the call returns"
            )
            lanes.logger.warning("wove: %s; abandoning its thread", error)
            # The abandoned call keeps its pool thread: lend the pool one in its place
            # until it returns, so abandoned calls cannot starve later work.
            timed.lent = lane == THREAD
            if timed.lent:
                lanes.thread_pool().lend()
            else:  # on a dedicated thread-sensitive thread: later weaves use another
                timed.blocking = lanes.block_thread(timed.thread_id)
            self._trace(name, index, lane, _perf() - timeout, 0, error)
            self._fail(name, index, error, ended_call=True)

        timed.deadline = lanes.deadlines().arm(time.monotonic() + timeout, expire)
        return timed

    def _settle_timed(self, timed: _TimedCall) -> bool:
        """Mark a timed attempt returned; True if its timeout already abandoned it."""
        with self._lock:
            timed.live = False
            abandoned = timed.abandoned
        if timed.deadline is not None:
            timed.deadline.cancel()  # drops the callback, and with it this run
        if abandoned and timed.lent:
            lanes.thread_pool().give_back()  # the thread lent at the timeout
        if abandoned:
            lanes.unblock(timed.blocking)
        return abandoned

    # --- async lane ------------------------------------------------------------------

    async def _async_worker(self, work: Work | None) -> None:
        while work is not None:
            if isinstance(work, str):
                work = await self._async_chain(work) if self._start_call(work) else None
            else:
                work = await self._async_items(work)

    async def _async_chain(self, name: str | None) -> Work | None:
        """Run ``name`` (counted as running), then each async task it hands over to."""
        specs, nodes, lean = self._specs, self._nodes, not self._collectors
        while name is not None:
            spec = specs[name]
            kwargs = self._inputs(nodes[name].inputs)
            try:
                if lean and spec.options is NO_OPTIONS:
                    start = _perf()  # the common case, kept lean
                    error: BaseException | None = None
                    try:
                        value = await spec.function(**kwargs)
                    except Exception as exc:
                        value, error = None, exc
                else:
                    value, error, start = await self._call_async(spec, None, kwargs)
            except asyncio.CancelledError as cancelled:
                self._call_cancelled(name, None, cancelled)
                return None
            except BaseException as exc:  # KeyboardInterrupt, SystemExit: still this task's
                value, error, start = None, exc, _perf()
            name, work = self._handover(name, value, error, start, LOOP)
            if work is not None:
                return work
        return None

    async def _async_items(self, mapped: _Mapped) -> Work | None:
        while (index := self._claim(mapped)) >= 0:
            kwargs = {**mapped.kwargs, mapped.item_param: mapped.items[index]}
            try:
                delay = self._start_delay(mapped, index)
                if delay > 0:
                    await asyncio.sleep(delay)
                value, error, start = await self._call_async(mapped.spec, index, kwargs)
            except asyncio.CancelledError as cancelled:
                self._call_cancelled(mapped.name, index, cancelled)
                return None
            ready = self._settle_item(mapped, index, value, error, start)
            if ready:
                return self._dispatch_ready(ready, LOOP)
        return None

    async def _call_async(
        self, spec: TaskSpec, index: int | None, kwargs: dict[str, Any]
    ) -> tuple[Any, BaseException | None, float]:
        function, timeout = spec.function, spec.timeout
        attempt, start = 0, _perf()
        while True:
            began = _perf()
            error: BaseException | None = None
            value = None
            scope = asyncio.timeout(timeout) if timeout is not None else None
            extra: dict[str, object] | None = None
            if self._collectors:  # this worker's context: the annotations of this call
                extra = {}
                token = annotations_set(extra)
            try:
                if scope is None:
                    value = await function(**kwargs)
                else:
                    async with scope:
                        value = await function(**kwargs)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                error = exc
                if scope is not None and scope.expired():  # a timeout is not retried
                    error = TaskTimeout(spec.name, timeout or 0.0, index)
                    error.__cause__ = exc
                    break
            finally:
                if extra is not None:
                    annotations_reset(token)
            if not _retryable(error, attempt, spec) or self._failure is not None:
                break
            self._trace(spec.name, index, self._lanes[spec.name], began, attempt, error, extra)
            attempt += 1
        self._trace(spec.name, index, self._lanes[spec.name], began, attempt, error, extra)
        return value, error, start

    def _call_cancelled(
        self, name: str, index: int | None, cancelled: asyncio.CancelledError
    ) -> None:
        self._trace(name, index, self._lanes[name], _perf(), 0, cancelled)
        with self._lock:
            ours = self._failure is not None
        if not ours:  # cancelled from outside the weave (e.g. the loop is shutting down)
            self._fail(name, index, cancelled, ended_call=True)
        else:
            self._call_ended()

    # --- completion ------------------------------------------------------------------

    def _handover(
        self, name: str, value: Any, error: BaseException | None, start: float, lane: Lane
    ) -> tuple[str | None, Work | None]:
        """Record an unmapped task's outcome and start what became ready.

        Returns the task the calling worker runs next: an unmapped task of its own kind,
        handed over under the same lock that completed this one (it stays counted as
        running: one call ends, the next begins), or other work from ``_dispatch``.
        """
        end = _perf()
        if error is not None:
            self._fail(name, None, error, ended_call=True)
            return None, None
        following = None
        with self._lock:
            ready = self._complete_locked(name, value, end - start)
            for position, candidate in enumerate(ready):
                if self._lanes[candidate] == lane and self._specs[candidate].map_source is None:
                    following = ready.pop(position)
                    if self._stuck_after is not None:
                        self._started.setdefault(following, time.monotonic())
                    break
            else:
                if not ready:
                    self._running -= 1
            finished = self._finishing_locked()
        if finished:
            self._on_finish()
        if not ready:
            return following, None
        # This call stays counted while it dispatches, so the run cannot end meanwhile
        # (and, for an async caller, its loop cannot close under a launch).
        if following is not None:
            self._dispatch(ready, None)
            return following, None
        work = self._dispatch(ready, lane)
        self._call_ended()
        return None, work

    def _settle_item(
        self, mapped: _Mapped, index: int, value: Any, error: BaseException | None, start: float
    ) -> list[str]:
        end = _perf()
        if error is not None:
            self._fail(mapped.name, index, error, ended_call=True)
            return []
        with self._lock:
            mapped.results[index] = value
            mapped.first_start = min(mapped.first_start, start)
            mapped.last_end = max(mapped.last_end, end)
            mapped.left -= 1
            ready = []
            if not mapped.left:
                duration = mapped.last_end - mapped.first_start
                ready = self._complete_locked(mapped.name, mapped.results, duration)
            if not ready:  # else it stays counted until the caller dispatched them
                self._running -= 1
            # (also when items are left: after a failure, this may be the last call)
            finished = self._finishing_locked()
        if finished:
            self._on_finish()
        return ready

    def _dispatch_ready(self, ready: list[str], continue_as: Lane | None) -> Work | None:
        """Dispatch what a settled item made ready, then end that item's call."""
        work = self._dispatch(ready, continue_as)
        self._call_ended()
        return work

    def _complete(self, name: str, value: Any, duration: float) -> list[str]:
        with self._lock:
            ready = self._complete_locked(name, value, duration)
            finished = self._finishing_locked()
        if finished:
            self._on_finish()
        return ready

    def _complete_locked(self, name: str, value: Any, duration: float) -> list[str]:
        self._values[name] = value
        self._timings[name] = duration
        self._unfinished -= 1
        if self._failure is not None:
            return []
        ready = []
        waiting = self._waiting
        for dependent in self._nodes[name].dependents:
            waiting[dependent] -= 1
            if not waiting[dependent]:
                ready.append(dependent)
        return ready

    def _call_ended(self) -> None:
        with self._lock:
            self._running -= 1
            finished = self._finishing_locked()
        if finished:
            self._on_finish()

    def _fail(
        self, name: str | None, index: int | None, error: BaseException, *, ended_call: bool
    ) -> None:
        with self._lock:
            if ended_call:
                self._running -= 1
            first = self._failure is None
            if first:
                self._failure = error
                self.failed_at = (name, index) if name is not None else None
            if name is not None and not isinstance(error, asyncio.CancelledError):
                self._errors.setdefault(name, error)
            workers = list(self._async_workers) if first else []
            finished = self._finishing_locked()
        if workers and self.loop is not None:

            def cancel_workers() -> None:
                for worker in workers:
                    worker.cancel()

            self.loop.call(cancel_workers)
        if finished:
            self._on_finish()

    def _finish_if_done(self) -> None:
        with self._lock:
            finished = self._finishing_locked()
        if finished:
            self._on_finish()

    def _finishing_locked(self) -> bool:
        """True exactly once: when all tasks are done, or a failure has settled."""
        if self._finished:
            return False
        if self._running or (self._unfinished and self._failure is None):
            return False
        self._finished = True
        # Nothing is left to cancel: let finished asyncio tasks go now, not when the
        # (cyclic, through the context) run is collected; asyncio.run walks all live ones.
        self._async_workers = []
        # And let go of the run from every task context, so values are freed with the
        # result, not at the next cyclic collection (merge() after the end is refused).
        self._ref.run = None
        return True

    # --- visibility ------------------------------------------------------------------

    def _trace(
        self,
        name: str,
        index: int | None,
        lane: Lane,
        start: float,
        attempt: int,
        error: BaseException | None,
        extra: dict[str, object] | None = None,
    ) -> None:
        if not self._collectors:
            return
        status: Status = "ok"
        if error is None:
            pass
        elif isinstance(error, TaskTimeout):
            status = "timeout"
        elif isinstance(error, asyncio.CancelledError):
            status = "cancelled"
        else:
            status = "error"
        record = TraceRecord(  # positional: this runs once per traced attempt
            self.origin,
            self.id,
            name,
            index,
            lane,
            threading.current_thread().name,
            start,
            _perf(),
            attempt,
            status,
            None if error is None else f"{type(error).__name__}: {error}",
            MappingProxyType(dict(extra)) if extra else NO_EXTRA,
        )
        for collector in self._collectors:
            try:
                collector(record)
            except Exception:  # a broken collector must not break the weave
                lanes.logger.exception("wove: trace collector %r failed", collector)

    def _arm_stuck_report(self, interval: float) -> None:
        def report() -> None:
            if self._finished:
                return
            now = time.monotonic()
            with self._lock:
                stuck = [
                    f"{name} ({now - started:.1f} s)"
                    for name, started in self._started.items()
                    if name not in self._values
                    and name not in self._errors
                    and now - started >= interval
                ]
            if stuck:
                lanes.logger.warning(
                    "wove: weave at %s has tasks still running after %.1f s: %s",
                    self.origin,
                    interval,
                    ", ".join(stuck),
                )
            lanes.deadlines().arm(time.monotonic() + interval, report)

        lanes.deadlines().arm(time.monotonic() + interval, report)


def _wrapped(
    wrappers: tuple[Callable[[Callable[[], Any]], Any], ...],
    function: Callable[..., Any],
    kwargs: dict[Any, Any],
    positional: bool = False,
) -> Any:
    """Call ``function`` inside every wrapper (the first registered is the outermost)."""

    def call() -> Any:
        return function(*kwargs.values()) if positional else function(**kwargs)

    for wrapper in reversed(wrappers):
        call = functools.partial(wrapper, call)
    return call()


def _retryable(error: BaseException | None, attempt: int, spec: TaskSpec) -> bool:
    """Retry an exception, not KeyboardInterrupt or SystemExit, while retries are left."""
    return isinstance(error, Exception) and attempt < spec.retries


async def _await(awaitable: Any) -> Any:
    """A coroutine around an awaitable that is not one (a future, a custom object)."""
    return await awaitable


async def _raise(error: BaseException) -> Any:
    raise error
