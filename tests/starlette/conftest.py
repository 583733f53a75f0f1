"""Shared by the Starlette adapter's tests (part of the core session: no Django)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import starlette_testapp


@pytest.fixture(autouse=True)
def _fresh_app_state() -> Iterator[None]:
    starlette_testapp.ran.clear()
    starlette_testapp.release.clear()
    yield
    starlette_testapp.release.set()  # never leave a held endpoint waiting
