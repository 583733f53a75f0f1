"""Process-wide defaults of task and weave options: ``wove.config(...)``.

A task's own option, or a weave's own argument, always wins; a default fills only what
was not given. ``wove.config`` also accepts the runtime settings of
:func:`wove.configure` and passes them on, so it is the one call to use.
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Final, Literal

from . import runtime
from .errors import InvalidOptionError
from .task_spec import UNSET, TaskOptions, TaskSpec, check_options

ErrorMode = Literal["raise", "return"]
ERROR_MODES: Final = ("raise", "return")


@dataclass(frozen=True, slots=True)
class Defaults:
    """What ``wove.config(...)`` set; ``None`` (``0`` for ``retries``, ``"raise"`` for
    ``error_mode``) is no default."""

    #: Attempts after the first, for tasks that do not say ``retries=``.
    retries: int = 0
    #: Seconds each attempt may take, for tasks that do not say ``timeout=``.
    timeout: float | None = None
    #: Items of a mapped task running at once, for mapped tasks that do not say.
    workers: int | None = None
    #: Item starts per minute, for mapped tasks that do not say ``limit_per_minute=``.
    limit_per_minute: float | None = None
    #: ``weave(max_workers=...)`` for weaves that do not say.
    max_workers: int | None = None
    #: The most items one mapped task may have, for weaves that do not say.
    max_pending: int | None = None
    #: ``weave(error_mode=...)`` for weaves that do not say.
    error_mode: ErrorMode = "raise"

    @property
    def task_options(self) -> TaskOptions:
        """The task options these defaults give (``UNSET`` where there is none)."""
        return TaskOptions(
            retries=self.retries or UNSET,
            timeout=UNSET if self.timeout is None else self.timeout,
            workers=UNSET if self.workers is None else self.workers,
            limit_per_minute=UNSET if self.limit_per_minute is None else self.limit_per_minute,
        )


_TASK_KEYS: Final = ("retries", "timeout", "workers", "limit_per_minute")
_RUNTIME_KEYS: Final = (
    "max_threads",
    "stuck_after",
    "detached_output",
    "thread_sensitive",
    "fork_start_timeout",
)
_KEYS: Final = (*(f.name for f in fields(Defaults)), *_RUNTIME_KEYS)
_NO_DEFAULT: Final[Mapping[str, Any]] = {
    name: getattr(Defaults(), name) for name in (f.name for f in fields(Defaults))
}

_defaults = Defaults()
_task_options: TaskOptions | None = None  # None: no task default, nothing to fill
_lock = threading.Lock()


def defaults() -> Defaults:
    """The process-wide defaults now in force."""
    return _defaults


def config(**options: Any) -> Defaults:
    """Set process-wide defaults; options not passed keep their value.

    Task defaults: ``retries``, ``timeout``, ``workers`` and ``limit_per_minute`` apply
    to every task (``workers`` and ``limit_per_minute`` to mapped tasks) that does not
    give the option itself. Weave defaults: ``max_workers``, ``max_pending`` and
    ``error_mode`` apply to every ``weave()`` that does not pass them. ``None`` removes
    a default (for ``retries`` and ``error_mode`` it is the same as ``retries=0`` and
    ``error_mode="raise"``). The runtime settings of
    :func:`wove.configure` (``max_threads``, ``stuck_after``, ``detached_output``,
    ``thread_sensitive``, ``fork_start_timeout``) are accepted too and passed on.
    Returns the defaults now in force; an unknown option raises
    :class:`wove.InvalidOptionError` and changes nothing.
    """
    global _defaults, _task_options
    for key in options:
        if key not in _KEYS:
            close = difflib.get_close_matches(key, _KEYS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise InvalidOptionError(
                f"wove.config() has no option {key!r}{hint} (options: {', '.join(_KEYS)})"
            )
    # None removes a default: for retries and error_mode that is their no-default value.
    ours = {
        key: _NO_DEFAULT[key] if value is None else value
        for key, value in options.items()
        if key not in _RUNTIME_KEYS
    }
    passed_on = {key: value for key, value in options.items() if key in _RUNTIME_KEYS}
    # Read, check and publish under one lock: two threads configuring at once each
    # build on the other's update instead of one overwriting it.
    with _lock:
        updated = replace(_defaults, **ours)
        _check(updated)
        if passed_on:
            runtime.configure(**passed_on)
        task_options = updated.task_options
        _task_options = None if task_options == TaskOptions() else task_options
        _defaults = updated
    return updated


def _check(candidate: Defaults) -> None:
    check_options(candidate.task_options, mapped=True)
    for name in _WEAVE_LIMITS:
        check_weave_limit("wove.config()", name, getattr(candidate, name))
    check_error_mode(candidate.error_mode)


# What each weave limit means, and what None means for it.
_WEAVE_LIMITS: Final = {
    "max_workers": (
        "the most sync tasks of one weave running in threads at once",
        "the shared pool's limit",
    ),
    "max_pending": ("the most items one mapped task may have", "no limit"),
}


def check_weave_limit(where: str, name: str, value: object) -> None:
    """Refuse a ``max_workers`` or ``max_pending`` (``name``) given to ``where`` that is
    neither an int >= 1 nor None; the one check ``weave()`` and ``wove.config()`` share."""
    if value is None or (type(value) is int and value >= 1):
        return
    meaning, none = _WEAVE_LIMITS[name]
    raise InvalidOptionError(
        f"{where} got {name}={value!r}; {name} must be an int >= 1 ({meaning}), or None "
        f"for {none}: pass e.g. {name}=8, or leave it out"
    )


def check_error_mode(error_mode: object) -> None:
    """Refuse an ``error_mode`` other than "raise" or "return"."""
    if error_mode not in ERROR_MODES:
        raise InvalidOptionError(
            f"error_mode must be one of 'raise' (the first failure is raised from the "
            f"block) or 'return' (failed tasks' results are their exceptions), got "
            f"{error_mode!r}"
        )


def shapes_merge() -> bool:
    """Whether a default changes how ``merge()`` runs its calls: a task option, or a
    weave's ``max_workers`` or ``max_pending`` (merged calls then run as a weave of
    their own, which these defaults apply to)."""
    settled = _defaults
    return (
        _task_options is not None
        or settled.max_workers is not None
        or settled.max_pending is not None
    )


def with_task_defaults(specs: Mapping[str, TaskSpec]) -> Mapping[str, TaskSpec]:
    """``specs`` with the task defaults filling the options each task did not give."""
    base = _task_options
    if base is None:
        return specs
    unmapped = replace(base, workers=UNSET, limit_per_minute=UNSET)
    return {
        name: spec._replace(
            options=spec.options.inherit(base if spec.map_source is not None else unmapped)
        )
        for name, spec in specs.items()
    }
