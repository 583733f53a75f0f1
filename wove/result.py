"""Outcomes of a run -> :class:`WoveResult`, the object behind ``w.result``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

from .errors import TaskCancelled, UnknownNameError


class WoveResult:
    """Task values by name, in definition order, with how the run went.

    ``result.name`` and ``result["name"]`` give a task's (or keyword's) value; reading a
    task that failed raises its exception (returns it, for a weave with
    ``error_mode="return"``), one that was cancelled raises :class:`wove.TaskCancelled`.
    Iterating yields task values in definition order.
    """

    __slots__ = (
        "_errors",
        "_errors_returned",
        "_order",
        "_values",
        "cancelled",
        "exception",
        "timings",
    )

    def __init__(
        self,
        *,
        order: tuple[str, ...],
        values: Mapping[str, Any],
        errors: Mapping[str, BaseException],
        timings: Mapping[str, float],
        exception: BaseException | None,
        errors_returned: bool = False,
    ) -> None:
        self._order = order
        self._errors_returned = errors_returned
        self._values = values
        self._errors = errors
        #: task name -> seconds it ran (first start to last end, for a mapped task)
        self.timings: Mapping[str, float] = MappingProxyType(dict(timings))
        #: the first exception raised by a task, or None
        self.exception: BaseException | None = exception
        #: names of the tasks that were cancelled (or never started) because of a failure
        self.cancelled: frozenset[str] = frozenset(
            name for name in order if name not in values and name not in errors
        )

    @property
    def final(self) -> Any:
        """The value of the last task in definition order, or None without tasks."""
        return self[self._order[-1]] if self._order else None

    def __getitem__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            pass
        if name in self._errors:
            if self._errors_returned:
                return self._errors[name]
            raise self._errors[name]
        if name in self._order:
            raise TaskCancelled(name, self.exception)
        raise UnknownNameError(
            f"no task or keyword named {name!r} in this weave; names: {self._names()}"
        )

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self[name]

    def __contains__(self, name: object) -> bool:
        return name in self._values or name in self._order

    def __iter__(self) -> Iterator[Any]:
        return (self[name] for name in self._order)

    def __len__(self) -> int:
        return len(self._order)

    def __repr__(self) -> str:
        states = ", ".join(f"{name}={self._state(name)}" for name in self._order)
        return f"<WoveResult {states}>"

    def _state(self, name: str) -> str:
        if name in self._values:
            return "ok"
        return "failed" if name in self._errors else "cancelled"

    def _names(self) -> str:
        return ", ".join(dict.fromkeys([*self._order, *self._values])) or "none"


#: Names a task or keyword may not take, because ``w.result.<name>`` means something else.
RESERVED_NAMES = frozenset(name for name in dir(WoveResult) if not name.startswith("_"))
