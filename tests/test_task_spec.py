"""make_spec: signature introspection, options validation, UNSET inheritance."""

import functools

import pytest

import wove
from wove.task_spec import UNSET, MapSource, TaskOptions, make_spec

NO_OPTIONS = TaskOptions()


def spec_of(function, source=None, options=NO_OPTIONS, **kwargs):
    return make_spec(function, source, options, **kwargs)


# --- signature introspection ---------------------------------------------------------


def test_sync_function_name_params_and_defaults():
    def priced(book, currency="EUR", *args, rate, fee=1, **kwargs):
        return book

    spec = spec_of(priced)
    assert spec.name == "priced"
    assert spec.function is priced
    assert spec.is_async is False
    assert spec.params == ("book", "currency", "rate", "fee")
    assert spec.signature.with_default == {"currency", "fee"}
    assert spec.map_source is None


def test_async_function_is_async():
    async def author():
        return 1

    assert spec_of(author).is_async is True


def test_callable_object_with_async_call_is_async_and_named_after_its_class():
    class FetchUser:
        async def __call__(self, user_id):
            return user_id

    spec = spec_of(FetchUser())
    assert spec.is_async is True
    assert spec.name == "fetch_user"
    assert spec.params == ("user_id",)


def test_callable_object_with_sync_call_is_sync():
    class Counter:
        def __call__(self, start=0):
            return start

    spec = spec_of(Counter())
    assert spec.is_async is False
    assert spec.params == ("start",)
    assert spec.signature.with_default == {"start"}


def test_a_partial_is_refused_for_it_has_no_name_of_its_own():
    # Every partial would be named "partial", and the second would silently replace the
    # first.
    def total(a, b):
        return a + b

    with pytest.raises(wove.DefinitionError, match=r"partial\(.*total, \.\.\.\).*def name"):
        spec_of(functools.partial(total, b=2))


def test_takes_self_drops_the_first_parameter():
    def summary(self, user, limit=3):
        return user

    spec = spec_of(summary, takes_self=True)
    assert spec.params == ("user", "limit")
    assert spec.takes_self is True


def test_takes_self_without_any_parameter_is_refused():
    def summary():
        return 1

    with pytest.raises(wove.DefinitionError, match="self"):
        spec_of(summary, takes_self=True)


def test_positional_only_parameter_is_refused():
    def priced(book, /):
        return book

    with pytest.raises(wove.DefinitionError, match="positional-only") as info:
        spec_of(priced)
    assert isinstance(info.value, TypeError)
    assert "'book'" in str(info.value)


def test_functions_sharing_code_share_their_signature():
    def factory():
        def total(a, b=1):
            return a + b

        return total

    first, second = factory(), factory()
    assert first is not second
    assert spec_of(first).signature is spec_of(second).signature


def test_explicit_dunder_signature_is_respected():
    import inspect

    def total(*args, **kwargs):
        return args

    total.__signature__ = inspect.Signature(
        [inspect.Parameter("x", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    )
    assert spec_of(total).params == ("x",)


# --- what can be decorated -------------------------------------------------------------


def test_coroutine_object_is_refused():
    async def author():
        return 1

    coroutine = author()
    try:
        with pytest.raises(wove.DefinitionError, match="coroutine") as info:
            spec_of(coroutine)
    finally:
        coroutine.close()
    assert isinstance(info.value, TypeError)
    assert "async def" in str(info.value)


def test_non_callable_is_refused():
    with pytest.raises(wove.DefinitionError, match="callable") as info:
        spec_of(42)
    assert isinstance(info.value, TypeError)
    assert "int" in str(info.value)


# --- map sources -------------------------------------------------------------------------


def test_map_source_by_name():
    spec = spec_of(lambda item: item, "books")
    assert spec.map_source == MapSource(name="books")


def test_map_source_by_iterable():
    items = [1, 2, 3]
    spec = spec_of(lambda item: item, items)
    assert spec.map_source.name is None
    assert spec.map_source.iterable is items


def test_map_source_that_is_neither_name_nor_iterable_is_refused():
    with pytest.raises(wove.DefinitionError, match="iterable") as info:
        spec_of(lambda item: item, 3.5)
    assert "float" in str(info.value)


# --- options validation ------------------------------------------------------------------


def test_defaults_when_no_option_is_given():
    spec = spec_of(lambda: 1)
    assert (spec.retries, spec.timeout, spec.workers, spec.limit_per_minute) == (
        0,
        None,
        None,
        None,
    )
    assert spec.options == TaskOptions(UNSET, UNSET, UNSET, UNSET)
    assert repr(UNSET) == "UNSET"


def test_valid_options_are_kept():
    options = TaskOptions(retries=3, timeout=0.5, workers=2, limit_per_minute=30)
    spec = spec_of(lambda item: item, [1], options)
    assert (spec.retries, spec.timeout, spec.workers, spec.limit_per_minute) == (3, 0.5, 2, 30)


@pytest.mark.parametrize("retries", [-1, 1.5, True, "2"])
def test_bad_retries_are_refused(retries):
    with pytest.raises(wove.InvalidOptionError, match="retries") as info:
        spec_of(lambda: 1, None, TaskOptions(retries=retries))
    assert isinstance(info.value, ValueError)
    assert repr(retries) in str(info.value)


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), True, "5"])
def test_bad_timeout_is_refused(timeout):
    with pytest.raises(wove.InvalidOptionError, match="timeout"):
        spec_of(lambda: 1, None, TaskOptions(timeout=timeout))


def test_timeout_none_means_no_timeout():
    assert spec_of(lambda: 1, None, TaskOptions(timeout=None)).timeout is None


@pytest.mark.parametrize("workers", [0, -2, 1.5, True])
def test_bad_workers_are_refused(workers):
    with pytest.raises(wove.InvalidOptionError, match="workers"):
        spec_of(lambda item: item, [1], TaskOptions(workers=workers))


@pytest.mark.parametrize("limit", [0, -5, float("nan")])
def test_bad_limit_per_minute_is_refused(limit):
    with pytest.raises(wove.InvalidOptionError, match="limit_per_minute"):
        spec_of(lambda item: item, [1], TaskOptions(limit_per_minute=limit))


@pytest.mark.parametrize("option", ["workers", "limit_per_minute"])
def test_mapping_only_options_on_unmapped_task_are_refused(option):
    with pytest.raises(wove.InvalidOptionError, match="mapped") as info:
        spec_of(lambda: 1, None, TaskOptions(**{option: 2}))
    assert isinstance(info.value, ValueError)
    assert option in str(info.value)


# --- inheritance with UNSET ---------------------------------------------------------------


def test_inherit_takes_only_the_fields_not_given():
    base = TaskOptions(retries=2, timeout=5.0, workers=4, limit_per_minute=60)
    assert TaskOptions(timeout=1.0).inherit(base) == TaskOptions(2, 1.0, 4, 60)


def test_explicit_zero_and_none_win_over_inherited_values():
    base = TaskOptions(retries=2, timeout=5.0)
    inherited = TaskOptions(retries=0, timeout=None).inherit(base)
    assert inherited.retries == 0
    assert inherited.timeout is None


def test_overriding_inherits_options_of_the_replaced_spec():
    def user():
        return 1

    replaced = spec_of(user, None, TaskOptions(retries=2, timeout=5.0))
    override = spec_of(user, None, TaskOptions(timeout=1.0)).overriding(replaced)
    assert (override.retries, override.timeout) == (2, 1.0)


def test_unmapped_override_drops_mapping_only_options():
    def user(item):
        return item

    replaced = spec_of(user, [1], TaskOptions(retries=1, workers=2, limit_per_minute=60))
    override = spec_of(user).overriding(replaced)
    assert override.retries == 1
    assert (override.workers, override.limit_per_minute) == (None, None)
    assert override.map_source is None
