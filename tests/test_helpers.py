"""flatten, fold, batch, undict, redict, denone."""

import pytest

import wove
from wove import batch, denone, flatten, fold, redict, undict


def test_flatten():
    assert flatten([[1, 2], [3], [], [4, 5]]) == [1, 2, 3, 4, 5]
    assert flatten([[[1]], [2]]) == [[1], 2]  # one level only
    assert flatten(x for x in ((1, 2), (3,))) == [1, 2, 3]


def test_fold():
    assert fold([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]
    assert fold(range(4), 4) == [[0, 1, 2, 3]]
    assert fold(range(3), 10) == [[0, 1, 2]]


def test_batch():
    assert batch([1, 2, 3, 4], 2) == [[1, 2], [3, 4]]
    assert batch(range(3), 5) == [[0], [1], [2]]  # fewer chunks than asked if fewer items
    assert batch(range(3), 1) == [[0, 1, 2]]


def test_batch_distributes_evenly_in_order():
    chunks = batch(range(10), 3)
    assert chunks == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    sizes = [len(chunk) for chunk in batch(range(101), 7)]
    assert len(sizes) == 7
    assert max(sizes) - min(sizes) <= 1
    assert flatten(batch(range(101), 7)) == list(range(101))


def test_undict():
    assert undict({"a": 1, "b": 2}) == [("a", 1), ("b", 2)]


def test_redict():
    assert redict([("a", 1), ("b", 2)]) == {"a": 1, "b": 2}
    assert redict([("a", 1), ("b", 2), ("a", 3)]) == {"a": 3, "b": 2}  # later keys win
    assert redict(undict({"x": 1, "y": 2})) == {"x": 1, "y": 2}


def test_denone_drops_only_none():
    assert denone([0, None, "", False, None, [], 1]) == [0, "", False, [], 1]


@pytest.mark.parametrize(
    "call",
    [
        lambda: flatten([]),
        lambda: fold([], 3),
        lambda: batch([], 3),
        lambda: undict({}),
        lambda: denone([]),
        lambda: denone([None, None]),
    ],
)
def test_empty_input_gives_an_empty_list(call):
    assert call() == []


def test_redict_of_nothing_is_an_empty_dict():
    assert redict([]) == {}


@pytest.mark.parametrize(("function", "name"), [(fold, "size"), (batch, "count")])
@pytest.mark.parametrize("value", [0, -1])
def test_non_positive_size_or_count(function, name, value):
    with pytest.raises(wove.InvalidOptionError, match=name) as info:
        function([1, 2, 3], value)
    assert isinstance(info.value, ValueError)
    assert repr(value) in str(info.value)


def test_size_or_count_zero_with_empty_input_is_still_refused():
    with pytest.raises(ValueError, match="size"):
        fold([], 0)
    with pytest.raises(ValueError, match="count"):
        batch([], 0)
