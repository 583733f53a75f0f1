"""Small list helpers for shaping data between tasks."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeVar

from .errors import InvalidOptionError

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")


def flatten(list_of_lists: Iterable[Iterable[T]]) -> list[T]:
    """One level of nesting removed: ``[[1, 2], [3]]`` -> ``[1, 2, 3]``."""
    return [item for inner in list_of_lists for item in inner]


def fold(items: Iterable[T], size: int) -> list[list[T]]:
    """Consecutive chunks of ``size`` items (the last may be shorter)."""
    _check_positive("size", size)
    seq = list(items)
    return [seq[i : i + size] for i in range(0, len(seq), size)]


def batch(items: Iterable[T], count: int) -> list[list[T]]:
    """``count`` consecutive chunks of near-equal length (fewer if there are fewer items).

    The first ``len(items) % count`` chunks hold one item more than the others.
    """
    _check_positive("count", count)
    seq = list(items)
    chunks = min(count, len(seq))
    if not chunks:
        return []
    size, extra = divmod(len(seq), chunks)
    out, start = [], 0
    for i in range(chunks):
        end = start + size + (1 if i < extra else 0)
        out.append(seq[start:end])
        start = end
    return out


def undict(mapping: Mapping[K, V]) -> list[tuple[K, V]]:
    """A dict as a list of ``(key, value)`` pairs, in its order."""
    return list(mapping.items())


def redict(pairs: Iterable[tuple[K, V]]) -> dict[K, V]:
    """``(key, value)`` pairs back into a dict; a later key wins."""
    return dict(pairs)


def denone(items: Iterable[T | None]) -> list[T]:
    """The items that are not ``None`` (``0``, ``""`` and ``False`` are kept)."""
    return [item for item in items if item is not None]


def _check_positive(name: str, value: int) -> None:
    if type(value) is not int or value < 1:
        raise InvalidOptionError(f"{name} must be an int >= 1, got {value!r}")
