"""Every bad input of issue 2: a clear error before any task runs, from the public API."""

import asyncio

import pytest

import wove
from wove import Weave, merge, weave


def raises(builtin, wove_class, match=None):
    """pytest.raises for an error that must be both a WoveError and ``builtin``."""
    assert issubclass(wove_class, wove.WoveError)
    assert issubclass(wove_class, builtin)
    return pytest.raises(wove_class, match=match)


# --- names ------------------------------------------------------------------------------


def test_unresolved_parameter():
    ran = []
    with raises(NameError, wove.UnresolvedNameError) as info, weave(user_id=1) as w:

        @w.do
        def author():
            ran.append("author")

        @w.do
        def context(autor):
            ran.append("context")

    assert ran == []
    message = str(info.value)
    assert "'context'" in message
    assert "'autor'" in message
    assert "available names:" in message
    for name in ("author", "data", "user_id"):
        assert name in message.split("available names:")[1]
    assert "did you mean 'author'?" in message


def test_cycle():
    ran = []
    with (
        raises(RuntimeError, wove.CircularDependencyError, "Circular dependency detected") as info,
        weave() as w,
    ):

        @w.do
        def start():
            ran.append("start")

        @w.do
        def a(start, c):
            ran.append("a")

        @w.do
        def b(a):
            ran.append("b")

        @w.do
        def c(b):
            ran.append("c")

    assert ran == []
    assert set(info.value.cycle) == {"a", "b", "c"}
    assert " -> ".join(info.value.cycle) in str(info.value)


def test_map_over_a_missing_name():
    ran = []
    with raises(NameError, wove.UnresolvedNameError) as info, weave() as w:

        @w.do
        def books():
            ran.append("books")
            return [1]

        @w.do("bokos")
        def priced(book):
            ran.append("priced")

    assert ran == []
    assert "'priced'" in str(info.value)
    assert "'bokos'" in str(info.value)
    assert "did you mean 'books'?" in str(info.value)


def test_map_over_a_non_iterable_keyword():
    ran = []
    with raises(TypeError, wove.MappingError, "not iterable") as info, weave(count=5) as w:

        @w.do
        def other():
            ran.append("other")

        @w.do("count")
        def priced(item):
            ran.append("priced")

    assert ran == []
    assert "'priced'" in str(info.value)
    assert "'count'" in str(info.value)
    assert "int" in str(info.value)


def test_mapped_function_with_no_free_parameter():
    ran = []
    with raises(TypeError, wove.DefinitionError, "exactly one parameter") as info, weave() as w:

        @w.do
        def books():
            ran.append("books")

        @w.do([1, 2])
        def priced(books):
            ran.append("priced")

    assert ran == []
    assert "'priced'" in str(info.value)


def test_mapped_function_with_several_free_parameters():
    ran = []
    with raises(TypeError, wove.DefinitionError, "exactly one parameter") as info, weave() as w:

        @w.do
        def books():
            ran.append("books")

        @w.do([1, 2])
        def priced(book, currency):
            ran.append("priced")

    assert ran == []
    assert "'book'" in str(info.value)
    assert "'currency'" in str(info.value)


def test_runtime_mapping_over_a_task_whose_value_is_not_iterable():
    ran = []
    with raises(TypeError, wove.MappingError, "not iterable") as info, weave() as w:

        @w.do
        def count():
            ran.append("count")
            return 5

        @w.do("count")
        def priced(item):
            ran.append("priced")

    assert ran == ["count"]
    assert "'priced'" in str(info.value)
    assert "'count'" in str(info.value)
    assert w.result.count == 5
    assert w.result.exception is info.value


# --- options ----------------------------------------------------------------------------


@pytest.mark.parametrize("option", ["workers", "limit_per_minute"])
def test_mapping_only_option_on_unmapped_task_fails_at_decoration(option):
    ran = []
    with raises(ValueError, wove.InvalidOptionError, option) as info, weave() as w:

        @w.do
        def first():
            ran.append("first")

        w.do(**{option: 2})  # the error comes from w.do(...), before any function

    assert ran == []
    assert "mapped" in str(info.value)


@pytest.mark.parametrize(
    ("source", "options", "name"),
    [
        (None, {"retries": -1}, "retries"),
        (None, {"timeout": 0}, "timeout"),
        (None, {"timeout": -1.5}, "timeout"),
        ([1], {"workers": 0}, "workers"),
        ([1], {"workers": -3}, "workers"),
        ([1], {"limit_per_minute": 0}, "limit_per_minute"),
        ([1], {"limit_per_minute": -60}, "limit_per_minute"),
    ],
)
def test_out_of_range_option(source, options, name):
    ran = []
    with raises(ValueError, wove.InvalidOptionError, name) as info, weave() as w:

        @w.do
        def first():
            ran.append("first")

        w.do(source, **options)

    assert ran == []
    assert repr(next(iter(options.values()))) in str(info.value)


@pytest.mark.parametrize("max_workers", [0, -1])
def test_non_positive_max_workers(max_workers):
    with raises(ValueError, wove.InvalidOptionError, "max_workers") as info:
        weave(max_workers=max_workers)
    assert repr(max_workers) in str(info.value)


# --- reserved names ---------------------------------------------------------------------


def test_keyword_data_is_reserved():
    with raises(NameError, wove.ReservedNameError, "reserved") as info:
        weave(data={"a": 1})
    assert "'data'" in str(info.value)


@pytest.mark.parametrize("name", ["final", "timings", "exception", "cancelled"])
def test_keyword_named_after_a_result_attribute(name):
    with raises(NameError, wove.ReservedNameError, "conflicts with a built-in attribute") as info:
        weave(**{name: 1})
    assert repr(name) in str(info.value)


@pytest.mark.parametrize("name", ["final", "timings", "exception", "cancelled", "data"])
def test_task_named_after_a_result_attribute(name):
    ran = []
    with raises(NameError, wove.ReservedNameError) as info, weave() as w:

        @w.do
        def first():
            ran.append("first")

        def task():
            ran.append(name)

        task.__name__ = name
        w.do(task)

    assert ran == []
    assert repr(name) in str(info.value)
    assert "reserved" in str(info.value) or "conflicts with a built-in attribute" in str(info.value)


# --- what @w.do is given ------------------------------------------------------------------


def test_coroutine_object_given_to_do():
    async def fetch():
        return 1

    ran = []
    coroutine = fetch()
    try:
        with raises(TypeError, wove.DefinitionError, "coroutine") as info, weave() as w:

            @w.do
            def first():
                ran.append("first")

            w.do(coroutine)
    finally:
        coroutine.close()
    assert ran == []
    # The fix: decorate the `async def` itself rather than calling it.
    assert "async def" in str(info.value)


def test_non_callable_given_to_do():
    ran = []
    with raises(TypeError, wove.DefinitionError, "callable") as info, weave() as w:

        @w.do
        def first():
            ran.append("first")

        w.do()(42)

    assert ran == []
    assert "int" in str(info.value)


def test_non_iterable_non_name_given_to_do():
    with raises(TypeError, wove.DefinitionError, "iterable") as info, weave() as w:
        w.do(42)
    assert "int" in str(info.value)


# --- lifecycle ------------------------------------------------------------------------------


def test_do_after_the_block_ran():
    with weave() as w:

        @w.do
        def first():
            return 1

    def late():
        raise AssertionError("must not run")

    with raises(RuntimeError, wove.WeaveStateError, "after its block ended") as info:
        w.do(late)
    assert "'late'" in str(info.value)
    assert w.result.final == 1


def test_do_before_the_block_is_entered():
    w = weave()

    def early():
        return None

    with raises(RuntimeError, wove.WeaveStateError, "before its block was entered"):
        w.do(early)


def test_a_lambda_is_refused_it_has_no_name():
    with raises(TypeError, wove.DefinitionError, "lambda"), weave() as w:
        w.do(lambda: 1)


def test_merge_over_a_non_iterable_names_it():
    with weave() as w:

        @w.do
        async def merged():
            try:
                await merge(str, 5)
            except wove.MappingError as error:
                return str(error)
            return "no error"

    assert "int" in w.result.merged
    assert "not iterable" in w.result.merged


def test_an_unknown_result_name_is_a_wove_error():
    with weave() as w:

        @w.do
        def known():
            return 1

    with raises(KeyError, wove.UnknownNameError, "no task or keyword named 'nope'"):
        w.result["nope"]
    with raises(AttributeError, wove.UnknownNameError, "known"):
        w.result.nope  # noqa: B018
    assert getattr(w.result, "nope", "default") == "default"


def test_parent_weave_can_be_passed_by_keyword():
    class Template(Weave):
        @Weave.do
        def value(self):
            return 42

    with weave(parent_weave=Template) as w:
        pass
    assert w.result.final == 42


def test_entering_the_same_weave_twice():
    ran = []
    w = weave()
    with w:

        @w.do
        def first():
            ran.append("first")

    assert ran == ["first"]
    with raises(RuntimeError, wove.WeaveStateError, "already entered"), w:
        ran.append("body")
    assert ran == ["first"]


def test_entering_the_same_weave_while_it_is_open():
    w = weave()
    with w, raises(RuntimeError, wove.WeaveStateError, "already entered"), w:
        pass


def test_entering_the_same_weave_twice_async():
    async def main():
        w = weave()
        async with w:
            pass
        with raises(RuntimeError, wove.WeaveStateError, "already entered"):
            async with w:
                pass

    asyncio.run(main())


def test_merge_outside_a_weave_raises_immediately():
    def work():
        raise AssertionError("must not run")

    with raises(RuntimeError, wove.WeaveStateError, "outside a running weave"):
        merge(work)  # not awaited: the error comes from the call itself


def test_merge_outside_a_weave_in_async_code_raises_immediately():
    async def work():
        raise AssertionError("must not run")

    async def main():
        with raises(RuntimeError, wove.WeaveStateError, "outside a running weave"):
            merge(work, [1, 2])

    asyncio.run(main())


def test_instantiating_a_weave_subclass():
    class Report(Weave):
        @Weave.do
        def user(self):
            return 1

    with raises(TypeError, wove.DefinitionError, "cannot be instantiated directly") as info:
        Report()
    assert "weave(Report)" in str(info.value)


def test_weave_given_something_else_than_a_weave_class():
    with raises(TypeError, wove.DefinitionError, "Weave subclass"):
        weave(7)


# --- the block's own exception --------------------------------------------------------------


class BodyError(Exception):
    pass


def test_exception_of_the_block_body_propagates_unchanged_and_no_task_runs():
    ran = []
    error = BodyError("from the body")
    w = weave()

    def block():
        with w:

            @w.do
            def first():
                ran.append("first")

            raise error

    with pytest.raises(BodyError) as info:
        block()
    assert info.value is error
    assert ran == []
    with raises(RuntimeError, wove.WeaveStateError):
        _ = w.result


def test_exception_of_an_async_block_body_propagates_unchanged_and_no_task_runs():
    ran = []
    error = BodyError("from the body")

    async def main():
        async with weave() as w:

            @w.do
            async def first():
                ran.append("first")

            raise error

    with pytest.raises(BodyError) as info:
        asyncio.run(main())
    assert info.value is error
    assert ran == []


def test_bad_input_in_an_async_block_is_refused_before_any_task_runs():
    ran = []

    async def main():
        async with weave() as w:

            @w.do
            async def first():
                ran.append("first")

            @w.do
            async def second(frist):
                ran.append("second")

    with raises(NameError, wove.UnresolvedNameError, "did you mean 'first'"):
        asyncio.run(main())
    assert ran == []
