"""Helpers of the Starlette adapter's tests, imported by name (``from starlette_support
import client``): a module called ``conftest`` would be ambiguous, as every test
directory has one."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import httpx


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
