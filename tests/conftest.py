"""The Django adapter's tests (tests/django) run in their own pytest session, with
pytest-django and the test project's settings (``make unit`` runs both sessions):

    pytest                                               # the core, no Django configured
    pytest tests/django --ds=wove_testproject.settings   # the Django adapter
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_DJANGO_TESTS = Path(__file__).parent / "django"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path == _DJANGO_TESTS:
        configured = config.getoption("ds", None) or os.environ.get("DJANGO_SETTINGS_MODULE")
        return not configured
    return None
