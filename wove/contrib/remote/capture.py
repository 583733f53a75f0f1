"""Payload bytes: :func:`dumps` produces the cloudpickle of a value under a size limit,
and, when the limit is exceeded or the value cannot be pickled, an error that names what
the payload carries (arguments, captured variables, defaults, globals), largest first.

:func:`function_parts` lists what a task function drags along when cloudpickle pickles
it; :func:`loads` turns verified bytes back into a value.

Shared by every remote environment that sends calls by value (Celery, RQ, the process
pool). This module is pure (no engine import). cloudpickle is imported when first needed;
if it is missing, :class:`~wove.errors.MissingDependencyError` names the install line.
"""

from __future__ import annotations

import dis
import functools
import pickle
import sys
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from wove import MissingDependencyError, WoveError

#: At most this many parts are named in a :class:`PayloadTooLarge` message.
MAX_PARTS_SHOWN: Final = 8

_INSTALL: Final = (
    'pip install cloudpickle (every remote extra has it, e.g. pip install "wove[celery]")'
)
_GLOBAL_OPS: Final = frozenset({"LOAD_GLOBAL", "STORE_GLOBAL", "DELETE_GLOBAL"})


class PayloadTooLarge(WoveError, ValueError):
    """A payload pickled to more bytes than its limit allows.

    ``size`` and ``limit`` are in bytes, ``what`` names the payload (e.g. ``"the
    envelope for task 'crunch'"``), and ``parts`` lists ``(label, pickled size)`` of
    what it carries, largest first (``-1`` for a part that cannot be pickled alone).
    """

    def __init__(
        self,
        message: str,
        size: int,
        limit: int,
        what: str,
        parts: tuple[tuple[str, int], ...],
    ) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit
        self.what = what
        self.parts = parts

    def __reduce__(self) -> tuple[Any, ...]:
        # Celery pickles exceptions that cross processes: rebuild with every argument.
        return (type(self), (str(self), self.size, self.limit, self.what, self.parts))


class PayloadError(WoveError, TypeError):
    """A payload cannot be pickled at all; the message names the parts at fault, and
    the error from cloudpickle is chained as ``__cause__``."""


def _cloudpickle() -> Any:
    try:
        import cloudpickle
    except ImportError:
        raise MissingDependencyError(
            f"running tasks in a remote environment needs cloudpickle to send task "
            f"functions and their arguments; install it with: {_INSTALL}"
        ) from None
    return cloudpickle


def format_size(size: int) -> str:
    """``size`` bytes in decimal units: ``"512 B"``, ``"80.0 kB"``, ``"5.2 MB"``,
    ``"1.5 GB"`` (one decimal, except whole bytes)."""
    if size < 1000:
        return f"{size} B"
    for unit, scale in (("kB", 1e3), ("MB", 1e6)):
        if round(size / scale, 1) < 1000:
            return f"{size / scale:.1f} {unit}"
    return f"{size / 1e9:.1f} GB"


def dumps(
    value: object,
    *,
    limit: int | None,
    what: str,
    parts: Callable[[], Iterable[tuple[str, object]]],
) -> bytes:
    """``cloudpickle.dumps(value)`` (highest protocol), refused if it exceeds ``limit``.

    ``what`` names the payload in errors (``"the envelope for task 'crunch'"``).
    ``parts`` is called only when something goes wrong (it is the slow path): it
    returns ``(label, object)`` pairs, e.g. from :func:`function_parts`, each pickled
    on its own to say what made the payload big or unpicklable.

    Raises :class:`PayloadTooLarge` if the pickle is over ``limit`` bytes (``None``: no
    limit), :class:`PayloadError` if ``value`` cannot be pickled, and
    :class:`~wove.errors.MissingDependencyError` if cloudpickle is not installed.
    """
    cloudpickle = _cloudpickle()
    try:
        data: bytes = cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as error:
        raise _unpicklable(cloudpickle, what, error, parts) from error
    if limit is not None and len(data) > limit:
        raise _too_large(cloudpickle, what, len(data), limit, parts)
    return data


def loads(data: bytes) -> object:
    """``cloudpickle.loads(data)``. Unpickling runs arbitrary code: call it only on
    bytes taken from an envelope that :func:`~wove.contrib.remote.envelope.open_envelope`
    has verified, or received over a channel only this machine's processes can write
    (the process pool's pipes), never on bytes straight from a broker."""
    return _cloudpickle().loads(data)


def _measure(cloudpickle: Any, obj: object) -> tuple[int, str | None]:
    """The pickled size of ``obj`` alone, or ``(-1, error)`` if it cannot be pickled."""
    try:
        return len(cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)), None
    except Exception as error:
        return -1, _describe(error)


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _too_large(
    cloudpickle: Any,
    what: str,
    size: int,
    limit: int,
    parts: Callable[[], Iterable[tuple[str, object]]],
) -> PayloadTooLarge:
    measured = [(label, *_measure(cloudpickle, obj)) for label, obj in parts()]
    measured.sort(key=lambda part: part[1], reverse=True)  # stable: ties keep their order
    shown = []
    for label, part_size, error in measured[:MAX_PARTS_SHOWN]:
        if error is None:
            shown.append(f"{label} {format_size(part_size)}")
        else:
            shown.append(f"{label} (cannot be pickled: {error})")
    if len(measured) > MAX_PARTS_SHOWN:
        shown.append(f"and {len(measured) - MAX_PARTS_SHOWN} more")
    carries = (
        f" What it carries, largest first: {', '.join(shown)}."
        if shown
        else " It carries nothing that can be measured on its own."
    )
    message = (
        f"{what} is {format_size(size)}, over the limit of {format_size(limit)} "
        f"(max_payload).{carries} Pass an id and load the data on the worker, or raise "
        f"max_payload."
    )
    return PayloadTooLarge(
        message,
        size,
        limit,
        what,
        tuple((label, part_size) for label, part_size, _ in measured),
    )


def _unpicklable(
    cloudpickle: Any,
    what: str,
    error: Exception,
    parts: Callable[[], Iterable[tuple[str, object]]],
) -> PayloadError:
    culprits = []
    for label, obj in parts():
        part_size, part_error = _measure(cloudpickle, obj)
        if part_size < 0:
            culprits.append(f"{label} ({part_error})")
    if culprits:
        at_fault = f"What cannot be pickled: {', '.join(culprits)}."
    else:
        at_fault = "No single part it carries fails on its own."
    return PayloadError(
        f"{what} cannot be pickled ({_describe(error)}). {at_fault} Create such objects "
        f"(locks, connections, open files, clients) inside the task on the worker instead "
        f"of capturing or passing them."
    )


def function_parts(
    function: Callable[..., object], kwargs: Mapping[str, object]
) -> list[tuple[str, object]]:
    """What calling ``function(**kwargs)`` elsewhere carries, as ``(label, object)``.

    * ``"argument 'x'"`` for each keyword argument (and, for a ``functools.partial``,
      ``"argument 0"``... for its positional arguments and ``"argument 'k'"`` for its
      keywords; then the parts of the function it wraps);
    * ``"instance of <Class>"`` (or ``"class <Class>"``) for the ``__self__`` of a bound
      method, then the parts of its function;
    * for a plain function pickled by value (cloudpickle pickles a function by value
      unless it can be imported by module and qualified name, and ``__main__`` is never
      imported): ``"captured variable 'y'"`` for each non-empty closure cell,
      ``"default of 'z'"`` for each default, and ``"global 'g'"`` for each global the
      code (including nested functions, lambdas and comprehensions) reads or writes that
      exists in the function's globals and is neither a module nor an object importable
      by reference (``__module__`` + ``__qualname__`` lead back to it, outside
      ``__main__``). A function importable by reference carries none of these;
    * ``"class <Class>"`` for a class pickled by value, and ``"callable <type>"`` for
      any other callable object pickled by value (the object itself).
    """
    found: list[tuple[str, object]] = [
        (f"argument {name!r}", value) for name, value in kwargs.items()
    ]
    _callable_parts(function, found)
    return found


def _callable_parts(function: object, found: list[tuple[str, object]]) -> None:
    if isinstance(function, functools.partial):
        found.extend((f"argument {index}", value) for index, value in enumerate(function.args))
        found.extend((f"argument {name!r}", value) for name, value in function.keywords.items())
        _callable_parts(function.func, found)
    elif isinstance(function, types.MethodType | types.BuiltinMethodType):
        owner = function.__self__
        if owner is not None and not isinstance(owner, types.ModuleType):
            if isinstance(owner, type):
                found.append((f"class {owner.__name__}", owner))
            else:
                found.append((f"instance of {type(owner).__name__}", owner))
        if isinstance(function, types.MethodType):
            _callable_parts(function.__func__, found)
    elif isinstance(function, types.FunctionType):
        if not _by_reference(function):
            _function_parts(function, found)
    elif isinstance(function, type):
        if not _by_reference(function):
            found.append((f"class {function.__name__}", function))
    elif not _by_reference(function):
        found.append((f"callable {type(function).__name__}", function))


def _function_parts(function: types.FunctionType, found: list[tuple[str, object]]) -> None:
    code = function.__code__
    for name, cell in zip(code.co_freevars, function.__closure__ or (), strict=False):
        try:
            found.append((f"captured variable {name!r}", cell.cell_contents))
        except ValueError:  # an empty cell: the variable is not assigned yet
            pass
    if function.__defaults__:
        positional = code.co_varnames[: code.co_argcount]
        named = positional[len(positional) - len(function.__defaults__) :]
        found.extend(
            (f"default of {name!r}", value)
            for name, value in zip(named, function.__defaults__, strict=True)
        )
    if function.__kwdefaults__:
        found.extend(
            (f"default of {name!r}", value) for name, value in function.__kwdefaults__.items()
        )
    namespace = function.__globals__
    for name in _global_names(code):
        if name not in namespace:
            continue  # a builtin, or a global not defined yet
        value = namespace[name]
        if isinstance(value, types.ModuleType) or _by_reference(value):
            continue
        found.append((f"global {name!r}", value))


def _global_names(code: types.CodeType) -> dict[str, None]:
    """The global names ``code`` and the code nested in it use, in order of first use
    (``co_names`` also holds attribute names; the instructions tell globals apart)."""
    names: dict[str, None] = {}
    pending = [code]
    while pending:
        current = pending.pop()
        for instruction in dis.get_instructions(current):
            if instruction.opname in _GLOBAL_OPS:
                names[instruction.argval] = None
        pending.extend(
            const for const in reversed(current.co_consts) if isinstance(const, types.CodeType)
        )
    return names


def _by_reference(obj: object) -> bool:
    """Whether pickling ``obj`` records only where to import it from: its
    ``__module__`` is imported (and not ``__main__``) and following its
    ``__qualname__`` from there leads back to ``obj`` itself."""
    module_name = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module_name, str) or not isinstance(qualname, str):
        return False
    if module_name == "__main__" or "<locals>" in qualname:
        return False
    target: object = sys.modules.get(module_name)
    if target is None:
        return False
    for attribute in qualname.split("."):
        target = getattr(target, attribute, None)
        if target is None:
            return False
    return target is obj
