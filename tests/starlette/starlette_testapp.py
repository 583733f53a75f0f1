"""The Starlette app the adapter's tests run, in process (httpx's ASGITransport) and
under a real uvicorn (``uvicorn --factory starlette_testapp:served``, options from the
environment)."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from wove import Weave, weave
from wove.contrib.starlette import WoveMiddleware, detach

TASKS = {"from_thread", "from_loop", "page"}

#: Where work detached by the tests says it ran, in process: (name, thread name).
ran: list[tuple[str, str]] = []
#: Set by the async endpoint's sync task; the sync endpoints of the limiter test wait on it.
release = threading.Event()


async def async_weave(request: Request) -> Response:
    delay = float(request.query_params.get("delay", "0.01"))
    async with weave(delay=delay) as w:

        @w.do
        def from_thread(delay: float) -> str:
            time.sleep(delay)
            return threading.current_thread().name

        @w.do
        async def from_loop(delay: float) -> str:
            await asyncio.sleep(delay)
            return "loop"

        @w.do
        def page(from_thread: str, from_loop: str) -> dict[str, str]:
            return {"thread": from_thread, "loop": from_loop}

    return JSONResponse(w.result.final)


def sync_weave(request: Request) -> Response:
    delay = float(request.query_params.get("delay", "0.01"))
    with weave(delay=delay) as w:

        @w.do
        def from_thread(delay: float) -> str:
            time.sleep(delay)
            return threading.current_thread().name

        @w.do
        async def from_loop(delay: float) -> str:
            await asyncio.sleep(delay)
            return "loop"

        @w.do
        def page(from_thread: str, from_loop: str) -> dict[str, str]:
            return {"thread": from_thread, "loop": from_loop}

    return JSONResponse(w.result.final)


def hold(request: Request) -> Response:
    """A sync endpoint (it holds one of anyio's thread tokens) whose weave's sync task
    waits until the async endpoint ``/release`` runs its own weave's sync task."""
    with weave() as w:

        @w.do
        def wait_for_release() -> bool:
            return release.wait(30)

    return JSONResponse({"released": w.result.final})


async def release_holders(request: Request) -> Response:
    async with weave() as w:

        @w.do
        def set_release() -> str:
            release.set()
            return threading.current_thread().name

    return JSONResponse({"thread": w.result.final})


def write_marker(path: str, delay: float) -> None:
    time.sleep(delay)
    Path(path).write_text(json.dumps({"pid": os.getpid(), "at": time.time()}))


def note(name: str) -> None:
    ran.append((name, threading.current_thread().name))


async def note_async(name: str) -> None:
    await asyncio.sleep(0)
    ran.append((name, "loop"))


def fail(reason: str) -> None:
    raise ValueError(reason)


class Restock(Weave):
    @Weave.do
    def counted(self, shelf: str) -> int:
        ran.append((f"counted {shelf}", threading.current_thread().name))
        return 3

    @Weave.do
    async def ordered(self, counted: int) -> int:
        ran.append((f"ordered {counted}", "loop"))
        return counted


async def detach_work(request: Request) -> Response:
    """``?kind=`` what to detach; ``?mode=``; a marker file for the real-server tests."""
    kind = request.query_params.get("kind", "note")
    mode: Any = request.query_params.get("mode") or None
    if kind == "marker":
        query = request.query_params
        detach(write_marker, query["path"], float(query["delay"]), mode=mode)
    elif kind == "note":
        detach(note, "sync note", mode=mode)
        detach(note_async, "async note", mode=mode)
    elif kind == "fail":
        detach(fail, "broken on purpose", mode=mode)
    elif kind == "weave":
        detach(Restock, shelf="A1", mode=mode)
    elif kind == "decorator":

        @detach
        def decorated() -> None:
            ran.append(("decorated", threading.current_thread().name))

    return PlainTextResponse("sent")


def detach_then_raise(request: Request) -> Response:
    detach(note, "never")
    raise RuntimeError("the endpoint failed")


async def stream(request: Request) -> Response:
    async def body() -> AsyncIterator[bytes]:
        yield b"first "
        async with weave() as w:

            @w.do
            async def in_body() -> bytes:
                return b"second"

        yield w.result.final

    return StreamingResponse(body())


async def no_weave(request: Request) -> Response:
    return PlainTextResponse("plain")


ROUTES = [
    Route("/async-weave", async_weave),
    Route("/sync-weave", sync_weave),
    Route("/hold", hold),
    Route("/release", release_holders),
    Route("/detach", detach_work),
    Route("/detach-then-raise", detach_then_raise),
    Route("/stream", stream),
    Route("/plain", no_weave),
]


def build(*, debug: bool = False, **options: Any) -> Starlette:
    middleware = [Middleware(WoveMiddleware, **options)]
    return Starlette(debug=debug, routes=ROUTES, middleware=middleware)


def served() -> Starlette:
    """For uvicorn: options as JSON in WOVE_TEST_OPTIONS; WOVE_TEST_FORK_SERVER=1 starts
    Wove's fork server first (uvicorn calls this factory before it starts any thread)."""
    if os.environ.get("WOVE_TEST_FORK_SERVER") == "1":
        import wove

        wove.start_fork_server()
    options = json.loads(os.environ.get("WOVE_TEST_OPTIONS", "{}"))
    return build(trace_access=lambda request: True, **options)
