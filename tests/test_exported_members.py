"""wove.__all__ and the package's public attributes agree (the idea of httpx's test)."""

import __future__

import types

import wove


def test_every_name_in_all_exists():
    missing = [name for name in wove.__all__ if not hasattr(wove, name)]
    assert missing == []


def test_every_public_attribute_is_in_all():
    public = {
        name
        for name, value in vars(wove).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and not isinstance(value, __future__._Feature)  # `from __future__ import annotations`
    }
    assert public == set(wove.__all__) - {"__version__"}


def test_all_is_sorted_and_unique():
    assert wove.__all__ == sorted(set(wove.__all__))


def test_version_is_exported():
    assert "__version__" in wove.__all__
    assert isinstance(wove.__version__, str)
