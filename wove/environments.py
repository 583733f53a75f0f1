"""Named remote environments, and the routing of tasks to them.

A remote environment runs a task's call somewhere else (a Celery worker) and gives its
result back as an awaitable: the small interface every remote lane implements
(:class:`RemoteEnv`). Environments are registered once per process under a name
(:func:`register_env`); a task chooses one with ``@w.do(env="name")``, a weave with
``weave(env="name")``. :func:`route` turns each remote task's spec into an async spec
whose call awaits the environment, so the scheduler runs it like any async task: on the
event loop, under its timeout and retries, cancelled with the weave, and no thread
waits for it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

from .errors import InvalidOptionError
from .task_spec import NO_OPTIONS, UNSET, TaskSpec


@dataclass(frozen=True, slots=True)
class RemoteCall:
    """One call of a task, to run in a remote environment: ``function(**kwargs)``."""

    task: str
    function: Callable[..., Any]
    kwargs: Mapping[str, Any]
    #: The name the environment is registered under (a worker looks it up by name).
    env: str
    #: The task's ``timeout=`` (the caller stops waiting then; an engine may also drop
    #: the call if it is still queued by that time).
    timeout: float | None
    #: ``file:line`` of the weave the call belongs to.
    origin: str


@dataclass(frozen=True, slots=True)
class DetachedWeave:
    """A whole weave to run in a remote environment: ``run()`` runs it there (its tasks
    locally on the worker, then ``on_done``) and returns an exit status (0: success)."""

    origin: str
    run: Callable[[], int]
    #: The name the environment is registered under.
    env: str
    #: The weave's task functions, keyword values and ``on_done`` (inside ``run``), to
    #: say what a payload carries.
    tasks: Mapping[str, Callable[..., Any]]
    data: Mapping[str, Any]
    on_done: Callable[..., Any] | None = None


@runtime_checkable
class RemoteEnv(Protocol):
    """What a remote environment implements (``wove.contrib.celery.CeleryEnv`` and
    ``wove.contrib.process.ProcessEnv`` do); the contract every environment keeps
    (payloads, results and errors, cancellation, liveness, tracing) is in
    docs/environments.md."""

    async def run(self, call: RemoteCall) -> Any:
        """Run ``call`` remotely and return its value, or raise its own exception; an
        engine failure raises a :class:`~wove.RemoteTaskError` subclass that says whether
        the function may have started. Never block the loop it is awaited on.

        Cancelling the awaiting coroutine must drop the call if it is still queued and
        stop it if it runs (when the engine can); a lost worker must fail the call with
        :class:`~wove.RemoteWorkerLost` in bounded time."""
        ...

    def detach(self, weave: DetachedWeave) -> str:
        """Enqueue ``weave`` to run wholly in this environment; return its id there."""
        ...


_lock = threading.Lock()
_envs: dict[str, RemoteEnv] = {}


def register_env(name: str, env: RemoteEnv) -> Callable[[], None]:
    """Make ``env`` the remote environment called ``name`` in this process.

    Tasks choose it with ``@w.do(env=name)``, weaves with ``weave(env=name)``. Register
    it in every process that runs weaves *and* in the workers (they look it up to verify
    and run what they receive). Registering a name again replaces the environment.
    Returns a function that removes it (if it is still the one registered).
    """
    if not isinstance(name, str) or not name:
        raise InvalidOptionError(
            f"a remote environment's name must be a non-empty string, got {name!r}"
        )
    if not isinstance(env, RemoteEnv):
        raise InvalidOptionError(
            f"register_env({name!r}, ...) expects a remote environment with run() and "
            f"detach() (e.g. wove.contrib.celery.CeleryEnv(app, keys=...)), "
            f"got {type(env).__name__}"
        )
    with _lock:
        _envs[name] = env

    def remove() -> None:
        with _lock:
            if _envs.get(name) is env:
                del _envs[name]

    return remove


def get_env(name: str) -> RemoteEnv:
    """The environment registered as ``name``; a clear error naming the others if none."""
    env = _envs.get(name)
    if env is None:
        known = ", ".join(repr(known) for known in sorted(_envs)) or "none"
        raise InvalidOptionError(
            f"no remote environment named {name!r} is configured in this process "
            f"(configured: {known}); register one with wove.register_env({name!r}, "
            f"CeleryEnv(app, keys=...)), or in Django with WOVE['ENVIRONMENTS']"
        )
    return env


class RemoteTask:
    """A task's function, routed: calling it returns a coroutine awaiting the env."""

    __slots__ = ("env", "function", "name", "origin", "task", "timeout")

    def __init__(self, env: RemoteEnv, name: str, spec: TaskSpec, origin: str) -> None:
        self.env = env
        self.name = name
        self.task = spec.name
        self.function = spec.function
        self.timeout = spec.timeout
        self.origin = origin

    async def __call__(self, **kwargs: Any) -> Any:
        call = RemoteCall(self.task, self.function, kwargs, self.name, self.timeout, self.origin)
        return await self.env.run(call)


def route(
    specs: Mapping[str, TaskSpec], weave_env: str | None, origin: str
) -> Mapping[str, TaskSpec]:
    """The specs with every remote task's call sent to its environment.

    A task's own ``env=`` wins (``env=None`` keeps it here); else the weave's. A routed
    spec is async (awaited on the loop) and keeps its name, parameters, map source and
    options, its ``env`` filled in so traces show the lane.
    """
    routed: dict[str, TaskSpec] | None = None  # copied on the first remote task only
    for name, spec in specs.items():
        options = spec.options
        env = weave_env if options is NO_OPTIONS or options.env is UNSET else options.env
        if env is None:
            continue
        if options.thread_sensitive is True:  # (with its own env= it was refused already)
            raise InvalidOptionError(
                f"task {name!r} is thread_sensitive=True, but weave(env={env!r}) sends it to "
                f"a worker, which has no caller's thread; give it env=None to keep it here"
            )
        if routed is None:
            routed = dict(specs)
        remote = RemoteTask(get_env(env), env, spec, origin)
        routed[name] = spec._replace(
            function=remote, is_async=True, options=replace(options, env=env)
        )
    return specs if routed is None else routed


def local(specs: Mapping[str, TaskSpec]) -> dict[str, TaskSpec]:
    """The specs with every ``env=`` choice dropped: for a weave already on a worker."""
    return {
        name: spec
        if spec.options is NO_OPTIONS or spec.options.env is UNSET
        else spec._replace(options=replace(spec.options, env=UNSET))
        for name, spec in specs.items()
    }
