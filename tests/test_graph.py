"""build_graph, purely: nothing runs here."""

import pytest

import wove
from wove.graph import build_graph
from wove.task_spec import TaskOptions, make_spec


def specs(*functions, sources=None):
    """Task specs by name, in the order given; ``sources`` maps names to map sources."""
    sources = sources or {}
    made = [make_spec(f, sources.get(f.__name__), TaskOptions()) for f in functions]
    return {spec.name: spec for spec in made}


def diamond():
    def a():
        pass

    def b(a):
        pass

    def c(a, user_id):
        pass

    def d(b, c, data):
        pass

    return specs(a, b, c, d)


def test_dependencies_and_dependents():
    graph = build_graph(diamond(), {"user_id": 7})
    tasks = graph.tasks
    assert list(tasks) == ["a", "b", "c", "d"]
    assert tasks["a"].dependencies == frozenset()
    assert tasks["c"].dependencies == {"a"}  # a keyword is an input, not a dependency
    assert tasks["d"].dependencies == {"b", "c"}  # `data` is not a dependency
    assert tasks["a"].dependents == ("b", "c")
    assert tasks["d"].dependents == ()
    assert tasks["c"].inputs == ("a", "user_id")
    assert tasks["d"].inputs == ("b", "c", "data")


def test_tiers_order_roots_and_final():
    graph = build_graph(diamond(), {"user_id": 7})
    assert graph.tiers == (("a",), ("b", "c"), ("d",))
    assert graph.order[0] == "a"
    assert graph.order[-1] == "d"
    assert set(graph.order[1:3]) == {"b", "c"}
    assert graph.roots == ("a",)
    assert graph.final == "d"


def test_final_is_last_defined_not_last_in_order():
    def total(a, b):
        pass

    def a():
        pass

    def b():
        pass

    graph = build_graph(specs(total, a, b), {})
    assert graph.final == "b"
    assert graph.order[-1] == "total"
    assert graph.roots == ("a", "b")


def test_tier_is_the_longest_path_not_the_shortest():
    def a():
        pass

    def b(a):
        pass

    def c(a, b):
        pass

    assert build_graph(specs(a, b, c), {}).tiers == (("a",), ("b",), ("c",))


def test_empty_graph():
    graph = build_graph({}, {})
    assert (graph.order, graph.tiers, graph.roots, graph.final) == ((), (), (), None)


def test_has_async():
    async def a():
        pass

    def b():
        pass

    assert build_graph(specs(a, b), {}).has_async is True
    assert build_graph(specs(b), {}).has_async is False


def test_parameter_with_default_that_names_nothing_is_not_an_input():
    def a(retries=3):
        pass

    assert build_graph(specs(a), {}).tasks["a"].inputs == ()


# --- mapping ----------------------------------------------------------------------------


def test_mapped_over_a_task_depends_on_it_and_gets_an_item_param():
    def books():
        pass

    def priced(book, currency):
        pass

    graph = build_graph(specs(books, priced, sources={"priced": "books"}), {"currency": "EUR"})
    plan = graph.tasks["priced"]
    assert plan.dependencies == {"books"}
    assert plan.item_param == "book"
    assert plan.inputs == ("currency",)
    assert graph.tasks["books"].item_param is None


def test_mapped_over_a_keyword_has_no_dependency():
    def priced(book):
        pass

    graph = build_graph(specs(priced, sources={"priced": "ids"}), {"ids": [1, 2]})
    assert graph.tasks["priced"].dependencies == frozenset()
    assert graph.tasks["priced"].item_param == "book"


def test_map_over_a_missing_name():
    def books():
        pass

    def priced(book):
        pass

    with pytest.raises(wove.UnresolvedNameError) as info:
        build_graph(specs(books, priced, sources={"priced": "bokos"}), {})
    message = str(info.value)
    assert "'priced'" in message
    assert "'bokos'" in message
    assert "did you mean 'books'?" in message


def test_map_over_a_non_iterable_keyword():
    def priced(book):
        pass

    with pytest.raises(wove.MappingError, match="not iterable") as info:
        build_graph(specs(priced, sources={"priced": "count"}), {"count": 5})
    assert "'priced'" in str(info.value)
    assert "'count'" in str(info.value)
    assert "int" in str(info.value)


def test_mapped_function_without_free_parameter():
    def books():
        pass

    def priced(books):
        pass

    with pytest.raises(wove.DefinitionError, match="exactly one parameter") as info:
        build_graph(specs(books, priced, sources={"priced": [1, 2]}), {})
    assert "'priced'" in str(info.value)


def test_mapped_function_with_several_free_parameters():
    def priced(book, currency):
        pass

    with pytest.raises(wove.DefinitionError, match="exactly one parameter") as info:
        build_graph(specs(priced, sources={"priced": [1, 2]}), {})
    assert "'book'" in str(info.value)
    assert "'currency'" in str(info.value)


# --- unresolved names -----------------------------------------------------------------------


def test_unresolved_parameter_lists_task_param_names_and_suggestion():
    def author():
        pass

    def context(autor):
        pass

    with pytest.raises(wove.UnresolvedNameError) as info:
        build_graph(specs(author, context), {"user_id": 1})
    message = str(info.value)
    assert isinstance(info.value, NameError)
    assert "task 'context'" in message
    assert "parameter 'autor'" in message
    available = message.split("available names: ")[1].split(";")[0].split(", ")
    assert {"author", "data", "user_id"} <= set(available)
    assert "did you mean 'author'?" in message


def test_unresolved_parameter_without_a_close_match_has_no_suggestion():
    def author():
        pass

    def context(zzz):
        pass

    with pytest.raises(wove.UnresolvedNameError) as info:
        build_graph(specs(author, context), {})
    assert "did you mean" not in str(info.value)


# --- cycles ---------------------------------------------------------------------------------


def test_cycle_of_two():
    def a(b):
        pass

    def b(a):
        pass

    with pytest.raises(wove.CircularDependencyError) as info:
        build_graph(specs(a, b), {})
    assert isinstance(info.value, RuntimeError)
    assert info.value.cycle in {("a", "b", "a"), ("b", "a", "b")}
    assert str(info.value).startswith("Circular dependency detected")
    assert " -> ".join(info.value.cycle) in str(info.value)


def test_cycle_behind_a_root_names_only_the_tasks_on_it():
    def root():
        pass

    def x(root, z):
        pass

    def y(x):
        pass

    def z(y):
        pass

    def tail(z):
        pass

    with pytest.raises(wove.CircularDependencyError, match="Circular dependency detected") as info:
        build_graph(specs(root, x, y, z, tail), {})
    cycle = info.value.cycle
    assert cycle[0] == cycle[-1]
    assert set(cycle) == {"x", "y", "z"}
    assert len(cycle) == 4


def test_task_depending_on_itself():
    def a(a):
        pass

    with pytest.raises(wove.CircularDependencyError, match="Circular dependency detected") as info:
        build_graph(specs(a), {})
    assert info.value.cycle == ("a", "a")


def test_mapping_over_itself_is_a_cycle():
    def a(item):
        pass

    with pytest.raises(wove.CircularDependencyError) as info:
        build_graph(specs(a, sources={"a": "a"}), {})
    assert info.value.cycle == ("a", "a")


# --- reserved names -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["final", "timings", "exception", "cancelled", "data"])
def test_task_with_a_reserved_name(name):
    def task():
        pass

    task.__name__ = name
    with pytest.raises(wove.ReservedNameError, match="conflicts with a built-in attribute") as info:
        build_graph(specs(task), {})
    assert isinstance(info.value, NameError)
    assert repr(name) in str(info.value)


def test_task_with_the_name_of_a_keyword():
    def user_id():
        pass

    with pytest.raises(wove.ReservedNameError, match="same name as a keyword") as info:
        build_graph(specs(user_id), {"user_id": 7})
    assert "'user_id'" in str(info.value)
