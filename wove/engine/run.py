"""Graph + placement -> a :class:`Run`: the state of one run of one weave, and dispatch.

Each task starts the moment its own inputs are done, never in tiers. When a task
finishes, the worker that finished it runs one newly ready task of its own kind itself,
as a continuation, and hands the others to their lanes (:mod:`.workers` holds the worker
loops, :mod:`.attempt` the policy of one call). State and dispatch live together here
because workers and dispatch call each other by design: a worker that finishes a task
dispatches what became ready, and dispatch starts workers.

The first failure (in time) is kept; no task starts after it, async work is cancelled,
and the run ends once every call still running has returned (or has been abandoned at
its timeout). Shared state is guarded by ``self.lock``, not by the GIL.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import itertools
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import MaxPendingError, TaskTimeout
from ..graph import DATA, Graph, check_iterable
from ..lanes import hooks, loops, pool, services, timer
from ..lanes.services import Job
from ..lanes.task_thread import TaskThread
from ..placement import CALLER, LOOP, THREAD, Lane, Placement
from ..result import WoveResult
from ..task_spec import NO_OPTIONS, TaskSpec
from ..tracing import Collector, Instrument, RawCollector, WeaveScope, active_instruments
from . import stuck, workers
from .attempt import Recorder, add_note
from .mapped import Mapped, Work
from .timed import CANCEL_GRACE


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


def _open_scopes(
    instruments: tuple[Instrument, ...], origin: str, run_id: int
) -> tuple[WeaveScope, ...]:
    """Each instrument's scope of a run, opened in the run's context (so a span an
    instrument makes current there is the parent of every task's)."""
    scopes = []
    for instrument in instruments:
        try:
            scope = instrument.weave_started(origin, run_id)
        except Exception:  # a broken instrument must not break the weave
            services.logger.exception("wove: instrument %r failed", instrument)
            continue
        if scope is not None:
            scopes.append(scope)
    return tuple(scopes)


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
        loops.call_on_loop(self.loop, self.thread_id, callback)


class Run:
    def __init__(
        self,
        graph: Graph,
        data: Mapping[str, Any],
        placement: Placement,
        *,
        submit: Callable[[Job], None],
        loop: LoopBinding | None,
        on_finish: Callable[[], None],
        origin: str,
        stuck_after: float | None = None,
        submit_sensitive: Callable[[Job], None] | None = None,
        sensitive_thread: bool = True,
        max_pending: int | None = None,
        errors_returned: bool = False,
        merged: str | None = None,
    ) -> None:
        self.origin = origin
        # The merged function's name when this run is one merge() call's nested weave:
        # its errors then speak of that call, not of the task standing for it.
        self.merged = merged
        self.id = next(_ids)
        self.submit = submit
        self.loop = loop
        self.failed_at: tuple[str, int | None] | None = None
        self.specs = graph.specs
        self.nodes = graph.shape.nodes
        self._roots = graph.shape.roots
        self.lanes = placement.lanes
        self.submit_sensitive = submit_sensitive or submit
        self.max_pending = max_pending
        self._errors_returned = errors_returned
        self._wrappers = hooks.thread_call_wrappers()
        self._caller_wrappers = hooks.caller_thread_wrappers()
        self.async_wrappers = hooks.async_call_wrappers()
        # Where async calls' thread-sensitive work goes: None, a thread of each call's own;
        # else the thread-sensitive lane (when that lane is a thread, not an async
        # caller's own executor: there the work goes where the caller's library sends it).
        self._async_route: Callable[[Job], None] | None = None
        self._async_stays = False
        if placement.async_sensitive:
            self._async_route = self.submit_sensitive if sensitive_thread else None
            self._async_stays = not sensitive_thread
        self._notify_finished = on_finish
        self.lock = threading.Lock()
        self.values: dict[str, Any] = {**data, DATA: dict(data)}
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
        self.recorder: Recorder | None = None
        self._straggler_check: timer.Deadline | None = None
        self._forgotten: set[asyncio.Task[Any]] = set()  # abandoned at their timeout
        self._on_failure: list[Callable[[], None]] = []  # run on the loop at the failure
        self.stuck = stuck.StuckReport(self, stuck_after) if stuck_after is not None else None
        self.context = contextvars.copy_context()
        self._ref = _RunRef(self)
        self.context.run(_current_run.set, self._ref)
        if pool.in_pool_call.get():  # a weave started inside a pool call: not one itself
            self.context.run(pool.in_pool_call.set, False)
        self._thread_context: contextvars.Context | None = None

    @property
    def thread_context(self) -> contextvars.Context:
        """The context of calls on pool threads: it says so, for a nested event loop
        started there (asyncio.run, async_to_sync) blocks a pool thread (lanes.pool)."""
        context = self._thread_context
        if context is None:
            context = self.context.copy()
            context.run(pool.in_pool_call.set, True)
            self._thread_context = context
        return context

    # --- lifecycle -------------------------------------------------------------------

    def start(self, collectors: tuple[Collector | RawCollector, ...] = ()) -> None:
        """Start the root tasks; called on the caller's thread (the loop's, if async)."""
        instruments = active_instruments()
        scopes = (
            self.context.run(_open_scopes, instruments, self.origin, self.id) if instruments else ()
        )
        if collectors or scopes:
            self.recorder = Recorder(collectors, self.origin, self.id, scopes)
        if self.stuck is not None:
            self.stuck.arm()
        if not self.specs:
            self._finish_if_done()
            return
        self.dispatch(list(self._roots), None)

    def submit_counted(self, job: Job) -> None:
        """Run a job on the shared pool, counted as a running call: the weave does not end
        while it runs (``merge`` sends a task's sync calls here). Not through the weave's
        ``max_workers`` limiter: the task that merges may hold the weave's last slot
        while it waits for the call (a sync task awaiting a coroutine that merges)."""
        with self.lock:
            self._running += 1

        def counted() -> None:
            try:
                job()
            finally:
                self.call_ended()

        pool.thread_pool().submit(counted)

    def thread_call(self, function: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        """Call a sync function on a pool thread of this run, inside the registered
        thread-call wrappers (``merge`` uses it for its sync calls)."""
        if not self._wrappers:
            return function(*args)
        return hooks.wrapped_call(self._wrappers, lambda: function(*args), {})

    def cancel(self, reason: BaseException) -> None:
        """Stop the run from outside (its caller was cancelled or interrupted)."""
        self.fail(None, None, reason, ended_call=False)

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def failed(self) -> bool:
        return self._failure is not None

    def task_thread(self) -> TaskThread | None:
        """The thread for the thread-sensitive work of one async call (see
        ``hooks.add_async_call_wrapper``); None: it stays where the caller's is."""
        if self._async_stays:
            return None
        return TaskThread(self._async_route)

    def wrappers_for(self, lane: Lane) -> tuple[hooks.ThreadCallWrapper, ...]:
        """Pool threads get every wrapper; the caller's thread only the observing ones."""
        return self._wrappers if lane == THREAD else self._caller_wrappers

    def result(self) -> WoveResult:
        with self.lock:
            return WoveResult(
                order=tuple(self.specs),
                values=dict(self.values),
                errors=dict(self._errors),
                timings=dict(self._timings),
                exception=self._failure,
                errors_returned=self._errors_returned,
            )

    # --- dispatch --------------------------------------------------------------------

    def dispatch(self, ready: list[str], continue_as: Lane | None) -> Work | None:
        """Start ready tasks; return one of lane ``continue_as`` for the calling worker to
        run itself."""
        continuation: Work | None = None
        for name in ready:  # may grow: a task mapped over nothing completes at once
            spec, lane = self.specs[name], self.lanes[name]
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
                if lane == LOOP and self.plain(spec):
                    self._launch_fan_out(mapped)
                    continue
            if continuation is None and lane == continue_as:
                continuation, count = work, count - 1
            if count:
                self._launch(work, lane, count)
        return continuation

    def plain(self, spec: TaskSpec) -> bool:
        """No retries, timeout, worker bound, rate limit or tracing: the lean paths."""
        return self.recorder is None and (spec.options is NO_OPTIONS or spec.options == NO_OPTIONS)

    def _begin_mapped(self, spec: TaskSpec) -> Mapped | None:
        node, source = self.nodes[spec.name], spec.map_source
        assert source is not None
        assert node.item_param is not None
        value = self.values[source.name] if source.name is not None else source.iterable
        try:
            check_iterable(spec.name, source.name, value)
            items = list(value)  # type: ignore[arg-type]
            if self.max_pending is not None and len(items) > self.max_pending:
                raise MaxPendingError(spec.name, len(items), self.max_pending)
        except BaseException as error:
            self.fail(spec.name, None, error, ended_call=False)
            return None
        kwargs = self.inputs(node.inputs)
        return Mapped(spec, node.item_param, kwargs, items)

    def _launch(self, work: Work, lane: Lane, count: int) -> None:
        """Start ``count`` workers of ``work`` on its lane (a mapped task's workers share
        one job object: they are alike, and a 1,000-item map launches 1,000 of them)."""
        if lane == THREAD:
            job: Job = functools.partial(workers.sync_worker, self, work, THREAD)
            timeout = self.specs[work if isinstance(work, str) else work.name].timeout
            submit = self.submit
            for _ in range(count):
                submit(job if timeout is None else self._waits_for_a_thread(job, work, timeout))
            return
        if lane == CALLER:
            job = functools.partial(workers.sync_worker, self, work, CALLER)
            for _ in range(count):
                self.submit_sensitive(job)
            return
        loop = self.loop
        assert loop is not None, "an async task needs a loop"
        for _ in range(count):
            loop.call(lambda: self.spawn(loop.loop, work))

    def _waits_for_a_thread(self, job: Job, work: Work, timeout: float) -> Job:
        """A job of a task with a timeout: if it gets no pool thread within the timeout
        because every thread of the pool is busy (some perhaps held by abandoned calls),
        the task fails with TaskTimeout and the job never starts. Waiting behind the
        weave's own ``max_workers``, or behind the other workers of its own mapped task,
        is not that: the clock then starts again."""
        name = work if isinstance(work, str) else work.name
        state = {"started": False, "expired": False}

        def expire() -> None:
            threads = pool.thread_pool()
            with self.lock:
                if state["started"] or self._finished:
                    return
                if (isinstance(work, Mapped) and work.claimed) or not threads.saturated():
                    waiting = True  # not a pool thread it waits for: look again later
                else:
                    waiting, state["expired"] = False, True
            if waiting:
                holder.append(timer.deadlines().arm(time.monotonic() + timeout, expire))
                return
            error = TaskTimeout(name, timeout, merged=self.merged)
            error.add_note(
                f"wove: it waited {timeout:g} s for a thread and never started: all "
                f"{threads.max_threads} threads of the pool (configure(max_threads=...)) "
                f"were busy, {threads.abandoned} of them held by calls abandoned at their "
                "timeout"
            )
            self.fail(name, None, error, ended_call=False)

        holder = [timer.deadlines().arm(time.monotonic() + timeout, expire)]

        def start() -> None:
            with self.lock:
                if state["expired"]:
                    return  # abandoned before it started: it never starts
                state["started"] = True
            timer.deadlines().cancel(holder[-1])
            job()

        return start

    def spawn(self, loop: asyncio.AbstractEventLoop, work: Work) -> None:
        worker = loop.create_task(workers.async_worker(self, work), context=self.context.copy())
        self.keep_tasks([worker])

    def keep_tasks(
        self, tasks: list[asyncio.Task[Any]], release: Callable[[], None] | None = None
    ) -> None:
        """Track asyncio tasks of the run (cancelled at its failure). ``release``: what a
        fan-out does on the loop thread at the failure (see workers.fan_out)."""
        with self.lock:
            self._async_workers.extend(tasks)
            if release is not None:
                self._on_failure.append(release)
            failed = self._failure is not None
        if failed:
            for task in tasks:
                task.cancel()
            if release is not None:
                release()

    def _launch_fan_out(self, mapped: Mapped) -> None:
        loop = self.loop
        assert loop is not None, "an async task needs a loop"
        loop.call(lambda: workers.fan_out(self, loop.loop, mapped))

    def count_calls(self, count: int) -> None:
        with self.lock:
            self._running += count

    def end_calls(self, count: int) -> None:
        """``count`` calls ended (fan-out items after a failure, one by one)."""
        with self.lock:
            self._running -= count
            finished = self._finishing_locked()
        if finished:
            self._on_finish()

    def forget_task(self, task: asyncio.Task[Any]) -> None:
        """An async call abandoned at its timeout: no longer counted (see timed.py)."""
        with self.lock:
            self._forgotten.add(task)

    def inputs(self, names: tuple[str, ...]) -> dict[str, Any]:
        # No lock: a value is written under the lock before its dependents become ready,
        # and never changes after.
        values = self.values
        if len(names) == 1:
            return {names[0]: values[names[0]]}
        return {name: values[name] for name in names}

    def start_call(self, name: str) -> bool:
        """Count a call as running; False if the run has failed (start nothing)."""
        with self.lock:
            if self._failure is not None:
                return False
            self._running += 1
        if self.stuck is not None:
            self.stuck.started(name)
        return True

    def claim(self, mapped: Mapped) -> int:
        """The next item index to run, counted as running; -1 when none is left."""
        with self.lock:
            if self._failure is not None or mapped.claimed >= len(mapped.items):
                return -1
            index = mapped.claimed
            mapped.claimed += 1
            self._running += 1
        if self.stuck is not None:
            self.stuck.started(mapped.name)
        return index

    # --- completion ------------------------------------------------------------------

    def handover(
        self, name: str, value: Any, error: BaseException | None, start: float, lane: Lane
    ) -> tuple[str | None, Work | None]:
        """Record an unmapped task's outcome and start what became ready.

        Returns the task the calling worker runs next: an unmapped task of its own lane,
        handed over under the same lock that completed this one (it stays counted as
        running: one call ends, the next begins), or other work from :meth:`dispatch`.
        This runs once per task of every chain, so it does the work of
        :meth:`_complete_locked` itself.
        """
        end = _perf()
        if error is not None:
            self.fail(name, None, error, ended_call=True)
            return None, None
        following = None
        ready: list[str] = []
        lanes, specs = self.lanes, self.specs
        with self.lock:
            self.values[name] = value
            self._timings[name] = end - start
            self._unfinished -= 1
            if self._failure is None:
                waiting = self._waiting
                for dependent in self.nodes[name].dependents:
                    left = waiting[dependent] - 1
                    waiting[dependent] = left
                    if left:
                        continue
                    if (
                        following is None
                        and lanes[dependent] == lane
                        and specs[dependent].map_source is None
                    ):
                        following = dependent
                    else:
                        ready.append(dependent)
            if following is None and not ready:
                self._running -= 1
            # Still counted (a task follows, or ready ones are dispatched): not the end.
            finished = False if self._running else self._finishing_locked()
        if finished:
            self._on_finish()
        if following is not None and self.stuck is not None:
            self.stuck.started(following)
        if not ready:
            return following, None
        # This call stays counted while it dispatches, so the run cannot end meanwhile
        # (and, for an async caller, its loop cannot close under a launch).
        if following is not None:
            self.dispatch(ready, None)
            return following, None
        work = self.dispatch(ready, lane)
        self.call_ended()
        return None, work

    def settle_item(
        self, mapped: Mapped, index: int, value: Any, error: BaseException | None, start: float
    ) -> list[str]:
        end = _perf()
        if error is not None:
            self.fail(mapped.name, index, error, ended_call=True)
            return []
        with self.lock:
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

    def settle_fan_out(self, mapped: Mapped, values: list[Any], calls: int) -> None:
        """All items of a fanned-out task succeeded (after a failure, each item's call
        ends on its own: see workers.fan_out)."""
        end = _perf()
        with self.lock:
            ready = self._complete_locked(mapped.name, values, end - mapped.first_start)
            # One call stays counted while the ready tasks are dispatched.
            self._running -= calls - 1 if ready else calls
            finished = self._finishing_locked()
        if finished:
            self._on_finish()
        if ready:
            self.dispatch_ready(ready, None)

    def dispatch_ready(self, ready: list[str], lane: Lane | None) -> Work | None:
        """Dispatch what a settled item made ready, then end that item's call."""
        work = self.dispatch(ready, lane)
        self.call_ended()
        return work

    def _complete(self, name: str, value: Any, duration: float) -> list[str]:
        with self.lock:
            ready = self._complete_locked(name, value, duration)
            finished = self._finishing_locked()
        if finished:
            self._on_finish()
        return ready

    def _complete_locked(self, name: str, value: Any, duration: float) -> list[str]:
        self.values[name] = value
        self._timings[name] = duration
        self._unfinished -= 1
        if self._failure is not None:
            return []
        ready = []
        waiting = self._waiting
        for dependent in self.nodes[name].dependents:
            waiting[dependent] -= 1
            if not waiting[dependent]:
                ready.append(dependent)
        return ready

    def call_ended(self) -> None:
        with self.lock:
            self._running -= 1
            finished = self._finishing_locked()
        if finished:
            self._on_finish()

    def call_cancelled(
        self, name: str, index: int | None, cancelled: asyncio.CancelledError
    ) -> None:
        if self.recorder is not None:
            self.recorder.record(name, index, self.lanes[name], _perf(), 0, cancelled)
        with self.lock:
            ours = self._failure is not None
        if not ours:  # cancelled from outside the weave (e.g. the loop is shutting down)
            self.fail(name, index, cancelled, ended_call=True, cancelled=True)
        else:
            self.call_ended()

    def fail(
        self,
        name: str | None,
        index: int | None,
        error: BaseException,
        *,
        ended_call: bool,
        cancelled: bool = False,
    ) -> None:
        """Record a failure; the first one stops the run. ``cancelled``: the task did
        not fail, it was cancelled from outside (not recorded as its error)."""
        with self.lock:
            if ended_call:
                self._running -= 1
            first = self._failure is None
            if first:
                self._failure = error
                self.failed_at = (name, index) if name is not None else None
            if name is not None and not cancelled:
                self._errors.setdefault(name, error)
            tasks = list(self._async_workers) if first else []
            releases = list(self._on_failure) if first else []
            finished = self._finishing_locked()
        if tasks and self.loop is not None:

            def cancel_workers() -> None:
                for task in tasks:
                    task.cancel()
                for release in releases:
                    release()

            self.loop.call(cancel_workers)
            self._arm_straggler_check()
        if finished:
            self._on_finish()

    def _on_finish(self) -> None:
        """The run is over (called once, outside the lock): a traced run first records
        every task that never ran, so a trace shows each task of the weave."""
        recorder = self.recorder
        if recorder is not None:
            if self._failure is not None:
                recorder.record_unstarted(self.specs, self.lanes, self._failure)
            recorder.finish(self._failure)
        self._notify_finished()

    def _arm_straggler_check(self) -> None:
        deadline = timer.deadlines().arm(
            time.monotonic() + CANCEL_GRACE, self._stop_waiting_for_stragglers
        )
        with self.lock:
            if self._finished:
                timer.deadlines().cancel(deadline)  # (nothing to wait for)
            else:
                self._straggler_check = deadline

    def _stop_waiting_for_stragglers(self) -> None:
        """A grace period after the failure cancelled the async tasks: if every call still
        counted is an asyncio task that has not stopped (it swallows CancelledError), the
        run stops waiting for them, as for a sync call abandoned at its timeout. Sync
        calls still running are always waited for, so then look again later."""
        with self.lock:
            if self._finished:
                return
            forgotten = self._forgotten
            stragglers = sum(
                not task.done() and task not in forgotten for task in self._async_workers
            )
            if not stragglers or stragglers < self._running:
                again = True
            else:
                again = False
                self._running = 0  # their late ends make it negative: the run is over
                failure = self._failure
                finished = self._finishing_locked()
        if again:
            self._arm_straggler_check()
            return
        if failure is not None:
            add_note(
                failure,
                f"wove: {stragglers} async task(s) did not stop within {CANCEL_GRACE:g} s of "
                "being cancelled (they swallow CancelledError); the weave stopped waiting "
                "for them, and they keep running on their event loop",
            )
        services.logger.warning(
            "wove: weave at %s stopped waiting for %d async task(s) that did not stop "
            "when cancelled",
            self.origin,
            stragglers,
        )
        if finished:
            self._on_finish()

    def _finish_if_done(self) -> None:
        with self.lock:
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
        if self._straggler_check is not None:  # let go of this run now, not in a second
            timer.deadlines().cancel(self._straggler_check)
            self._straggler_check = None
        # Nothing is left to cancel: let finished asyncio tasks go now, not when the
        # (cyclic, through the context) run is collected; asyncio.run walks all live ones.
        self._async_workers = []
        self._forgotten = set()
        self._on_failure = []
        # And let go of the run from every task context, so values are freed with the
        # result, not at the next cyclic collection (merge() after the end is refused).
        self._ref.run = None
        return True

    def unfinished_tasks(self) -> list[str]:
        """Tasks with neither a value nor an error (for the stuck report)."""
        with self.lock:
            return [n for n in self.specs if n not in self.values and n not in self._errors]
