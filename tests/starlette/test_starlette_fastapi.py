"""The same middleware and ``detach()`` in a FastAPI app (FastAPI is a test dependency
only): async and sync path operations, with their weaves traced and work detached."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import starlette_testapp
from fastapi import FastAPI
from starlette_support import client, run, watching

from wove import weave
from wove.contrib.starlette import WoveMiddleware, detach
from wove.contrib.traces import DETACHED, TraceStore


def make_app() -> FastAPI:
    app = FastAPI(debug=True)
    app.add_middleware(WoveMiddleware, server_timing=True)

    @app.get("/items/{item_id}")
    async def read_item(item_id: int) -> dict[str, object]:
        async with weave(item_id=item_id) as w:

            @w.do
            def stock(item_id: int) -> int:
                time.sleep(0.01)
                return item_id * 2

            @w.do
            async def price(item_id: int) -> float:
                await asyncio.sleep(0.01)
                return item_id + 0.5

            @w.do
            def item(stock: int, price: float) -> dict[str, object]:
                return {"stock": stock, "price": price, "thread": threading.current_thread().name}

        detach(starlette_testapp.note, f"item {item_id}")
        return w.result.final

    @app.get("/sync-items/{item_id}")
    def read_item_sync(item_id: int) -> dict[str, object]:
        with weave(item_id=item_id) as w:

            @w.do
            def stock(item_id: int) -> int:
                return item_id * 2

            @w.do
            async def price(item_id: int) -> float:
                return item_id + 0.5

        detach(starlette_testapp.note_async, f"sync item {item_id}")
        return {"stock": w.result["stock"], "price": w.result["price"]}

    return app


@pytest.mark.parametrize(
    ("path", "tasks", "note"),
    [
        ("/items/3", {"stock", "price", "item"}, "item 3"),
        ("/sync-items/3", {"stock", "price"}, "sync item 3"),
    ],
)
def test_fastapi_endpoints_are_traced_and_detach_after_the_response(
    path: str, tasks: set[str], note: str
) -> None:
    app = make_app()

    async def main() -> None:
        async with client(watching(app, starlette_testapp.ran)) as c:
            reply = await c.get(path)
            listing = (await c.get("/wove/traces.json")).json()
        assert reply.status_code == 200
        assert reply.json()["stock"] == 6
        for name in tasks:
            assert f"wove.{name};dur=" in reply.headers["server-timing"]
        assert [name for name, _ in starlette_testapp.ran][:2] == ["body sent", note]
        store: TraceStore = app.state.wove_traces
        (request,) = [t for t in store.recent() if t.method == "GET"]
        assert {r.task for r in request.records} == tasks
        assert all(r.status == "ok" for r in request.records)
        (detached,) = [t for t in store.recent() if t.method == DETACHED]
        assert detached.path.endswith(f"after GET {path}")
        assert [t["path"] for t in listing["traces"]] == [detached.path, path]

    run(main())
