"""``@w.do`` / ``Weave.do`` -> :class:`TaskSpec`: what one task is, frozen.

A spec knows the task's name, the callable, whether it is async, the parameter names it
wants injected, its map source and its options. It knows nothing about other tasks: the
graph module resolves names.
"""

from __future__ import annotations

import functools
import inspect
import keyword
import math
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import astuple, dataclass, field, replace
from enum import Enum
from types import CodeType, FunctionType
from typing import Any, Final, NamedTuple

from .errors import DefinitionError, InvalidOptionError


class _Unset(Enum):
    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


#: Sentinel for "option not given", distinct from an explicit ``None`` or ``0``, so an
#: override inherits what it does not say and keeps what it says.
UNSET: Final = _Unset.UNSET


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """The keyword options of ``@w.do``; fields left ``UNSET`` were not given."""

    retries: int | _Unset = UNSET
    timeout: float | _Unset | None = UNSET
    workers: int | _Unset | None = UNSET
    limit_per_minute: float | _Unset | None = UNSET
    thread_sensitive: bool | _Unset | None = UNSET
    #: The remote environment the task runs in (``None``: here, whatever the weave says).
    env: str | _Unset | None = UNSET
    #: Running the task twice is harmless: ``retries=`` may resend a remote call whose
    #: function may have run (its worker lost, its result lost).
    idempotent: bool | _Unset = UNSET

    def normalized(self) -> TaskOptions:
        """``timeout=float('inf')`` is no timeout: the same as ``timeout=None``."""
        if self.timeout == math.inf:
            return replace(self, timeout=None)
        return self

    def inherit(self, base: TaskOptions) -> TaskOptions:
        """These options, with every field not given here taken from ``base``."""
        return TaskOptions(
            *(
                mine if mine is not UNSET else theirs
                for mine, theirs in zip(astuple(self), astuple(base), strict=True)
            )
        )


@dataclass(frozen=True, slots=True)
class MapSource:
    """Where a mapped task's items come from: a literal iterable or a named value."""

    name: str | None = None
    iterable: Iterable[Any] | None = field(default=None, compare=False)

    def describe(self) -> str:
        return repr(self.name) if self.name is not None else type(self.iterable).__name__


@dataclass(frozen=True, slots=True, eq=False)
class Signature:
    """The injectable shape of a callable, computed once per code object.

    Compared by identity: one object per code object, so it is a cheap cache key.
    """

    params: tuple[str, ...]
    with_default: frozenset[str]
    is_async: bool


class TaskSpec(NamedTuple):
    """One task, frozen. A named tuple rather than a frozen dataclass: one is built per
    decorated function on every run of a block, and a tuple is built in C, ten times
    faster than a frozen dataclass's ``object.__setattr__`` per field."""

    name: str
    function: Callable[..., Any]
    is_async: bool
    signature: Signature
    map_source: MapSource | None
    options: TaskOptions
    takes_self: bool = False

    @property
    def params(self) -> tuple[str, ...]:
        return self.signature.params

    @property
    def retries(self) -> int:
        return 0 if self.options.retries is UNSET else self.options.retries

    @property
    def timeout(self) -> float | None:
        return None if self.options.timeout is UNSET else self.options.timeout

    @property
    def workers(self) -> int | None:
        return None if self.options.workers is UNSET else self.options.workers

    @property
    def thread_sensitive(self) -> bool | None:
        """True: on the caller's thread; False: on the pool; None: the weave decides."""
        value = self.options.thread_sensitive
        return None if value is UNSET else value

    @property
    def env(self) -> str | None:
        """The remote environment this task runs in; None: here (or the weave decides,
        before routing: see :func:`wove.environments.route`)."""
        env = self.options.env
        return None if env is UNSET else env

    @property
    def idempotent(self) -> bool:
        return self.options.idempotent is True

    @property
    def limit_per_minute(self) -> float | None:
        lpm = self.options.limit_per_minute
        return None if lpm is UNSET else lpm

    def overriding(self, replaced: TaskSpec) -> TaskSpec:
        """This spec as a redefinition of ``replaced``: options not given are inherited.

        The map source is part of the function's shape (its signature may change in an
        override), so it is not inherited; nor are mapping-only options on a task that
        is no longer mapped.
        """
        options = self.options.inherit(replaced.options)
        if self.map_source is None:
            options = replace(options, workers=UNSET, limit_per_minute=UNSET)
        return self._replace(options=options)

    def bound_to(self, instance: object) -> TaskSpec:
        """A class task with ``self`` bound to ``instance``."""
        if not self.takes_self:
            return self
        method = self.function.__get__(instance, type(instance))
        return self._replace(function=method, takes_self=False)


#: The options of a bare ``@do``: shared, so the common case allocates nothing.
NO_OPTIONS: Final = TaskOptions()
_SIGNATURES: dict[CodeType, Signature] = {}
_METHOD_SIGNATURES: dict[CodeType, Signature] = {}  # Weave class tasks (with self)
_SIGNATURE_CACHE_SIZE: Final = 4096


def known_function_spec(function: FunctionType, takes_self: bool) -> TaskSpec | None:
    """The spec of a bare ``@do`` on a ``def`` whose code was read before, else None.

    The common case, on the hot path of every run of a block: nothing is left to
    validate once the code object's signature is cached.
    """
    signature = (_METHOD_SIGNATURES if takes_self else _SIGNATURES).get(function.__code__)
    if signature is None or function.__dict__:
        return None
    # tuple.__new__ directly: the named tuple's own __new__ is a Python function.
    fields = (function.__name__, function, signature.is_async, signature, None, NO_OPTIONS)
    return tuple.__new__(TaskSpec, (*fields, takes_self))


def make_spec(
    function: object,
    map_source: object | None,
    options: TaskOptions,
    takes_self: bool = False,
) -> TaskSpec:
    """Validate a decorated callable and its options, and freeze them into a spec."""
    _refuse_coroutine(function)
    if not callable(function):
        raise DefinitionError(
            f"@do expects a function or callable object, got {type(function).__name__} "
            f"{function!r}; decorate a `def` or `async def`"
        )
    if options is not NO_OPTIONS:
        check_options(options, mapped=map_source is not None)
    signature = _signature_of(function, takes_self)
    return TaskSpec(
        _name_of(function),
        function,
        signature.is_async,
        signature,
        None if map_source is None else map_source_of(map_source),
        options,
        takes_self,
    )


def _refuse_coroutine(value: object) -> None:
    if inspect.iscoroutine(value):
        raise DefinitionError(
            f"@do was given a coroutine object ({value!r}), not a function; "
            f"decorate the `async def` itself instead of calling it"
        )


def map_source_of(source: object) -> MapSource:
    _refuse_coroutine(source)
    if isinstance(source, str):
        return MapSource(name=source)
    if isinstance(source, Iterable) or hasattr(source, "__getitem__"):
        return MapSource(iterable=source)  # type: ignore[arg-type]
    raise DefinitionError(
        f"@do's first argument must be an iterable to map over or the name of a task or "
        f"keyword, got {type(source).__name__} {source!r}"
    )


#: The longest timeout, and the longest spacing of ``limit_per_minute``: what the
#: platform's timed waits accept (about 292 years). Longer would overflow them.
MAX_SECONDS: Final = threading.TIMEOUT_MAX


def check_options(options: TaskOptions, *, mapped: bool) -> None:
    retries, timeout = options.retries, options.timeout
    if retries is not UNSET and (type(retries) is not int or retries < 0):
        raise InvalidOptionError(f"retries must be an int >= 0, got {retries!r}")
    if timeout is not UNSET and timeout is not None and not _positive_number(timeout):
        raise InvalidOptionError(
            f"timeout must be a number of seconds > 0 (or None for no timeout), got {timeout!r}"
        )
    if isinstance(timeout, int | float) and MAX_SECONDS < timeout < math.inf:
        raise InvalidOptionError(
            f"timeout={timeout!r} is longer than the longest wait this platform supports "
            f"({MAX_SECONDS:g} s); pass timeout=None (or float('inf')) for no timeout"
        )
    lpm = options.limit_per_minute
    if isinstance(lpm, int | float) and lpm > 0 and 60.0 / lpm > MAX_SECONDS:
        raise InvalidOptionError(
            f"limit_per_minute={lpm!r} spaces item starts {60.0 / lpm:g} s apart, longer than "
            f"the longest wait this platform supports ({MAX_SECONDS:g} s); use a larger "
            f"limit, or map fewer items"
        )
    sensitive = options.thread_sensitive
    if not (sensitive is UNSET or sensitive is None or isinstance(sensitive, bool)):
        raise InvalidOptionError(
            f"thread_sensitive must be True, False or None (the weave decides), got {sensitive!r}"
        )
    idempotent = options.idempotent
    if not (idempotent is UNSET or isinstance(idempotent, bool)):
        raise InvalidOptionError(f"idempotent must be True or False, got {idempotent!r}")
    env = options.env
    if env is not UNSET:
        check_env(env)
    if isinstance(env, str) and sensitive is True:
        raise InvalidOptionError(
            f"thread_sensitive=True with env={env!r}: a remote task runs on a worker, not on "
            f"the caller's thread; drop one of the two"
        )
    for option in ("workers", "limit_per_minute"):
        value = getattr(options, option)
        if value is UNSET or value is None:
            continue
        if not mapped:
            raise InvalidOptionError(
                f"{option}={value!r} only applies to a mapped task; pass the iterable or the "
                f"name to map over first, e.g. @w.do('items', {option}={value!r})"
            )
        if option == "workers" and (type(value) is not int or value < 1):
            raise InvalidOptionError(f"workers must be an int >= 1, got {value!r}")
        if not _positive_number(value):
            raise InvalidOptionError(f"{option} must be a number > 0, got {value!r}")


def check_env(env: object) -> None:
    """``env=`` of a task or a weave: a remote environment's name, or None (here)."""
    if not (env is None or (isinstance(env, str) and env)):
        raise InvalidOptionError(
            f"env must be the name of a remote environment (e.g. env='celery') or None to "
            f"run here, got {env!r}"
        )


def _positive_number(value: object) -> bool:
    # `not value > 0` also refuses NaN; a bool is not a duration or a rate.
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _name_of(function: object) -> str:
    if type(function) is FunctionType and function.__name__.isidentifier():
        return function.__name__
    if type(function) is FunctionType and function.__name__ == "<lambda>":
        return "<lambda>"
    if isinstance(function, functools.partial):
        raise DefinitionError(
            f"@do was given functools.partial({_qualname(function.func)}, ...), which has no "
            f"name of its own to stand for its result (every partial would be called "
            f"'partial' and replace the one before); define the task with `def name(...): "
            f"return {_qualname(function.func)}(...)`"
        )
    name = getattr(function, "__name__", None)
    if name == "<lambda>":
        return "<lambda>"  # refused where it is registered (the decorator), in its words
    if isinstance(name, str):
        if not name.isidentifier() or keyword.iskeyword(name):
            fixed = re.sub(r"\W", "_", name).strip("_") or "value"
            raise DefinitionError(
                f"task name {name!r} is not a Python identifier: a task's name is the "
                f"parameter name its dependents take; rename it (e.g. {fixed!r})"
            )
        return name
    # A callable object without __name__ is named after its class, as a snake_case noun.
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(function).__name__).lower()


def _qualname(function: object) -> str:
    return getattr(function, "__qualname__", None) or type(function).__name__


def is_async_callable(function: object) -> bool:
    if inspect.iscoroutinefunction(function):
        return True
    call = getattr(type(function), "__call__", None)  # noqa: B004
    return call is not None and inspect.iscoroutinefunction(call)


def _signature_of(function: object, takes_self: bool) -> Signature:
    # Functions defined inside a `with weave()` block are new objects on every run but
    # share their code object, so the introspection is done once per code object.
    # (A wrapper made with functools.wraps shares its code with every function it wraps,
    # so it is read through inspect, which follows __wrapped__.)
    if type(function) is FunctionType and not (
        "__signature__" in function.__dict__ or "__wrapped__" in function.__dict__
    ):
        code = function.__code__
        cache = _METHOD_SIGNATURES if takes_self else _SIGNATURES
        cached = cache.get(code)
        if cached is None:
            if len(cache) >= _SIGNATURE_CACHE_SIZE:
                cache.clear()  # generated code (exec) must not grow this forever
            # The count of defaults is fixed by the `def` statement, so it is per code too.
            cached = cache[code] = _signature_from_code(function, code, takes_self)
        return cached
    return _signature_from_inspect(function, takes_self)


def _signature_from_code(function: FunctionType, code: CodeType, takes_self: bool) -> Signature:
    if code.co_posonlyargcount > int(takes_self):
        return _signature_from_inspect(function, takes_self)
    names = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
    defaults = function.__defaults__ or ()
    with_default = set(names[code.co_argcount - len(defaults) : code.co_argcount])
    with_default.update(function.__kwdefaults__ or ())
    params = names[1:] if takes_self else names
    if code.co_flags & (inspect.CO_GENERATOR | inspect.CO_ASYNC_GENERATOR):
        _refuse_generator(function)
    if takes_self and not names:
        raise DefinitionError(f"Weave class task {function.__name__!r} must take `self` first")
    return Signature(
        params=tuple(params),
        with_default=frozenset(with_default),
        is_async=bool(code.co_flags & inspect.CO_COROUTINE),
    )


def _refuse_generator(function: object) -> None:
    raise DefinitionError(
        f"task {_name_of(function)!r} is a generator function (it contains `yield`): a "
        f"task returns one value, and its generator would never be run; return a list "
        f"(`return list(...)`), or map a task over the items with @w.do(items)"
    )


def _signature_from_inspect(function: object, takes_self: bool) -> Signature:
    if inspect.isgeneratorfunction(function) or inspect.isasyncgenfunction(function):
        _refuse_generator(function)
    try:
        parameters = list(inspect.signature(function).parameters.values())  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise DefinitionError(f"cannot read the parameters of {function!r}: {exc}") from exc
    if takes_self:
        if not parameters:
            raise DefinitionError(f"Weave class task {_name_of(function)!r} must take `self`")
        parameters = parameters[1:]
    params, with_default = [], set()
    for parameter in parameters:
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if parameter.kind is parameter.POSITIONAL_ONLY:
            raise DefinitionError(
                f"task {_name_of(function)!r} has positional-only parameter "
                f"{parameter.name!r}; Wove injects values by name, so remove the `/`"
            )
        params.append(parameter.name)
        if parameter.default is not parameter.empty:
            with_default.add(parameter.name)
    return Signature(
        params=tuple(params),
        with_default=frozenset(with_default),
        is_async=is_async_callable(function),
    )
