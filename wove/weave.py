"""``weave(...)``: the block that collects tasks and runs them when it ends."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable
from enum import Enum
from types import TracebackType
from typing import Any, Final

from . import lanes, plan
from .config import settings
from .decorator import Do
from .errors import DefinitionError, InvalidOptionError, WeaveStateError
from .graph import Graph, build_graph, check_data_names
from .result import WoveResult
from .scheduler import LoopBinding, Run
from .task_spec import TaskSpec
from .template import Weave
from .tracing import active_collectors

OnDone = Callable[[WoveResult], Any]


class _State(Enum):
    NEW = "new"
    OPEN = "open"  # inside the block: tasks are being registered
    RUNNING = "running"
    DONE = "done"


class WeaveBlock:
    """What ``with weave() as w`` binds: ``w.do``, then ``w.result``.

    Tasks registered with ``w.do`` inside the block run when the block ends, before
    the statement after it.
    """

    def __init__(
        self,
        parent_weave: type[Weave] | None,
        *,
        debug: bool,
        max_workers: int | None,
        data: dict[str, Any],
        origin: str,
    ) -> None:
        if parent_weave is not None and not (
            isinstance(parent_weave, type) and issubclass(parent_weave, Weave)
        ):
            raise DefinitionError(
                f"weave()'s first argument must be a Weave subclass (the template to load), "
                f"got {parent_weave!r}; pass keywords by name, e.g. weave(user_id=7)"
            )
        if max_workers is not None and (type(max_workers) is not int or max_workers < 1):
            raise InvalidOptionError(
                f"max_workers must be an int >= 1 (or None for the shared pool's limit), "
                f"got {max_workers!r}"
            )
        check_data_names(data)
        self._parent = parent_weave
        self._debug = debug
        self._max_workers = max_workers
        self._data = data
        self._origin = origin
        self._specs: dict[str, TaskSpec] = {}
        self._state = _State.NEW
        self._graph: Graph | None = None
        self._result: WoveResult | None = None
        #: Register a task: ``@w.do``, ``@w.do(**options)``, ``@w.do(items, **options)``.
        self.do: Final = Do(self._register, takes_self=False)

    # --- registration ----------------------------------------------------------------

    def _register(self, spec: TaskSpec, function: Any) -> Any:
        if self._state is not _State.OPEN:
            raise WeaveStateError(
                f"@w.do({spec.name}) was used {self._where()}; register tasks inside the "
                f"`with weave() as w:` block, before it ends"
            )
        replaced = self._specs.get(spec.name)
        self._specs[spec.name] = spec.overriding(replaced) if replaced else spec
        return function

    def _where(self) -> str:
        if self._state is _State.NEW:
            return "before the weave's block was entered"
        return "after the weave's block had ended"

    def _enter(self) -> WeaveBlock:
        if self._state is not _State.NEW:
            raise WeaveStateError(
                f"this weave (created at {self._origin}) was already entered; a weave runs "
                f"once: create a new one with weave() for each block"
            )
        self._state = _State.OPEN
        if self._parent is not None:
            self._specs = self._parent.wove_bound_tasks()
        return self

    def _plan(self) -> Graph:
        self._state = _State.RUNNING
        try:
            graph = build_graph(self._specs, self._data)
        except BaseException:
            self._state = _State.DONE
            raise
        self._graph = graph
        if self._debug:
            plan.report(plan.describe(graph, self._data, self._origin))
        return graph

    def _new_run(self, graph: Graph, loop: LoopBinding | None, on_finish: Callable[[], None]) -> Run:
        pool = lanes.thread_pool()
        submit = pool.submit
        if self._max_workers is not None:
            submit = lanes.Limiter(pool.submit, self._max_workers).submit
        return Run(
            graph,
            self._data,
            submit=submit,
            loop=loop,
            on_finish=on_finish,
            origin=self._origin,
            stuck_after=settings().stuck_after if self._debug else None,
        )

    def _conclude(self, run: Run) -> None:
        self._result = run.result()
        self._state = _State.DONE
        error = self._result.exception
        if error is not None:
            _annotate(error, run, self._origin)
            raise error

    # --- sync ------------------------------------------------------------------------

    def __enter__(self) -> WeaveBlock:
        return self._enter()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:  # the block's own body failed: nothing runs
            self._state = _State.DONE
            return
        graph = self._plan()
        loop = None
        if graph.has_async:
            loop_thread = lanes.loop_for_sync_caller()
            assert loop_thread.thread.ident is not None
            loop = LoopBinding(loop_thread.loop, loop_thread.thread.ident)
        waiter = lanes.CallerWaiter()
        run = self._new_run(graph, loop, waiter.done)
        run.start(active_collectors())
        try:
            waiter.wait()
        except BaseException as interrupted:  # Ctrl-C while waiting: stop, don't wait more
            run.cancel(interrupted)
            self._state = _State.DONE
            raise
        self._conclude(run)

    # --- async -----------------------------------------------------------------------

    async def __aenter__(self) -> WeaveBlock:
        return self._enter()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self._state = _State.DONE
            return
        graph = self._plan()
        loop = asyncio.get_running_loop()
        binding = LoopBinding(loop, threading.get_ident())
        finished = loop.create_future()

        def on_finish() -> None:
            binding.call(lambda: finished.done() or finished.set_result(None))

        run = self._new_run(graph, binding, on_finish)
        run.start(active_collectors())
        try:
            await asyncio.shield(finished)
        except asyncio.CancelledError as cancelled:
            # Structured: cancel the tasks and wait until nothing of the weave runs.
            run.cancel(cancelled)
            while not finished.done():
                try:
                    await asyncio.shield(finished)
                except asyncio.CancelledError:
                    continue
            self._state = _State.DONE
            raise
        self._conclude(run)

    # --- after the block -------------------------------------------------------------

    @property
    def result(self) -> WoveResult:
        """The results, once the block has ended (§4 of the docs)."""
        if self._result is None:
            raise WeaveStateError(
                "w.result is available after the weave's block has ended and its tasks ran"
            )
        return self._result

    @property
    def execution_plan(self) -> dict[str, Any]:
        """Dependencies, dependents, tiers and a topological order of the tasks."""
        if self._graph is None:
            raise WeaveStateError("w.execution_plan is available once the weave's block has ended")
        return plan.execution_plan(self._graph)


def _annotate(error: BaseException, run: Run, origin: str) -> None:
    if run.failed_at is None:
        return
    task, index = run.failed_at
    item = f" (item {index})" if index is not None else ""
    note = f"wove: raised by task {task!r}{item} in the weave at {origin}"
    if note not in getattr(error, "__notes__", ()):
        error.add_note(note)



def weave(
    parent_weave: type[Weave] | None = None,
    /,
    *,
    debug: bool = False,
    max_workers: int | None = None,
    **data: Any,
) -> WeaveBlock:
    """Collect tasks in a ``with`` / ``async with`` block and run them when it ends.

    ``parent_weave``: a :class:`Weave` subclass whose tasks are loaded first.
    ``**data``: values available to tasks as parameters of the same name (and all of
    them as a dict through a parameter named ``data``).
    ``max_workers``: the most sync tasks of this weave running in threads at once.
    ``debug``: write the execution plan to stderr (or the ``wove`` logger) before running,
    and report tasks still running after ``configure(stuck_after=...)`` seconds.
    """
    frame = sys._getframe(1)
    origin = f"{frame.f_code.co_filename}:{frame.f_lineno}"
    return WeaveBlock(parent_weave, debug=debug, max_workers=max_workers, data=data, origin=origin)
