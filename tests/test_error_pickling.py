"""Every error Wove raises survives pickling with its attributes and notes: an error of
a task can cross a process (a detached or remote weave's ``on_done``, a worker's reply),
and one that cannot be rebuilt there turns into a less precise error."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

import wove
from wove import errors

ERRORS: list[BaseException] = [
    wove.WoveError("base"),
    wove.DefinitionError("bad task"),
    wove.InvalidOptionError("bad option"),
    wove.UnresolvedNameError("no such name"),
    wove.ReservedNameError("'data' is a reserved name"),
    wove.MappingError("not iterable"),
    wove.CircularDependencyError("Circular dependency detected: a -> b -> a", ("a", "b", "a")),
    wove.MissingDependencyError("pip install cloudpickle"),
    wove.DetachError("no fork"),
    wove.UnknownNameError("no task 'x'"),
    wove.WeaveStateError("too late"),
    wove.TaskTimeout("slow", 0.5),
    wove.TaskTimeout("slow", 0.5, index=3, merged="fetch"),
    wove.MaxPendingError("each", 100, 10),
    wove.TaskCancelled("after", ValueError("first")),
    wove.TaskCancelled("after", None),
    wove.RemoteTaskError("calc", "KeyError", "'x'", "Traceback ..."),
    wove.RemoteNeverRan("calc", "EnvelopeError", "refused", None),
    wove.RemoteResultLost("calc", "ResultLost", "the reply was lost", None),
    wove.RemoteWorkerLost("calc", "WorkerLost", "lost", None, may_have_started=False),
]


def _public_error_classes() -> set[type[BaseException]]:
    return {
        value
        for name in wove.__all__
        if isinstance(value := getattr(wove, name), type) and issubclass(value, BaseException)
    }


def test_the_table_covers_every_public_error_class() -> None:
    assert {type(error) for error in ERRORS} == _public_error_classes()


def _attributes(error: BaseException) -> dict[str, Any]:
    found = dict(vars(error))
    for name in ("may_have_started",):  # class attributes some instances override
        if hasattr(error, name):
            found[name] = getattr(error, name)
    return {key: repr(value) for key, value in found.items()}


@pytest.mark.parametrize("error", ERRORS, ids=lambda error: type(error).__name__)
def test_an_error_survives_pickling_with_its_attributes_and_notes(error: BaseException) -> None:
    error.add_note("wove: raised by task 'x' in the weave at app.py:3")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert _attributes(copy) == _attributes(error)
    assert copy.__notes__ == error.__notes__


def test_errors_module_has_no_other_public_error() -> None:
    declared = {
        value
        for name, value in vars(errors).items()
        if not name.startswith("_") and isinstance(value, type) and issubclass(value, Exception)
    }
    assert declared <= _public_error_classes()
