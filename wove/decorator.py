"""The one ``do`` decorator shape shared by ``w.do`` and ``Weave.do``.

Forms: ``@do``, ``@do(**options)``, ``@do(iterable, **options)`` and
``@do("task_or_keyword_name", **options)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import FunctionType
from typing import Any, TypeVar, overload

from .errors import DefinitionError, InvalidOptionError
from .task_spec import (
    NO_OPTIONS,
    UNSET,
    TaskOptions,
    TaskSpec,
    _Unset,
    check_options,
    known_function_spec,
    make_spec,
    map_source_of,
)

F = TypeVar("F", bound=Callable[..., Any])


class Do:
    """A ``do`` decorator bound to what it registers a spec with."""

    __slots__ = ("_register", "_takes_self")

    def __init__(self, register: Callable[[TaskSpec, Any], Any], *, takes_self: bool) -> None:
        self._register = register
        self._takes_self = takes_self

    def _registered(self, spec: TaskSpec, function: Any) -> Any:
        if spec.is_async and spec.thread_sensitive:
            raise InvalidOptionError(
                f"thread_sensitive=True on async task {spec.name!r}: it runs on the event "
                f"loop; the option places sync tasks on the caller's thread"
            )
        if spec.name == "<lambda>":
            raise DefinitionError(
                "@do was given a lambda, which has no name to stand for its result (a task's "
                "name must be a Python identifier); define the task with `def name(...):`, "
                "the name being what its result is called"
            )
        return self._register(spec, function)

    def close(self, register: Callable[[TaskSpec, Any], Any]) -> None:
        """Send later registrations to ``register`` (which refuses them) and let go of
        what this decorator registered with."""
        self._register = register

    @overload
    def __call__(self, function: F, /) -> F: ...

    @overload
    def __call__(
        self,
        source: Iterable[Any] | str | None = None,
        /,
        *,
        retries: int | _Unset = UNSET,
        timeout: float | _Unset | None = UNSET,
        workers: int | _Unset | None = UNSET,
        limit_per_minute: float | _Unset | None = UNSET,
        thread_sensitive: bool | _Unset | None = UNSET,
        env: str | _Unset | None = UNSET,
        idempotent: bool | _Unset = UNSET,
    ) -> Callable[[F], F]: ...

    def __call__(
        self,
        source: Any = None,
        /,
        *,
        retries: int | _Unset = UNSET,
        timeout: float | _Unset | None = UNSET,
        workers: int | _Unset | None = UNSET,
        limit_per_minute: float | _Unset | None = UNSET,
        thread_sensitive: bool | _Unset | None = UNSET,
        env: str | _Unset | None = UNSET,
        idempotent: bool | _Unset = UNSET,
    ) -> Any:
        if type(source) is FunctionType:  # bare @do on a `def`: the hot path
            spec = known_function_spec(source, self._takes_self)
            if spec is None:
                spec = make_spec(source, None, NO_OPTIONS, self._takes_self)
            return self._registered(spec, source)
        if callable(source) and not isinstance(source, str):  # bare @do: no options given
            return self._registered(make_spec(source, None, NO_OPTIONS, self._takes_self), source)
        # Checked here, at the decorator line, so a mistake points at it.
        options = _options(
            (retries, timeout, workers, limit_per_minute, thread_sensitive, env, idempotent),
            source is not None,
        )
        map_source = None if source is None else map_source_of(source)

        def decorator(function: F) -> F:
            spec = make_spec(function, None, NO_OPTIONS, takes_self=self._takes_self)
            spec = spec._replace(map_source=map_source, options=options)
            return self._registered(spec, function)  # type: ignore[no-any-return]

        return decorator


_OPTIONS: dict[tuple[Any, ...], TaskOptions] = {}


def _options(values: tuple[Any, ...], mapped: bool) -> TaskOptions:
    """Validated options (``values`` in :class:`TaskOptions` field order), one shared
    object per distinct set (a block's decorators run on every run of it)."""
    if all(value is UNSET for value in values):
        return NO_OPTIONS  # the shared object, so `options is NO_OPTIONS` finds lean paths
    # Types too: 1 == True and 1 == 1.0, but they are not the same option value.
    key = (*values, *map(type, values), mapped)
    try:
        cached = _OPTIONS.get(key)
    except TypeError:  # an unhashable value: let validation say what is wrong with it
        cached = None
    if cached is None:
        cached = TaskOptions(*values)
        check_options(cached, mapped=mapped)
        cached = cached.normalized()
        if len(_OPTIONS) < 1024:
            _OPTIONS[key] = cached
    return cached
