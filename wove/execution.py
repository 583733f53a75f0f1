"""A :class:`Recipe` (what a weave block collected) -> a finished :class:`Run`.

The four ways a weave runs share this module: in the caller's thread (``with``), on the
caller's loop (``async with``), in the background of this process, and in a detached
child process (forked, or spawned with the recipe pickled).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from . import background, environments, lanes, placement, plan
from .engine import LoopBinding, Run
from .engine.attempt import add_note
from .graph import Graph, build_graph
from .registry import Registry
from .result import WoveResult
from .runtime import settings
from .task_spec import TaskSpec
from .tracing import active_collectors

logger = logging.getLogger("wove")


@dataclass(frozen=True, slots=True)
class Recipe:
    """Everything needed to run one weave; picklable (for a spawned child)."""

    specs: Mapping[str, TaskSpec]
    data: Mapping[str, Any]
    debug: bool
    max_workers: int | None
    origin: str
    thread_sensitive: bool | None = None  # weave(thread_sensitive=...): None: configure()
    env: str | None = None  # weave(env=...): the remote environment of tasks not choosing
    max_pending: int | None = None  # the most items a mapped task may have
    error_mode: str = "raise"  # "return": failed tasks' results are their exceptions
    merged: str | None = None  # the merged function, for the weave of one merge() call


def plan_graph(recipe: Recipe) -> Graph:
    specs = environments.route(recipe.specs, recipe.env, recipe.origin)
    graph = build_graph(specs, recipe.data)
    if recipe.debug:
        plan.report(plan.describe(graph, recipe.data, recipe.origin))
    return graph


def new_run(
    recipe: Recipe,
    graph: Graph,
    loop: LoopBinding | None,
    on_finish: Callable[[], None],
    submit_sensitive: Callable[[lanes.Job], None],
    *,
    sensitive_thread: bool = True,
) -> Run:
    submit = lanes.thread_pool().submit
    if recipe.max_workers is not None:
        submit = lanes.Limiter(submit, recipe.max_workers).submit
    where = placement.place(
        graph,
        thread_sensitive=recipe.thread_sensitive,
        policy=settings().thread_sensitive_now,
        ask_async=bool(lanes.async_call_wrappers()),
    )
    return Run(
        graph,
        recipe.data,
        where,
        submit=submit,
        loop=loop,
        on_finish=on_finish,
        origin=recipe.origin,
        stuck_after=settings().stuck_after if recipe.debug else None,
        submit_sensitive=submit_sensitive,
        sensitive_thread=sensitive_thread,
        max_pending=recipe.max_pending,
        errors_returned=recipe.error_mode == "return",
        merged=recipe.merged,
    )


def _side_loop(graph: Graph) -> LoopBinding | None:
    """A loop for the async tasks of a weave whose caller does not run one for it."""
    if not graph.has_async:
        return None
    loop_thread = lanes.loop_for_sync_caller()
    assert loop_thread.thread.ident is not None
    return LoopBinding(loop_thread.loop, loop_thread.thread.ident)


def run_blocking(recipe: Recipe, graph: Graph) -> Run:
    """Run in the calling thread's stead: it waits (serving work sent back) until done."""
    with lanes.CallerWaiter() as waiter:
        run = new_run(recipe, graph, _side_loop(graph), waiter.done, waiter.call)
        run.start(active_collectors())
        try:
            waiter.wait()
        except BaseException as interrupted:  # Ctrl-C while waiting: stop, don't wait more
            run.cancel(interrupted)
            raise
    return run


async def run_awaiting(recipe: Recipe, graph: Graph) -> Run:
    """Run on the caller's event loop; cancelling the caller cancels the weave."""
    loop = asyncio.get_running_loop()
    binding = LoopBinding(loop, threading.get_ident())
    finished = loop.create_future()

    def set_finished() -> None:
        if not finished.done():
            finished.set_result(None)

    def on_finish() -> None:
        binding.call(set_finished)

    sensitive = lanes.SensitiveLane(binding.loop)
    # (Its thread-sensitive lane is asgiref's, which async calls reach by themselves.)
    run = new_run(recipe, graph, binding, on_finish, sensitive.submit, sensitive_thread=False)
    # A loop started inside a sync task on a pool thread (asyncio.run, async_to_sync)
    # blocks that thread until this run ends: the pool lends one meanwhile.
    with lanes.thread_pool().blocking(nested_loop=True):
        run.start(active_collectors())
        try:
            await asyncio.shield(finished)
        except asyncio.CancelledError as cancelled:
            # Structured: cancel the tasks, and return only once nothing of the weave runs.
            run.cancel(cancelled)
            while not finished.done():
                try:
                    await asyncio.shield(finished)
                except asyncio.CancelledError:
                    continue
            raise
        finally:
            # The tasks that carried thread-sensitive jobs end a step after the job
            # itself: wait for them, so nothing of the weave outlives the block.
            while sensitive.pending:
                await asyncio.wait(set(sensitive.pending))
    return run


def start_background(
    recipe: Recipe,
    planned: Graph | Exception,
    on_done: background.OnDone | None,
    conclude: Callable[[WoveResult], None],
) -> background.Completion:
    """Start the weave and return at once; ``conclude`` then ``on_done`` get the result.

    ``planned`` is the graph, or the error planning raised: in the background that error
    reaches ``on_done`` (and the log) instead of the caller.
    """
    completion = background.Completion(recipe.origin)

    def finish(result: WoveResult) -> None:
        conclude(result)
        background.deliver(result, on_done, completion)

    if isinstance(planned, Exception):
        finish(failed_result(recipe, planned))
        return completion
    graph = planned
    runs: list[Run] = []

    def on_finish() -> None:
        finish(result_of(runs[0]))

    # No caller waits: thread-sensitive tasks share one dedicated thread.
    sensitive = lanes.serial_thread().submit
    try:  # (a configured thread-sensitive policy runs here, and may raise)
        runs.append(new_run(recipe, graph, _side_loop(graph), on_finish, sensitive))
    except Exception as error:
        finish(failed_result(recipe, error))
        return completion
    runs[0].start(active_collectors())
    return completion


def run_detached(recipe: Recipe, on_done: background.OnDone | None) -> int:
    """The body of a detached child: run, log a failure, call ``on_done``; exit status."""
    try:
        result = result_of(run_blocking(recipe, plan_graph(recipe)))
    except Exception as error:
        result = failed_result(recipe, error)
    background.log_failure(result, recipe.origin)
    ok = on_done is None or background.call_on_done(on_done, result, recipe.origin)
    return 0 if ok and result.exception is None else 1


def detached_never_started(
    recipe: Recipe, on_done: background.OnDone | None, error: BaseException
) -> None:
    """In the parent, when its forked child never started the weave (killed by the start
    watch, or dead first): log it, and call ``on_done`` here with the failed result,
    since the child that would have called it never ran."""
    result = failed_result(recipe, error)
    background.log_failure(result, recipe.origin)
    if on_done is not None:
        background.call_on_done(on_done, result, recipe.origin)


def detach_remote(recipe: Recipe, on_done: background.OnDone | None) -> str:
    """Enqueue the weave in its remote environment, where it runs wholly (its tasks run
    locally on the worker, then ``on_done``); its id there. It is planned here first:
    a weave that cannot run (an unresolved name, a cycle) raises at the end of its
    block, and nothing is enqueued."""
    assert recipe.env is not None
    env = environments.get_env(recipe.env)
    there = replace(recipe, specs=environments.local(recipe.specs), env=None)
    build_graph(there.specs, there.data)  # a weave that cannot run raises here, not there
    weave = environments.DetachedWeave(
        origin=recipe.origin,
        run=functools.partial(run_detached, there, on_done),
        env=recipe.env,
        tasks={name: spec.function for name, spec in recipe.specs.items()},
        data=recipe.data,
        on_done=on_done,
    )
    return env.detach(weave)


ErrorHint = Callable[[BaseException, str], "str | None"]
_hints: Registry[ErrorHint] = Registry()


def add_error_hint(hint: ErrorHint) -> Callable[[], None]:
    """Let an integration explain an error a task raised, in a note on the exception.

    ``hint(error, task_name)`` returns a line of advice, or None to stay silent. It is
    asked about the exception a weave re-raises (the first failure), and the exception
    itself is left as it is (PEP 678 note), so ``except`` clauses keep working. The Django
    adapter uses it to say which lane to use when an async task calls the ORM. Returns a
    function that removes the hint.
    """
    return _hints.add(hint)


def result_of(run: Run) -> WoveResult:
    """The run's result, its first exception annotated with where it happened."""
    result = run.result()
    error = result.exception
    if error is not None and run.failed_at is not None:
        task, index = run.failed_at
        item = f" (item {index})" if index is not None else ""
        what = f"task {task!r}" if run.merged is None else f"merge({run.merged})"
        add_note(error, f"wove: raised by {what}{item} in the weave at {run.origin}")
        for hint in _hints.items:
            try:
                advice = hint(error, task)
            except Exception:
                logger.exception("wove: an error hint raised; the task's error is kept as is")
                continue
            if advice:
                add_note(error, advice)
    return result


def failed_result(recipe: Recipe, error: BaseException) -> WoveResult:
    """The result of a weave that failed before any task ran."""
    return WoveResult(
        order=tuple(recipe.specs),
        values=dict(recipe.data),
        errors={},
        timings={},
        exception=error,
        errors_returned=recipe.error_mode == "return",
    )
