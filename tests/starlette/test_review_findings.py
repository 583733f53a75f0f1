"""Defects found in review of the Starlette adapter, each shown by a test."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest
import starlette_testapp
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette_support import client, run

from wove import WeaveStateError
from wove.contrib.starlette import WoveMiddleware, detach
from wove.contrib.traces import DETACHED, TraceStore


def store_of(app: Starlette) -> TraceStore:
    store: TraceStore = app.state.wove_traces
    return store


def test_root_path_is_stripped_only_at_a_path_segment_boundary() -> None:
    """A server that does not prefix ``path`` with ``root_path`` (the older ASGI reading)
    with ``root_path="/as"`` and ``path="/async-weave"``: Starlette routes the request to
    ``/async-weave`` (its ``get_route_path`` checks the boundary); Wove must record the
    same path, not ``ync-weave``."""
    app = starlette_testapp.build()

    async def with_root() -> None:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, root_path="/as")
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            reply = await c.get("/async-weave")
        assert reply.status_code == 200

    run(with_root())
    (trace,) = store_of(app).recent()
    assert trace.path == "/async-weave"


def test_a_mounted_app_serves_its_trace_pages_under_its_root_path() -> None:
    inner = starlette_testapp.build(debug=True)
    outer = Starlette(routes=[Mount("/sub", app=inner)])

    async def main() -> None:
        async with client(outer) as c:
            assert (await c.get("/sub/async-weave")).status_code == 200
            page = await c.get("/sub/wove/")
        assert page.status_code == 200
        assert 'href="/sub/wove/' in page.text
        (trace,) = store_of(inner).recent()
        assert trace.path == "/async-weave"

    run(main())


def test_detach_after_the_request_finished_is_refused_not_silently_lost() -> None:
    """A task the endpoint started that calls ``detach()`` once the middleware has run
    the request's detached work: the work would never run, and nothing would say so."""
    outcome: list[str] = []
    late: list[asyncio.Task[None]] = []

    async def spawning(request: Request) -> Response:
        async def later() -> None:
            await asyncio.sleep(0.05)
            try:
                detach(starlette_testapp.note, "late")
            except WeaveStateError:
                outcome.append("refused")
            else:
                outcome.append("accepted")

        late.append(asyncio.create_task(later()))
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/spawn", spawning)], middleware=[Middleware(WoveMiddleware)])

    async def main() -> None:
        async with client(app) as c:
            assert (await c.get("/spawn")).text == "ok"
        await late[0]

    run(main())
    ran = [name for name, _ in starlette_testapp.ran]
    assert outcome == ["refused"] or "late" in ran, (outcome, ran)


def test_detached_work_cancelled_is_traced_and_the_rest_is_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The request's task is cancelled while its detached work runs (a server's graceful
    shutdown timing out): the work's trace is filed with the cancellation, and the work
    not yet started is logged as dropped, rather than both vanishing."""

    async def forever() -> None:
        gate.set()
        await asyncio.Event().wait()

    async def detaching(request: Request) -> Response:
        detach(forever)
        detach(starlette_testapp.note, "second")
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/d", detaching)], middleware=[Middleware(WoveMiddleware)])
    gate: Any = None

    async def main() -> None:
        nonlocal gate
        gate = asyncio.Event()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/d",
            "raw_path": b"/d",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"testserver")],
            "server": ("testserver", 80),
            "client": ("127.0.0.1", 1234),
        }
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        task = asyncio.create_task(app(scope, receive, send))
        await asyncio.wait_for(gate.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert sent[-1]["type"] == "http.response.body"

    with caplog.at_level(logging.WARNING, logger="wove"):
        run(main())
    detached = [t for t in store_of(app).recent() if t.method == DETACHED]
    assert [t.path.rsplit(".", 1)[-1] for t in detached] == ["forever after GET /d"]
    assert detached[0].error is not None
    assert "Cancelled" in detached[0].error
    assert "second" not in [name for name, _ in starlette_testapp.ran]
    assert any("note" in r.getMessage() and "not started" in r.getMessage() for r in caplog.records)
