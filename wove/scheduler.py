"""Graph -> a :class:`Run`: dataflow execution of one weave.

Each task starts the moment its own inputs are done, never in tiers. Sync tasks run as
jobs on the thread lane, async tasks as worker coroutines on the event loop. When a task
finishes, the thread (or coroutine) that finished it runs one newly ready task of its own
kind itself, as a continuation, and hands the others to their lanes: a chain of sync
tasks runs on one pool thread, a chain of async tasks in one asyncio task, with no hop
between links.

A mapped task is run by ``k`` workers (``k`` = its ``workers=`` or its item count) that
claim item indexes from a shared counter until none are left.

The first failure (in time) is kept; no task starts after it, async work is cancelled,
and the run ends once every unit still running on a thread has returned (or been
abandoned at its timeout). All shared state is guarded by ``self._lock``, not by the GIL.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal

from . import lanes
from .errors import TaskTimeout
from .graph import DATA, Graph, TaskPlan, check_iterable
from .lanes import Job
from .result import WoveResult
from .tracing import Collector, Status, TraceRecord

_current_run: contextvars.ContextVar[Run] = contextvars.ContextVar("wove_current_run")
_ids = itertools.count(1)
_EXHAUSTED: Final = -1
_UNMAPPED: Final = None


def current_run() -> Run | None:
    """The run whose task is executing in this context, if any."""
    return _current_run.get(None)


class LoopBinding:
    """The event loop a run's async tasks run on, and the thread running it."""

    __slots__ = ("loop", "thread_id")

    def __init__(self, loop: asyncio.AbstractEventLoop, thread_id: int) -> None:
        self.loop = loop
        self.thread_id = thread_id

    def call(self, callback: Callable[[], None]) -> None:
        lanes.call_on_loop(self.loop, self.thread_id, callback)


class _TaskRun:
    """Mutable state of one task during a run (guarded by the run's lock)."""

    __slots__ = (
        "claimed",
        "first_start",
        "items",
        "kwargs",
        "last_end",
        "left",
        "mapped",
        "plan",
        "results",
        "spacing",
        "started_at",
        "total",
    )

    def __init__(self, plan: TaskPlan, kwargs: dict[str, Any], items: list[Any] | None) -> None:
        self.plan = plan
        self.kwargs = kwargs
        self.items = items
        self.mapped = items is not None
        self.total = len(items) if items is not None else 1
        self.left = self.total
        self.claimed = 0
        self.results: list[Any] = [None] * self.total if items is not None else []
        self.first_start = 0.0
        self.last_end = 0.0
        self.started_at = time.monotonic()
        lpm = plan.spec.limit_per_minute
        self.spacing = 60.0 / lpm if lpm else 0.0

    def worker_count(self) -> int:
        workers = self.plan.spec.workers
        return min(workers, self.total) if workers else self.total

    def call_args(self, index: int | None) -> dict[str, Any]:
        if index is None or self.items is None:
            return self.kwargs
        item_param = self.plan.item_param
        assert item_param is not None
        return {**self.kwargs, item_param: self.items[index]}


class _SyncAttempt:
    """A sync call being timed: the deadline callback and the thread race to settle it."""

    __slots__ = ("abandoned", "live", "thread_id")

    def __init__(self) -> None:
        self.live = True
        self.abandoned = False
        self.thread_id = threading.get_ident()


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
    ) -> None:
        self.graph = graph
        self.origin = origin
        self.id = next(_ids)
        self.submit = submit
        self.loop = loop
        self._on_finish = on_finish
        self._lock = threading.Lock()
        self._values: dict[str, Any] = {**data, DATA: dict(data)}
        self._errors: dict[str, BaseException] = {}
        self._timings: dict[str, float] = {}
        self._waiting = {name: len(plan.dependencies) for name, plan in graph.tasks.items()}
        self._active: dict[str, _TaskRun] = {}
        self._unfinished = len(graph.tasks)
        self._running_units = 0
        self._async_workers: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None
        self.failed_at: tuple[str, int | None] | None = None
        self._finished = False
        self._collectors: tuple[Collector, ...] = ()
        self._stuck_after = stuck_after
        self._context = contextvars.copy_context()
        self._context.run(_current_run.set, self)

    # --- lifecycle -------------------------------------------------------------------

    def start(self, collectors: tuple[Collector, ...] = ()) -> None:
        """Start the root tasks. Called on the caller's thread (the loop's, if async)."""
        self._collectors = collectors
        if self._stuck_after is not None:
            self._arm_stuck_report()
        if not self.graph.tasks:
            self._finish_if_done()
            return
        self._dispatch(list(self.graph.roots), continue_as=None)

    def cancel(self, reason: BaseException) -> None:
        """Stop the run from outside (the caller was cancelled or interrupted)."""
        self._fail(None, None, reason)

    @property
    def finished(self) -> bool:
        return self._finished

    def result(self) -> WoveResult:
        with self._lock:
            return WoveResult(
                order=tuple(self.graph.tasks),
                values=dict(self._values),
                errors=dict(self._errors),
                timings=dict(self._timings),
                exception=self._failure,
            )

    # --- dispatch --------------------------------------------------------------------

    def _dispatch(
        self, ready: list[str], continue_as: Literal["sync", "async"] | None
    ) -> _TaskRun | None:
        """Start ready tasks; return one of kind ``continue_as`` for the caller to run."""
        continuation: _TaskRun | None = None
        while ready:
            name = ready.pop(0)
            task = self._begin(self.graph.tasks[name])
            if task is None:
                continue
            if task.total == 0:  # mapped over nothing: done at once, with no call
                ready.extend(self._complete(task, []))
                continue
            kind = "async" if task.plan.spec.is_async else "sync"
            workers = task.worker_count()
            if continuation is None and kind == continue_as:
                continuation, workers = task, workers - 1
            for _ in range(workers):
                self._launch(task, kind)
        return continuation

    def _begin(self, plan: TaskPlan) -> _TaskRun | None:
        """A task's runtime state, its inputs read; None if it fails to begin."""
        with self._lock:
            if self._failure is not None:
                return None
            kwargs = {name: self._values[name] for name in plan.inputs}
            source = plan.spec.map_source
            if source is not None and source.name is not None:
                value = self._values[source.name]
            elif source is not None:
                value = source.iterable
        items = None
        if source is not None:
            try:
                check_iterable(plan.name, source.name, value)
                items = list(value)
            except BaseException as exc:
                self._fail(plan.name, None, exc)
                return None
        task = _TaskRun(plan, kwargs, items)
        with self._lock:
            self._active[plan.name] = task
        return task

    def _launch(self, task: _TaskRun, kind: str) -> None:
        if kind == "sync":
            self.submit(lambda: self._sync_worker(task))
        else:
            assert self.loop is not None, "async task without a loop"
            self.loop.call(lambda: self._spawn(task))

    def _spawn(self, task: _TaskRun) -> None:
        worker = self.loop.loop.create_task(  # type: ignore[union-attr]
            self._async_worker(task), context=self._context.copy()
        )
        with self._lock:
            self._async_workers.add(worker)
            failed = self._failure is not None
        worker.add_done_callback(self._forget_worker)
        if failed:
            worker.cancel()

    def _forget_worker(self, worker: asyncio.Task[None]) -> None:
        with self._lock:
            self._async_workers.discard(worker)

    def _claim(self, task: _TaskRun) -> int | None:
        """The next item index to run (None for an unmapped task), or _EXHAUSTED."""
        with self._lock:
            if self._failure is not None or task.claimed >= task.total:
                return _EXHAUSTED
            index = task.claimed
            task.claimed += 1
            self._running_units += 1
        return index if task.mapped else _UNMAPPED

    def _start_delay(self, task: _TaskRun, index: int | None) -> float:
        if not task.spacing or not index:
            return 0.0
        return task.started_at + index * task.spacing - time.monotonic()

    # --- sync lane -------------------------------------------------------------------

    def _sync_worker(self, task: _TaskRun | None) -> None:
        while task is not None:
            index = self._claim(task)
            if index == _EXHAUSTED:
                return
            delay = self._start_delay(task, index)
            if delay > 0:  # rate-limited: give the thread back, come back on time
                self._unit_ended()
                self._unclaim_later(task, index, delay)
                return
            ready = self._run_sync_unit(task, index)
            if ready:
                task = self._dispatch(ready, continue_as="sync") or task

    def _unclaim_later(self, task: _TaskRun, index: int | None, delay: float) -> None:
        def resume() -> None:
            self.submit(lambda: self._sync_resume(task, index))

        lanes.deadlines().arm(time.monotonic() + delay, resume)

    def _sync_resume(self, task: _TaskRun, index: int | None) -> None:
        with self._lock:
            if self._failure is not None:
                return
            self._running_units += 1
        ready = self._run_sync_unit(task, index)
        following = self._dispatch(ready, continue_as="sync") if ready else None
        self._sync_worker(following or task)

    def _run_sync_unit(self, task: _TaskRun, index: int | None) -> list[str]:
        spec = task.plan.spec
        function, kwargs, timeout = spec.function, task.call_args(index), spec.timeout
        attempt, start = 0, time.perf_counter()
        while True:
            began = time.perf_counter()
            guard = self._arm_sync_timeout(task, index, timeout) if timeout else None
            error: BaseException | None = None
            try:
                value = self._context.copy().run(function, **kwargs)
            except BaseException as exc:
                error, value = exc, None
            if guard is not None and self._settle_attempt(guard):
                return []  # abandoned at its timeout, which already failed the task
            if error is None or attempt >= spec.retries or self._failure is not None:
                break
            self._trace(task, index, "thread", began, attempt, error)
            attempt += 1
        self._trace(task, index, "thread", began, attempt, error)
        return self._unit_done(task, index, value, error, start)

    def _arm_sync_timeout(self, task: _TaskRun, index: int | None, timeout: float) -> _SyncAttempt:
        guard = _SyncAttempt()

        def expire() -> None:
            with self._lock:
                if not guard.live:
                    return
                guard.live, guard.abandoned = False, True
                self._running_units -= 1
            error = TaskTimeout(task.plan.name, timeout, index)
            position = lanes.where_is(guard.thread_id)
            error.add_note(
                f"wove: the sync call was abandoned at its timeout; its thread keeps "
                f"running{f' at {position}' if position else ''} until the call returns"
            )
            lanes.logger.warning(
                "wove: %s; abandoning its thread (%s)", error, position or "position unknown"
            )
            self._fail(task.plan.name, index, error)

        lanes.deadlines().arm(time.monotonic() + timeout, expire)
        return guard

    def _settle_attempt(self, guard: _SyncAttempt) -> bool:
        """Mark a timed attempt returned; True if its timeout already abandoned it."""
        with self._lock:
            guard.live = False
            return guard.abandoned

    # --- async lane ------------------------------------------------------------------

    async def _async_worker(self, task: _TaskRun | None) -> None:
        while task is not None:
            index = self._claim(task)
            if index == _EXHAUSTED:
                return
            try:
                delay = self._start_delay(task, index)
                if delay > 0:
                    await asyncio.sleep(delay)
                ready = await self._run_async_unit(task, index)
            except asyncio.CancelledError as cancelled:
                self._unit_cancelled(task, index, cancelled)
                return
            if ready:
                task = self._dispatch(ready, continue_as="async") or task

    async def _run_async_unit(self, task: _TaskRun, index: int | None) -> list[str]:
        spec = task.plan.spec
        function, kwargs, timeout = spec.function, task.call_args(index), spec.timeout
        attempt, start = 0, time.perf_counter()
        while True:
            began = time.perf_counter()
            error: BaseException | None = None
            value = None
            scope = asyncio.timeout(timeout) if timeout is not None else None
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
                if scope is not None and scope.expired():
                    # A timeout ends the task: it is not retried.
                    error = TaskTimeout(task.plan.name, timeout or 0.0, index)
                    error.__cause__ = exc
                    break
            if error is None or attempt >= spec.retries or self._failure is not None:
                break
            self._trace(task, index, "loop", began, attempt, error)
            attempt += 1
        self._trace(task, index, "loop", began, attempt, error)
        return self._unit_done(task, index, value, error, start)

    def _unit_cancelled(
        self, task: _TaskRun, index: int | None, cancelled: asyncio.CancelledError
    ) -> None:
        self._trace(task, index, "loop", time.perf_counter(), 0, cancelled)
        with self._lock:
            ours = self._failure is not None
        if not ours:
            # Cancelled from outside the weave (e.g. the loop is shutting down).
            self._fail(task.plan.name, index, cancelled)
        self._unit_ended()

    # --- completion ------------------------------------------------------------------

    def _unit_done(
        self,
        task: _TaskRun,
        index: int | None,
        value: Any,
        error: BaseException | None,
        start: float,
    ) -> list[str]:
        """Record one unit's outcome; return the tasks that became ready."""
        end = time.perf_counter()
        if error is not None:
            self._fail(task.plan.name, index, error)
            self._unit_ended()
            return []
        with self._lock:
            self._running_units -= 1
            if not task.first_start or start < task.first_start:
                task.first_start = start
            task.last_end = max(task.last_end, end)
            if index is not None:
                task.results[index] = value
            task.left -= 1
            done = task.left == 0
        if not done:
            return []
        return self._complete(task, task.results if task.mapped else value)

    def _complete(self, task: _TaskRun, value: Any) -> list[str]:
        name = task.plan.name
        ready: list[str] = []
        with self._lock:
            self._values[name] = value
            self._timings[name] = max(task.last_end - task.first_start, 0.0)
            self._active.pop(name, None)
            self._unfinished -= 1
            if self._failure is None:
                for dependent in task.plan.dependents:
                    self._waiting[dependent] -= 1
                    if not self._waiting[dependent]:
                        ready.append(dependent)
        self._finish_if_done()
        return ready

    def _unit_ended(self) -> None:
        with self._lock:
            self._running_units -= 1
        self._finish_if_done()

    def _fail(self, name: str | None, index: int | None, error: BaseException) -> None:
        with self._lock:
            first = self._failure is None
            if first:
                self._failure = error
                self.failed_at = (name, index) if name is not None else None
            if name is not None and not isinstance(error, asyncio.CancelledError):
                self._errors.setdefault(name, error)
            workers = list(self._async_workers) if first else []
        if workers and self.loop is not None:

            def cancel_workers() -> None:
                for worker in workers:
                    worker.cancel()

            self.loop.call(cancel_workers)
        self._finish_if_done()

    def _finish_if_done(self) -> None:
        with self._lock:
            if self._finished:
                return
            if self._unfinished and (self._failure is None or self._running_units > 0):
                return
            self._finished = True
        self._on_finish()

    # --- visibility ------------------------------------------------------------------

    def _trace(
        self,
        task: _TaskRun,
        index: int | None,
        lane: Literal["thread", "loop"],
        start: float,
        attempt: int,
        error: BaseException | None,
    ) -> None:
        if not self._collectors:
            return
        status: Status = "ok"
        if isinstance(error, TaskTimeout):
            status = "timeout"
        elif isinstance(error, asyncio.CancelledError):
            status = "cancelled"
        elif error is not None:
            status = "error"
        record = TraceRecord(
            weave=self.origin,
            weave_id=self.id,
            task=task.plan.name,
            index=index,
            lane=lane,
            thread=threading.current_thread().name,
            start=start,
            end=time.perf_counter(),
            attempt=attempt,
            status=status,
            error=None if error is None else f"{type(error).__name__}: {error}",
        )
        for collector in self._collectors:
            collector(record)

    def _arm_stuck_report(self) -> None:
        interval = self._stuck_after
        assert interval is not None

        def report() -> None:
            if self._finished:
                return
            now = time.monotonic()
            with self._lock:
                stuck = [
                    f"{name} ({task.claimed - (task.total - task.left)} running, "
                    f"{now - task.started_at:.1f} s)"
                    for name, task in self._active.items()
                    if now - task.started_at >= interval
                ]
            if stuck:
                lanes.logger.warning(
                    "wove: weave at %s still running after %.1f s: %s",
                    self.origin,
                    interval,
                    ", ".join(stuck),
                )
            lanes.deadlines().arm(time.monotonic() + interval, report)

        lanes.deadlines().arm(time.monotonic() + interval, report)
