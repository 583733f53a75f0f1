"""Payload bytes: the size limit, the parts named when it is exceeded, and what a task
function carries when cloudpickle pickles it."""

from __future__ import annotations

import functools
import json
import os.path
import pickle
import re
import sys
import threading
from collections.abc import Callable, Iterable
from os.path import join as joined_path
from typing import Any

import cloudpickle
import pytest

from wove.contrib.celery.capture import (
    MAX_PARTS_SHOWN,
    PayloadError,
    PayloadTooLarge,
    dumps,
    format_size,
    function_parts,
    loads,
)
from wove.errors import MissingDependencyError, WoveError

TABLE = list(range(500))
BIG_GLOBAL = "g" * 2_000
UNUSED_GLOBAL = "u" * 50_000
make_label = lambda n: f"label {n}"  # noqa: E731  (a module-level lambda is pickled by value)


class Importable:
    """Defined at module level: pickled by reference."""


def module_level_function(rows: list[int]) -> int:
    """Importable by module and name: pickled by reference, its globals do not travel."""
    return len(rows) + len(TABLE) + len(BIG_GLOBAL)


def no_parts() -> list[tuple[str, object]]:
    raise AssertionError("parts() must only be called when something is wrong")


def labels(parts: Iterable[tuple[str, object]]) -> list[str]:
    return [label for label, _ in parts]


def pickled_size(value: object) -> int:
    return len(cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


def make_crunch() -> tuple[Callable[..., Any], dict[str, object]]:
    cache = "c" * 80_000

    def crunch(rows: str, scale: int = 2) -> int:
        return len(rows) * scale + len(cache) + len(TABLE)

    return crunch, {"rows": "r" * 5_100_000}


# -- under the limit ------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [None, 10_000_000])
def test_under_the_limit_returns_bytes_that_load_back(limit: int | None) -> None:
    crunch, kwargs = make_crunch()
    kwargs = {"rows": "abc"}
    data = dumps((crunch, kwargs), limit=limit, what="the envelope", parts=no_parts)
    assert isinstance(data, bytes)
    function, loaded_kwargs = loads(data)  # type: ignore[misc]
    assert loaded_kwargs == {"rows": "abc"}
    assert function(**loaded_kwargs) == 3 * 2 + 80_000 + 500


def test_the_pickle_is_cloudpickle_at_the_highest_protocol() -> None:
    value = {"a": [1, 2, 3], "b": b"x" * 100}
    data = dumps(value, limit=None, what="the result", parts=no_parts)
    assert data == cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    assert data[1] == pickle.HIGHEST_PROTOCOL
    assert loads(data) == value


def test_a_payload_exactly_at_the_limit_is_accepted() -> None:
    value = "x" * 1000
    size = pickled_size(value)
    assert dumps(value, limit=size, what="the result", parts=no_parts)
    with pytest.raises(PayloadTooLarge):
        dumps(value, limit=size - 1, what="the result", parts=lambda: [("result", value)])


def test_no_limit_never_refuses() -> None:
    value = "x" * 3_000_000
    assert len(dumps(value, limit=None, what="the result", parts=no_parts)) > 3_000_000


# -- over the limit -------------------------------------------------------------------------


def test_over_the_limit_names_the_parts_largest_first() -> None:
    crunch, kwargs = make_crunch()
    value = (crunch, kwargs)
    with pytest.raises(PayloadTooLarge) as caught:
        dumps(
            value,
            limit=1_000_000,
            what="the envelope for task 'crunch'",
            parts=lambda: function_parts(crunch, kwargs),
        )
    error = caught.value
    assert error.size == pickled_size(value)
    assert error.limit == 1_000_000
    assert error.what == "the envelope for task 'crunch'"
    assert labels(error.parts) == [
        "argument 'rows'",
        "captured variable 'cache'",
        "global 'TABLE'",
        "default of 'scale'",
    ]
    sizes = [size for _, size in error.parts]
    assert sizes == sorted(sizes, reverse=True)
    assert error.parts[0][1] == pickled_size("r" * 5_100_000)
    assert error.parts[1][1] == pickled_size("c" * 80_000)
    assert error.parts[2][1] == pickled_size(TABLE)
    message = str(error)
    assert message.startswith(
        "the envelope for task 'crunch' is 5.2 MB, over the limit of 1.0 MB (max_payload). "
        "What it carries, largest first: argument 'rows' 5.1 MB, "
        "captured variable 'cache' 80.0 kB, global 'TABLE' "
    )
    assert message.endswith(" B. Pass an id and load the data on the worker, or raise max_payload.")
    assert re.search(r"default of 'scale' \d+ B\.", message)


def test_the_error_is_a_value_error_and_a_wove_error() -> None:
    with pytest.raises(PayloadTooLarge) as caught:
        dumps("x" * 100, limit=10, what="the result of task 't'", parts=list)
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, WoveError)
    assert "the result of task 't' is " in str(caught.value)
    assert "It carries nothing that can be measured on its own." in str(caught.value)


def test_at_most_eight_parts_are_named() -> None:
    parts = [(f"argument 'a{n}'", "x" * (1000 + n)) for n in range(12)]
    value = dict(parts)
    with pytest.raises(PayloadTooLarge) as caught:
        dumps(value, limit=100, what="the envelope", parts=lambda: parts)
    error = caught.value
    assert MAX_PARTS_SHOWN == 8
    assert len(error.parts) == 12
    assert labels(error.parts) == [f"argument 'a{n}'" for n in range(11, -1, -1)]
    message = str(error)
    for n in range(4, 12):
        assert f"argument 'a{n}'" in message
    for n in range(4):
        assert f"argument 'a{n}'" not in message
    assert "and 4 more." in message


def test_a_part_that_cannot_be_pickled_alone_is_listed_last() -> None:
    lock = threading.Lock()
    with pytest.raises(PayloadTooLarge) as caught:
        dumps(
            "x" * 5000,
            limit=100,
            what="the envelope",
            parts=lambda: [("global 'LOCK'", lock), ("argument 'text'", "x" * 5000)],
        )
    error = caught.value
    assert error.parts == (("argument 'text'", pickled_size("x" * 5000)), ("global 'LOCK'", -1))
    assert "global 'LOCK' (cannot be pickled: TypeError: cannot pickle '_thread.lock'" in str(error)


def test_parts_are_only_collected_when_the_limit_is_exceeded() -> None:
    calls = []

    def parts() -> list[tuple[str, object]]:
        calls.append(1)
        return [("argument 'x'", "x" * 1000)]

    dumps("x" * 1000, limit=100_000, what="the envelope", parts=parts)
    assert calls == []
    with pytest.raises(PayloadTooLarge):
        dumps("x" * 1000, limit=10, what="the envelope", parts=parts)
    assert calls == [1]


def test_payload_too_large_survives_pickling() -> None:
    with pytest.raises(PayloadTooLarge) as caught:
        dumps("x" * 5000, limit=100, what="the envelope", parts=lambda: [("argument 'x'", 1)])
    copy = pickle.loads(pickle.dumps(caught.value))
    assert type(copy) is PayloadTooLarge
    assert (copy.size, copy.limit, copy.what, copy.parts) == (
        caught.value.size,
        100,
        "the envelope",
        caught.value.parts,
    )
    assert str(copy) == str(caught.value)


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1.0 kB"),
        (2_100, "2.1 kB"),
        (80_000, "80.0 kB"),
        (999_949, "999.9 kB"),
        (999_960, "1.0 MB"),
        (1_000_000, "1.0 MB"),
        (5_200_000, "5.2 MB"),
        (999_960_000, "1.0 GB"),
        (2_500_000_000, "2.5 GB"),
        (12_345_000_000_000, "12345.0 GB"),
    ],
)
def test_sizes_are_in_decimal_units(size: int, text: str) -> None:
    assert format_size(size) == text


# -- cannot be pickled ------------------------------------------------------------------------


def test_a_captured_lock_is_named() -> None:
    lock = threading.Lock()
    data = "d" * 10

    def locked(rows: list[int]) -> int:
        with lock:
            return len(rows) + len(data)

    kwargs = {"rows": [1, 2]}
    with pytest.raises(PayloadError) as caught:
        dumps(
            (locked, kwargs),
            limit=None,
            what="the envelope for task 'locked'",
            parts=lambda: function_parts(locked, kwargs),
        )
    error = caught.value
    assert isinstance(error, TypeError)
    assert isinstance(error, WoveError)
    assert isinstance(error.__cause__, TypeError)
    message = str(error)
    assert message.startswith("the envelope for task 'locked' cannot be pickled (TypeError: ")
    assert "What cannot be pickled: captured variable 'lock' (TypeError: " in message
    assert "_thread.lock" in message
    assert "captured variable 'data'" not in message
    assert "argument 'rows'" not in message
    assert "inside the task on the worker" in message


def test_an_unpicklable_argument_is_named_even_without_a_limit() -> None:
    kwargs = {"handle": threading.RLock(), "n": 3}
    with pytest.raises(PayloadError, match=r"What cannot be pickled: argument 'handle' \("):
        dumps(kwargs, limit=None, what="the envelope", parts=lambda: function_parts(len, kwargs))


def test_an_unpicklable_value_without_a_culprit_says_so() -> None:
    with pytest.raises(PayloadError, match="No single part it carries fails on its own"):
        dumps(threading.Lock(), limit=10, what="the result", parts=list)


def test_an_exception_raised_while_pickling_is_wrapped() -> None:
    class Refuses:
        def __reduce__(self) -> Any:
            raise RuntimeError("no pickling for me")

    with pytest.raises(PayloadError, match="RuntimeError: no pickling for me") as caught:
        dumps(Refuses(), limit=None, what="the result", parts=lambda: [("result", Refuses())])
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert "What cannot be pickled: result (RuntimeError: no pickling for me)" in str(caught.value)


# -- missing cloudpickle ----------------------------------------------------------------------


def test_missing_cloudpickle_names_the_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    data = dumps(1, limit=None, what="the result", parts=no_parts)
    monkeypatch.setitem(sys.modules, "cloudpickle", None)
    with pytest.raises(MissingDependencyError, match=re.escape('pip install "wove[celery]"')):
        dumps(1, limit=None, what="the result", parts=no_parts)
    with pytest.raises(MissingDependencyError, match=re.escape('pip install "wove[celery]"')):
        loads(data)


# -- what a function carries ------------------------------------------------------------------


def test_keyword_arguments_are_labelled() -> None:
    parts = function_parts(module_level_function, {"rows": [1], "other": "x"})
    assert parts == [("argument 'rows'", [1]), ("argument 'other'", "x")]


def test_a_function_importable_by_reference_carries_only_its_arguments() -> None:
    # Its globals, defaults and code stay behind: the worker imports it.
    assert labels(function_parts(module_level_function, {"rows": []})) == ["argument 'rows'"]
    assert function_parts(json.dumps, {}) == []
    assert pickled_size(module_level_function) < 200


def test_closure_cells_are_captured_variables() -> None:
    first = [1, 2, 3]
    second = {"k": "v"}

    def task() -> int:
        return len(first) + len(second)

    assert function_parts(task, {}) == [
        ("captured variable 'first'", first),
        ("captured variable 'second'", second),
    ]


def test_an_empty_closure_cell_is_skipped() -> None:
    later = 1

    def task() -> int:
        return later  # noqa: F821  (deleted below: the cell is empty)

    del later
    assert function_parts(task, {}) == []


def test_defaults_and_keyword_defaults_are_labelled() -> None:
    sentinel = object()

    def task(a: int, b: int = 2, *args: int, c: object = sentinel, d: int, **rest: int) -> None:
        pass

    assert function_parts(task, {"a": 1}) == [
        ("argument 'a'", 1),
        ("default of 'b'", 2),
        ("default of 'c'", sentinel),
    ]


def test_positional_only_defaults_are_labelled() -> None:
    def task(a: int = 1, /, b: int = 2) -> None:
        pass

    assert labels(function_parts(task, {})) == ["default of 'a'", "default of 'b'"]


def test_globals_the_code_uses_are_labelled() -> None:
    def task(rows: list[int]) -> int:
        return len(rows) + len(TABLE) + len(BIG_GLOBAL) + len(make_label(1))

    parts = function_parts(task, {"rows": []})
    assert parts == [
        ("argument 'rows'", []),
        ("global 'TABLE'", TABLE),
        ("global 'BIG_GLOBAL'", BIG_GLOBAL),
        ("global 'make_label'", make_label),
    ]


def test_globals_that_travel_by_reference_are_skipped() -> None:
    def task() -> object:
        # A module, a module's function, a function and a class of an importable module,
        # a builtin, a global that does not exist, and an attribute named like a global.
        return (
            json.dumps(1),
            os.path.join("a"),
            joined_path("a", "b"),
            module_level_function([]),
            Importable(),
            len(""),
            NOT_DEFINED_ANYWHERE,  # type: ignore[name-defined]  # noqa: F821
            task.UNUSED_GLOBAL,  # type: ignore[attr-defined]
        )

    assert function_parts(task, {}) == [("captured variable 'task'", task)]


def test_globals_of_nested_code_are_found() -> None:
    def task() -> object:
        def helper() -> int:
            return len(TABLE)

        squares = [len(BIG_GLOBAL) for _ in range(2)]
        return helper, squares, (lambda: make_label(2))

    # (In any order: Python 3.12 inlines the comprehension into the function's code.)
    assert sorted(labels(function_parts(task, {}))) == [
        "global 'BIG_GLOBAL'",
        "global 'TABLE'",
        "global 'make_label'",
    ]


def test_a_global_used_twice_is_listed_once() -> None:
    def task() -> int:
        return len(TABLE) + sum(len(TABLE) for _ in range(1))

    assert labels(function_parts(task, {})) == ["global 'TABLE'"]


def test_a_global_written_by_the_code_is_listed() -> None:
    def task() -> None:
        global TABLE
        TABLE = [*TABLE]

    assert labels(function_parts(task, {})) == ["global 'TABLE'"]


def test_a_local_class_and_function_held_in_a_global_are_listed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Local:
        pass

    def local_function() -> None:
        pass

    monkeypatch.setitem(globals(), "HELD_CLASS", Local)
    monkeypatch.setitem(globals(), "HELD_FUNCTION", local_function)

    def task() -> object:
        return HELD_CLASS, HELD_FUNCTION  # type: ignore[name-defined]  # noqa: F821

    assert function_parts(task, {}) == [
        ("global 'HELD_CLASS'", Local),
        ("global 'HELD_FUNCTION'", local_function),
    ]


def test_a_partial_lists_its_arguments_then_the_function() -> None:
    cache = "c" * 10

    def task(a: int, b: int, *, scale: int, rows: list[int]) -> int:
        return a + b + scale + len(rows) + len(cache) + len(TABLE)

    wrapped = functools.partial(task, 1, 2, scale=3)
    assert function_parts(wrapped, {"rows": [4]}) == [
        ("argument 'rows'", [4]),
        ("argument 0", 1),
        ("argument 1", 2),
        ("argument 'scale'", 3),
        ("captured variable 'cache'", cache),
        ("global 'TABLE'", TABLE),
    ]


def test_a_partial_of_an_importable_function_lists_only_its_arguments() -> None:
    assert function_parts(functools.partial(json.dumps, indent=2), {"obj": 1}) == [
        ("argument 'obj'", 1),
        ("argument 'indent'", 2),
    ]


def test_a_nested_partial_is_unwrapped() -> None:
    inner = functools.partial(module_level_function, [1])
    outer = functools.partial(inner)
    assert function_parts(outer, {}) == [("argument 0", [1])]


def test_a_bound_method_lists_its_instance_then_its_function() -> None:
    class Cruncher:
        def crunch(self, rows: list[int]) -> int:
            return len(rows) + len(TABLE)

    cruncher = Cruncher()
    assert function_parts(cruncher.crunch, {"rows": []}) == [
        ("argument 'rows'", []),
        ("instance of Cruncher", cruncher),
        ("global 'TABLE'", TABLE),
    ]


def test_a_bound_method_of_an_importable_class_lists_only_the_instance() -> None:
    decoder = json.JSONDecoder()
    assert function_parts(decoder.decode, {"s": "1"}) == [
        ("argument 's'", "1"),
        ("instance of JSONDecoder", decoder),
    ]


def test_a_classmethod_lists_its_class() -> None:
    class Factory:
        @classmethod
        def build(cls) -> object:
            return cls

    parts = function_parts(Factory.build, {})
    assert labels(parts) == ["class Factory"]
    assert parts[0][1] is Factory


def test_a_builtin_bound_method_lists_its_instance() -> None:
    items: list[int] = [1, 2]
    assert function_parts(items.append, {}) == [("instance of list", items)]
    assert function_parts(len, {"obj": "x"}) == [("argument 'obj'", "x")]


def test_a_callable_object_is_listed_itself() -> None:
    class Crunch:
        def __init__(self) -> None:
            self.table = TABLE

        def __call__(self) -> int:
            return len(self.table)

    crunch = Crunch()
    assert function_parts(crunch, {"x": 1}) == [
        ("argument 'x'", 1),
        ("callable Crunch", crunch),
    ]


def test_an_importable_class_used_as_a_task_carries_nothing_else() -> None:
    assert function_parts(Importable, {"x": 1}) == [("argument 'x'", 1)]


def test_a_local_class_used_as_a_task_is_listed_itself() -> None:
    class Local:
        pass

    assert function_parts(Local, {}) == [("class Local", Local)]


def test_function_parts_feed_the_size_error_end_to_end() -> None:
    lock_free = "f" * 300_000

    def task(rows: str, blob: str = "d" * 40_000) -> int:
        return len(rows) + len(lock_free) + len(blob) + len(BIG_GLOBAL)

    kwargs = {"rows": "r" * 1_200_000}
    with pytest.raises(PayloadTooLarge) as caught:
        dumps(
            (task, kwargs),
            limit=500_000,
            what="the envelope for task 'task'",
            parts=lambda: function_parts(task, kwargs),
        )
    assert labels(caught.value.parts) == [
        "argument 'rows'",
        "captured variable 'lock_free'",
        "default of 'blob'",
        "global 'BIG_GLOBAL'",
    ]
    assert "the envelope for task 'task' is 1.5 MB, over the limit of 500.0 kB" in str(caught.value)
