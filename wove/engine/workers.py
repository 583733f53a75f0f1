"""The worker loops: a sync worker (on a pool thread, the caller's thread, or a waiting
caller running a task itself) and an async worker (an asyncio task), each running a
chain of tasks of its own kind, or a mapped task's items, and the ``gather``-shaped
fan-out of a plain mapped async task.

A worker is given a :class:`~.run.Run` and talks to it only through its public methods;
the policy of each call is :mod:`.attempt`'s.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import TYPE_CHECKING, Any

from ..lanes import timer
from ..placement import CALLER, LOOP, THREAD, Lane
from ..task_spec import NO_OPTIONS
from ..tracing import annotations_reset, annotations_set
from .attempt import ABANDONED, call_async, call_sync, wrapped_async
from .mapped import Mapped, Work

if TYPE_CHECKING:
    from .run import Run

_perf = time.perf_counter


# --- sync ------------------------------------------------------------------------------


def sync_worker(run: Run, work: Work | None, lane: Lane) -> None:
    while work is not None:
        if isinstance(work, str):
            work = _sync_chain(run, work, lane) if run.start_call(work) else None
        else:
            work = _sync_items(run, work, lane)


def _sync_chain(run: Run, name: str | None, lane: Lane) -> Work | None:
    """Run ``name`` (counted as running), then each sync task it hands over to."""
    specs, nodes = run.specs, run.nodes
    while name is not None:
        spec = specs[name]
        kwargs = run.inputs(nodes[name].inputs)
        value, error, start = call_sync(run, spec, None, kwargs, lane)
        if value is ABANDONED:
            return None
        name, work = run.handover(name, value, error, start, lane)
        if work is not None:
            return work
    return None


def _sync_items(run: Run, mapped: Mapped, lane: Lane) -> Work | None:
    while (index := run.claim(mapped)) >= 0:
        delay = mapped.start_delay(index)
        if delay > 0:  # rate-limited: give the thread back, come back on time
            run.call_ended()
            timer.deadlines().arm(
                time.monotonic() + delay, functools.partial(_resubmit, run, mapped, index, lane)
            )
            return None
        ready = _sync_item(run, mapped, index, lane)
        if ready is None:  # abandoned at its timeout: this thread starts nothing more
            return None
        if ready:
            return run.dispatch_ready(ready, lane)
    return None


def _resubmit(run: Run, mapped: Mapped, index: int, lane: Lane) -> None:
    # A waiting caller's items come back on the pool: the caller may be busy by then.
    submit = run.submit_sensitive if lane == CALLER else run.submit
    submit(
        functools.partial(_sync_resume, run, mapped, index, CALLER if lane == CALLER else THREAD)
    )


def _sync_resume(run: Run, mapped: Mapped, index: int, lane: Lane) -> None:
    if not run.start_call(mapped.name):
        return
    ready = _sync_item(run, mapped, index, lane)
    if ready is None:
        return
    following = run.dispatch_ready(ready, lane) if ready else None
    sync_worker(run, following or mapped, lane)


def _sync_item(run: Run, mapped: Mapped, index: int, lane: Lane) -> list[str] | None:
    """Run one item; what it made ready, or None if it was abandoned at its timeout."""
    kwargs = {**mapped.kwargs, mapped.item_param: mapped.items[index]}
    value, error, start = call_sync(run, mapped.spec, index, kwargs, lane)
    if value is ABANDONED:
        return None
    return run.settle_item(mapped, index, value, error, start)


# --- async -----------------------------------------------------------------------------


async def async_worker(run: Run, work: Work | None) -> None:
    while work is not None:
        if isinstance(work, str):
            work = await _async_chain(run, work) if run.start_call(work) else None
        else:
            work = await _async_items(run, work)


async def _async_chain(run: Run, name: str | None) -> Work | None:
    """Run ``name`` (counted as running), then each async task it hands over to."""
    specs, nodes, values, recorder = run.specs, run.nodes, run.values, run.recorder
    # No instrument: the lean path, plus the annotations and the record when recorded.
    lean = recorder is None or not recorder.scopes
    annotate = recorder is not None and recorder.annotate
    wrapped = bool(run.async_wrappers)
    while name is not None:
        spec = specs[name]
        # (run.inputs, inlined: this runs once per link of every async chain)
        kwargs = {input_name: values[input_name] for input_name in nodes[name].inputs}
        try:
            if lean and spec.options is NO_OPTIONS:
                start = _perf()  # the common case, kept lean
                error: BaseException | None = None
                extra: dict[str, object] | None = None
                if annotate:  # this worker's context: the annotations of this call
                    extra = {}
                    token = annotations_set(extra)
                try:
                    if wrapped:
                        value = await wrapped_async(run, spec.function, **kwargs)
                    else:
                        value = await spec.function(**kwargs)
                except asyncio.CancelledError:
                    raise
                except BaseException as exc:  # KeyboardInterrupt too: never to the loop
                    value, error = None, exc
                finally:
                    if extra is not None:
                        annotations_reset(token)
                if recorder is not None:
                    recorder.record(name, None, run.lanes[name], start, 0, error, extra)
            else:
                value, error, start = await call_async(run, spec, None, kwargs)
                if value is ABANDONED:
                    return None
        except asyncio.CancelledError as cancelled:
            if not _cancelled_from_outside():
                value, error, start = None, cancelled, _perf()  # the task raised it itself
            else:
                run.call_cancelled(name, None, cancelled)
                return None
        name, work = run.handover(name, value, error, start, LOOP)
        if work is not None:
            return work
    return None


async def _async_items(run: Run, mapped: Mapped) -> Work | None:
    while (index := run.claim(mapped)) >= 0:
        kwargs = {**mapped.kwargs, mapped.item_param: mapped.items[index]}
        try:
            delay = mapped.start_delay(index)
            if delay > 0:
                await asyncio.sleep(delay)
            value, error, start = await call_async(run, mapped.spec, index, kwargs)
            if value is ABANDONED:
                return None
        except asyncio.CancelledError as cancelled:
            if not _cancelled_from_outside():
                value, error, start = None, cancelled, _perf()
            else:
                run.call_cancelled(mapped.name, index, cancelled)
                return None
        ready = run.settle_item(mapped, index, value, error, start)
        if ready:
            return run.dispatch_ready(ready, LOOP)
    return None


def _cancelled_from_outside() -> bool:
    """Whether this asyncio task was cancelled (``task.cancel()``), as opposed to a task
    body raising ``CancelledError`` of its own accord, which is that task's failure."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


# A plain mapped async task has the shape of asyncio.gather: one asyncio task per item,
# settled by a done callback. Each item's coroutine is wrapped so that nothing it raises
# (KeyboardInterrupt, SystemExit) ever reaches the event loop, which asyncio would let
# out of run_forever, killing the loop's thread.


class _Raised:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


async def _item(run: Run, function: Any, kwargs: dict[str, Any], item_param: str, item: Any) -> Any:
    # The item's coroutine is made when its task first runs, as late as gather's would be
    # awaited: a pending item holds only this frame.
    try:
        if run.async_wrappers:
            return await wrapped_async(run, function, **kwargs, **{item_param: item})
        return await function(**kwargs, **{item_param: item})
    except asyncio.CancelledError as cancelled:
        if _cancelled_from_outside():
            raise
        return _Raised(cancelled)
    except BaseException as error:
        return _Raised(error)


def fan_out(run: Run, loop: asyncio.AbstractEventLoop, mapped: Mapped) -> None:
    function, kwargs, item_param = mapped.spec.function, mapped.kwargs, mapped.item_param
    context, tasks = run.context, list[asyncio.Task[Any]]()
    mapped.claimed = len(mapped.items)
    mapped.first_start = _perf()
    # Settled by one callback on the loop thread, which alone touches `mapped.left` and
    # the state here: the items count down without the lock, and the values are read
    # from the tasks once all are done, as gather does.
    state = _FanOut()
    settle = functools.partial(_item_settled, run, mapped, tasks, state)
    for item in mapped.items:
        task = loop.create_task(
            _item(run, function, kwargs, item_param, item), context=context.copy()
        )
        task.add_done_callback(settle)
        tasks.append(task)
    run.count_calls(len(tasks))  # none of them has run yet: this callback holds the loop
    run.keep_tasks(tasks, functools.partial(_release_settled, run, mapped, tasks, state))


class _FanOut:
    """A fan-out's progress: whether the run failed (from then on each item's call ends
    as it settles, so that an item that swallows its cancellation is the only one still
    counted, and the run can stop waiting for it)."""

    __slots__ = ("broken",)

    def __init__(self) -> None:
        self.broken = False


def _item_settled(
    run: Run,
    mapped: Mapped,
    tasks: list[asyncio.Task[Any]],
    state: _FanOut,
    task: asyncio.Task[Any],
) -> None:
    error: BaseException | None = None
    cancelled = task.cancelled()
    if cancelled:
        error = asyncio.CancelledError()
    elif type(outcome := task.result()) is _Raised:
        error = outcome.error
    mapped.left -= 1
    if error is not None and not state.broken:
        if not (cancelled and run.failed):  # else cancelled by the weave's own failure
            run.fail(mapped.name, tasks.index(task), error, ended_call=False, cancelled=cancelled)
        _release_settled(run, mapped, tasks, state)
        return
    if state.broken:
        run.end_calls(1)
        return
    if mapped.left:
        return
    run.settle_fan_out(mapped, [done.result() for done in tasks], len(tasks))


def _release_settled(
    run: Run, mapped: Mapped, tasks: list[asyncio.Task[Any]], state: _FanOut
) -> None:
    """The run failed (on the loop thread, like every settle): end the counts of the
    items settled so far; each later one ends its own as it settles."""
    if state.broken:
        return
    state.broken = True
    run.end_calls(len(tasks) - mapped.left)  # the items settled so far
