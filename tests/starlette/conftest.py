"""Shared by the Starlette adapter's tests (part of the core session: no Django)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from typing import Any

import httpx
import pytest
import starlette_testapp


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Each test runs its own event loop (so anyio's thread limiter is fresh)."""
    return asyncio.run(coroutine)


def client(app: Any) -> httpx.AsyncClient:
    """httpx in process: the whole ASGI call (detached work included) ends before a
    request returns, so ordering is checked with :func:`watching` instead of clocks."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def watching(app: Any, events: list[tuple[str, str]]) -> Any:
    """``app`` with a note in ``events`` once its last body message reached the server."""

    async def watched(scope: Any, receive: Any, send: Any) -> None:
        async def watch(message: Any) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                events.append(("body sent", ""))

        await app(scope, receive, watch)

    return watched


@pytest.fixture(autouse=True)
def _fresh_app_state() -> Iterator[None]:
    starlette_testapp.ran.clear()
    starlette_testapp.release.clear()
    yield
    starlette_testapp.release.set()  # never leave a held endpoint waiting
