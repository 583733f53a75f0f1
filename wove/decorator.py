"""The one ``do`` decorator shape shared by ``w.do`` and ``Weave.do``.

Forms: ``@do``, ``@do(**options)``, ``@do(iterable, **options)`` and
``@do("task_or_keyword_name", **options)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar, overload

from .task_spec import UNSET, TaskOptions, TaskSpec, _Unset, make_spec

F = TypeVar("F", bound=Callable[..., Any])


class Do:
    """A ``do`` decorator bound to what it registers a spec with."""

    __slots__ = ("_register", "_takes_self")

    def __init__(self, register: Callable[[TaskSpec, Any], Any], *, takes_self: bool) -> None:
        self._register = register
        self._takes_self = takes_self

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
    ) -> Any:
        options = TaskOptions(
            retries=retries, timeout=timeout, workers=workers, limit_per_minute=limit_per_minute
        )
        if callable(source) and not isinstance(source, str):
            return self._decorate(source, None, options)  # bare @do (options are all UNSET)
        # Checked here, at decoration, so a mistake points at the decorator line.
        make_spec(_probe, source, options)

        def decorator(function: F) -> F:
            return self._decorate(function, source, options)  # type: ignore[no-any-return]

        return decorator

    def _decorate(self, function: Any, source: Any, options: TaskOptions) -> Any:
        spec = make_spec(function, source, options, takes_self=self._takes_self)
        return self._register(spec, function)


def _probe(item: Any) -> None:
    """Stand-in function used to validate options before the real one arrives."""
