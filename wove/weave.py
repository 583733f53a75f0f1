"""``weave(...)``: the block that collects tasks and runs them when it ends."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from enum import Enum
from types import TracebackType
from typing import Any, Final, Literal

from . import detach, detached_followers, execution, fork_server, plan, runtime
from . import process_defaults as defaults
from .background import Completion, OnDone
from .decorator import Do
from .engine import Run
from .errors import DefinitionError, InvalidOptionError, WeaveStateError
from .graph import Graph, check_data_names
from .result import WoveResult
from .task_spec import TaskSpec, check_env
from .template import Weave

ForkMode = bool | Literal["fork", "spawn"]


class _State(Enum):
    NEW = "new"
    OPEN = "open"  # inside the block: tasks are being registered
    RUNNING = "running"
    DONE = "done"


class WeaveBlock:
    """What ``with weave() as w`` binds: ``w.do`` inside the block, ``w.result`` after.

    Tasks registered with ``w.do`` run when the block ends, before the statement after
    it (or in the background, with ``background=True``).
    """

    def __init__(
        self,
        parent_weave: type[Weave] | None,
        *,
        debug: bool,
        max_workers: int | None,
        background: bool,
        fork: ForkMode,
        on_done: OnDone | None,
        thread_sensitive: bool | None,
        env: str | None,
        data: dict[str, Any],
        origin: str,
        max_pending: int | None = None,
        error_mode: defaults.ErrorMode | None = None,
    ) -> None:
        _check_arguments(parent_weave, max_workers, background, fork, on_done, env)
        defaults.check_weave_limit("weave()", "max_pending", max_pending)
        if error_mode is not None:
            defaults.check_error_mode(error_mode)
        _check_flags(debug=debug, background=background)
        if not (thread_sensitive is None or isinstance(thread_sensitive, bool)):
            raise InvalidOptionError(
                f"thread_sensitive must be True, False or None, got {thread_sensitive!r}"
            )
        check_data_names(data)
        self._parent = parent_weave
        self._debug = debug
        self._max_workers = max_workers
        self._max_pending = max_pending
        self._error_mode = error_mode
        self._background = background
        self._fork = fork
        self._on_done = on_done
        self._thread_sensitive = thread_sensitive
        self._env = env
        self._data = data
        self._origin = origin
        self._merged: str | None = None  # see weave_at()
        self._specs: dict[str, TaskSpec] = {}
        self._state = _State.NEW
        self._graph: Graph | None = None
        self._result: WoveResult | None = None
        self._completion: Completion | None = None
        #: The pid of the detached child process, for ``background=True, fork=...``.
        self.pid: int | None = None
        #: The weave's id in its remote environment, for ``background=True, env=...``
        #: (a Celery task id).
        self.remote_id: str | None = None
        #: Register a task: ``@w.do``, ``@w.do(**options)``, ``@w.do(items, **options)``.
        self.do: Final = Do(self._register, takes_self=False)

    # --- registration ----------------------------------------------------------------

    def _register(self, spec: TaskSpec, function: Any) -> Any:
        if self._state is not _State.OPEN:
            when = (
                "before its block was entered"
                if self._state is _State.NEW
                else "after its block ended"
            )
            raise WeaveStateError(
                f"@w.do was used on {spec.name!r} {when}; register tasks inside the "
                f"`with weave() as w:` block"
            )
        replaced = self._specs.get(spec.name)
        self._specs[spec.name] = spec.overriding(replaced) if replaced else spec
        return function

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

    def _recipe(self) -> execution.Recipe:
        self._state = _State.RUNNING
        self.do.close(_registered_too_late)
        # A weave's own value wins; wove.config(...) fills what it did not give.
        settled = defaults.defaults()
        return execution.Recipe(
            specs=defaults.with_task_defaults(self._specs),
            data=self._data,
            debug=self._debug,
            max_workers=settled.max_workers if self._max_workers is None else self._max_workers,
            origin=self._origin,
            thread_sensitive=self._thread_sensitive,
            env=self._env,
            max_pending=settled.max_pending if self._max_pending is None else self._max_pending,
            error_mode=settled.error_mode if self._error_mode is None else self._error_mode,
            merged=self._merged,
        )

    def _plan(self, recipe: execution.Recipe) -> Graph:
        try:
            self._graph = execution.plan_graph(recipe)
        except BaseException:
            self._state = _State.DONE
            raise
        return self._graph

    def _conclude(self, result: WoveResult) -> None:
        self._result = result
        self._state = _State.DONE

    def _finish(self, run: Run, error_mode: str) -> None:
        """Keep the result; re-raise the first failure, unchanged, from the block (with
        ``error_mode="return"``, the failure stays on the result, unless it is a
        KeyboardInterrupt or SystemExit: not an error to keep but a request to stop, it
        still reaches the caller)."""
        self._conclude(execution.result_of(run))
        assert self._result is not None
        failure = self._result.exception
        if failure is not None and (error_mode == "raise" or not isinstance(failure, Exception)):
            raise failure

    def _body_failed(self) -> None:
        self._state = _State.DONE  # the block's own exception propagates; nothing runs
        self.do.close(_registered_too_late)

    # --- sync ------------------------------------------------------------------------

    def __enter__(self) -> WeaveBlock:
        return self._enter()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self._body_failed()
        elif self._background:
            self._detach()
        else:
            self._run_here()

    def _run_here(self) -> None:
        recipe = self._recipe()
        graph = self._plan(recipe)
        try:
            run = execution.run_blocking(recipe, graph)
        finally:
            self._state = _State.DONE
        self._finish(run, recipe.error_mode)

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
            self._body_failed()
        elif self._background:
            self._detach()
        else:
            await self._run_awaiting()

    async def _run_awaiting(self) -> None:
        recipe = self._recipe()
        graph = self._plan(recipe)
        try:
            run = await execution.run_awaiting(recipe, graph)
        finally:
            self._state = _State.DONE
        self._finish(run, recipe.error_mode)

    # --- background ------------------------------------------------------------------

    def _detach(self) -> None:
        recipe = self._recipe()
        if recipe.env is not None:  # enqueued as one unit; it runs wholly on a worker
            self._state = _State.DONE
            self.remote_id = execution.detach_remote(recipe, self._on_done)
            return
        if not self._fork:
            planned: Graph | Exception
            try:
                planned = self._graph = execution.plan_graph(recipe)
            except Exception as error:
                planned = error
            self._completion = execution.start_background(
                recipe, planned, self._on_done, self._conclude
            )
            return
        mode = self._fork
        if mode is True:
            mode = "fork" if detach.fork_available() else "spawn"
        self._state = _State.DONE
        server = fork_server.running_fork_server() if mode == "fork" else None
        # A fork server's child gets its work pickled, as a spawned one does: its
        # followers are made for that.
        followed = detached_followers.children(
            recipe.origin, "spawn" if server is not None else mode
        )
        if mode == "fork":
            on_done = self._on_done
            body = functools.partial(
                detached_followers.run_followed,
                followed,
                functools.partial(execution.run_detached, recipe, on_done),
            )
            if server is not None:  # forked by a process that never had other threads
                self.pid = server.submit(body)
                return
            self.pid = detach.fork_detached(
                body,
                start_timeout=runtime.settings().fork_start_timeout,
                not_started=functools.partial(execution.detached_never_started, recipe, on_done),
            )
        else:
            self.pid = detach.spawn_detached(detach.dumps((recipe, self._on_done, followed)))

    @property
    def done(self) -> bool:
        """Whether the weave (and a background weave's ``on_done``) has finished.

        A weave detached into its own process cannot be observed from here: reading
        ``done`` (or calling ``wait``) raises :class:`WeaveStateError`.
        """
        self._refuse_detached("w.done")
        if self._completion is not None:
            return self._completion.is_set
        return self._result is not None

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a background weave and its ``on_done``; False if still running after
        ``timeout`` seconds. Returns at once for a weave that already ran."""
        self._refuse_detached("w.wait()")
        if self._completion is None:
            return self._result is not None
        return self._completion.wait(timeout)

    def _refuse_detached(self, what: str) -> None:
        if self.remote_id is not None:
            raise WeaveStateError(
                f"{what}: this weave runs in remote environment {self._env!r} (id "
                f"{self.remote_id}), which this process does not follow; act on its end "
                f"with on_done=, which runs there"
            )
        if self.pid is not None:
            raise WeaveStateError(
                f"{what}: this weave runs in a detached process (pid {self.pid}) that this "
                f"process does not follow; act on its end with on_done=, which runs there"
            )

    # --- after the block -------------------------------------------------------------

    @property
    def result(self) -> WoveResult:
        """The results, once the block has ended (see the docs: results and errors)."""
        if self._result is None:
            if self.remote_id is not None:
                raise WeaveStateError(
                    f"this weave ran in remote environment {self._env!r} (id "
                    f"{self.remote_id}); its result is passed to on_done there, not to "
                    f"this process"
                )
            if self.pid is not None:
                raise WeaveStateError(
                    f"this weave ran in a detached process (pid {self.pid}); its result is "
                    f"passed to on_done there, not to this process"
                )
            if self._completion is not None:
                raise WeaveStateError(
                    "this background weave has not finished; use w.wait(timeout) or on_done="
                )
            raise WeaveStateError(
                "w.result is available after the weave's block has ended and its tasks ran"
            )
        return self._result

    @property
    def execution_plan(self) -> dict[str, Any]:
        """Dependencies, dependents, tiers and a topological order of the tasks."""
        if self._graph is None:
            raise WeaveStateError(
                "w.execution_plan is available once the weave's block has ended (and, for a "
                "background weave, once it was planned)"
            )
        return plan.execution_plan(self._graph)


def _registered_too_late(spec: TaskSpec, function: Any) -> Any:
    # Module-level, so a finished block's `do` holds no reference back to the block.
    raise WeaveStateError(
        f"@w.do was used on {spec.name!r} after its block ended; register tasks inside the "
        f"`with weave() as w:` block"
    )


def _check_arguments(
    parent_weave: object,
    max_workers: object,
    background: bool,
    fork: ForkMode,
    on_done: object,
    env: object,
) -> None:
    if parent_weave is not None and not (
        isinstance(parent_weave, type) and issubclass(parent_weave, Weave)
    ):
        raise DefinitionError(
            f"weave()'s first argument must be a Weave subclass (the template to load), "
            f"got {parent_weave!r}; pass keywords by name, e.g. weave(user_id=7)"
        )
    defaults.check_weave_limit("weave()", "max_workers", max_workers)
    if fork not in (False, True, "fork", "spawn"):
        raise InvalidOptionError(f"fork must be True, False, 'fork' or 'spawn', got {fork!r}")
    if fork and not background:
        raise InvalidOptionError(
            "fork= detaches a background weave into its own process; pass background=True too"
        )
    if fork == "fork" and not detach.fork_available():
        raise InvalidOptionError(
            "fork='fork' needs os.fork, which this platform lacks; use fork=True or 'spawn'"
        )
    if on_done is not None and not background:
        raise InvalidOptionError(
            "on_done= is called when a background weave finishes; pass background=True, or "
            "use w.result after the block of a foreground weave"
        )
    check_env(env)
    if env is not None and fork:
        raise InvalidOptionError(
            f"fork= and env={env!r} both say where a background weave runs; a weave with "
            f"env= runs on a worker of that environment: drop fork="
        )
    if on_done is not None and not callable(on_done):
        raise DefinitionError(f"on_done must be callable, got {type(on_done).__name__}")


def _check_flags(**flags: object) -> None:
    # `debug="no"` would be truthy and `background=1` silently a background weave.
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise InvalidOptionError(
                f"weave({name}=...) must be True or False, got {value!r}; "
                f"pass {name}=True or {name}=False"
            )


def weave(
    parent_weave: type[Weave] | None = None,
    *,
    debug: bool = False,
    max_workers: int | None = None,
    background: bool = False,
    fork: ForkMode = False,
    on_done: OnDone | None = None,
    thread_sensitive: bool | None = None,
    env: str | None = None,
    max_pending: int | None = None,
    error_mode: defaults.ErrorMode | None = None,
    **data: Any,
) -> WeaveBlock:
    """Collect tasks in a ``with`` / ``async with`` block and run them when it ends.

    ``parent_weave``: a :class:`Weave` subclass whose tasks are loaded first.
    ``**data``: values available to tasks as parameters of the same name (and all of
    them as a dict through a parameter named ``data``).
    ``max_workers``: the most sync tasks of this weave running in threads at once.
    ``max_pending``: the most items one mapped task may have; a mapped task with more
    fails with :class:`wove.MaxPendingError` before any of its items starts.
    ``error_mode``: ``"raise"`` (the default) re-raises the first failure from the
    block; ``"return"`` does not: reading a failed task gives its exception.
    (``None`` for these three: as ``wove.config(...)`` says.)
    ``debug``: write the execution plan to stderr (or the ``wove`` logger) before running,
    and report tasks still running after ``configure(stuck_after=...)`` seconds.
    ``background``: return from the block at once; the weave runs in the background and
    ``on_done(result)`` is called when it finishes. ``fork=True`` runs it in a detached
    child process instead (``"fork"`` or ``"spawn"`` to choose how).
    ``thread_sensitive``: where this weave's sync tasks run unless they choose with
    ``@w.do(thread_sensitive=...)``: ``True`` on the caller's thread (sharing its database
    connection and transaction, one at a time), ``False`` on the shared pool, ``None``
    (default) as ``configure(thread_sensitive=...)`` says.
    ``env``: the remote environment (see :func:`wove.register_env`) that this weave's
    tasks run in unless they choose with ``@w.do(env=...)`` (``env=None`` keeps a task
    here). With ``background=True``, the whole weave is enqueued there as one unit and
    runs on a worker, ``on_done`` included.
    """
    frame = sys._getframe(1)
    return WeaveBlock(
        parent_weave,
        debug=debug,
        max_workers=max_workers,
        background=background,
        fork=fork,
        on_done=on_done,
        thread_sensitive=thread_sensitive,
        env=env,
        data=data,
        origin=f"{frame.f_code.co_filename}:{frame.f_lineno}",
        max_pending=max_pending,
        error_mode=error_mode,
    )


def weave_at(origin: str, *, merged: str | None = None) -> Callable[..., WeaveBlock]:
    """``weave`` naming its weave after ``origin`` (``"file:line"``) instead of the line
    that calls it: for integrations that start a weave on a user's behalf (``detach()``),
    so traces, log lines and spans point at the user's code, not at the integration's.
    ``merged``: the function's name when the weave runs one ``merge()`` call, so that
    its errors name that call and say to change its options there, not on ``@w.do``."""

    def weave_there(*args: Any, **kwargs: Any) -> WeaveBlock:
        block = weave(*args, **kwargs)
        block._origin = origin
        block._merged = merged
        return block

    return weave_there
