"""The published package's key phrases appear in our errors, next to the fix-it detail,
so code and tests that match them keep working."""

import pytest

import wove
from wove import Weave, weave


def test_keyword_data_says_it_is_a_reserved_name():
    with pytest.raises(wove.ReservedNameError, match="'data' is a reserved name") as info:
        weave(data={"a": 1})
    assert "under another name" in str(info.value)  # the fix


def test_task_named_data_says_it_is_a_reserved_name():
    reserved = pytest.raises(wove.ReservedNameError, match="'data' is a reserved name")
    with reserved as info, weave() as w:

        @w.do
        def data():
            return 1

    assert "rename the function" in str(info.value)


def test_task_named_after_a_result_attribute_conflicts_with_a_built_in_attribute():
    conflicts = pytest.raises(wove.ReservedNameError, match="conflicts with a built-in attribute")
    with conflicts as info, weave() as w:

        @w.do
        def timings():
            return 1

    assert "rename the function" in str(info.value)


def test_cycle_says_circular_dependency_detected():
    with pytest.raises(RuntimeError, match="Circular dependency detected") as info, weave() as w:

        @w.do
        def a(b):
            return 1

        @w.do
        def b(a):
            return 2

    assert "break the loop" in str(info.value)


def test_mapped_task_without_an_item_parameter():
    with (
        pytest.raises(
            TypeError, match="must have exactly one parameter that is not a dependency"
        ) as info,
        weave(n=1) as w,
    ):

        @w.do([1, 2])
        def each(n):
            return n

    assert "add a parameter for the item" in str(info.value)


def test_mapped_task_with_two_item_parameters():
    with (
        pytest.raises(
            TypeError, match="must have exactly one parameter that is not a dependency"
        ) as info,
        weave() as w,
    ):

        @w.do([1, 2])
        def each(item, other):
            return item

    assert "'other'" in str(info.value)


def test_unknown_map_source_says_depends_on():
    with pytest.raises(NameError, match="depends on 'numbrs'") as info, weave() as w:

        @w.do
        def numbers():
            return [1, 2]

        @w.do("numbrs")
        def doubled(item):
            return item * 2

    assert "did you mean 'numbers'?" in str(info.value)


def test_instantiating_a_weave_class_says_pass_the_class_instead():
    class Lookups(Weave):
        @Weave.do
        def user(self):
            return 1

    with pytest.raises(TypeError, match="cannot be instantiated directly") as info:
        Lookups()
    assert "Instead, pass the class" in str(info.value)
    assert "weave(Lookups)" in str(info.value)
