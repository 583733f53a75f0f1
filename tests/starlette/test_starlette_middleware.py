"""WoveMiddleware in process (httpx's ASGITransport): traces, Server-Timing, the trace
pages and their access rule, lifespan, and anyio's thread limiter."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import anyio.to_thread
import pytest
import starlette_testapp
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import Response
from starlette_support import client, run

from wove import InvalidOptionError
from wove.contrib.starlette import WoveMiddleware
from wove.contrib.traces import TraceStore

TASKS = starlette_testapp.TASKS


def store_of(app: Starlette) -> TraceStore:
    store: TraceStore = app.state.wove_traces
    return store


def tasks(trace: Any) -> dict[str, Any]:
    """task name -> its record, for a trace with one record per task."""
    return {r.task: r for r in trace.records}


@pytest.mark.parametrize("path", ["/async-weave", "/sync-weave"])
def test_every_task_of_an_endpoint_is_in_its_trace(path: str) -> None:
    app = starlette_testapp.build(server_timing=True)

    async def main() -> None:
        async with client(app) as c:
            reply = await c.get(path)
        assert reply.status_code == 200
        assert reply.json()["thread"].startswith("wove-")  # Wove's pool, not anyio's
        (trace,) = store_of(app).recent()
        assert (trace.method, trace.path, trace.status, trace.error) == ("GET", path, 200, None)
        by_task = tasks(trace)
        assert set(by_task) == TASKS
        assert {name: r.status for name, r in by_task.items()} == dict.fromkeys(TASKS, "ok")
        assert by_task["from_thread"].lane == "thread"
        assert by_task["from_loop"].lane == "loop"
        timing = reply.headers["server-timing"]
        assert timing.startswith("wove;dur=")
        for name in TASKS:
            assert f"wove.{name};dur=" in timing

    run(main())


class Tagging(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        response.headers["x-tagged"] = "yes"
        return response


@pytest.mark.parametrize("path", ["/async-weave", "/sync-weave", "/stream"])
@pytest.mark.parametrize("where", ["outside", "inside"])
def test_traces_stay_complete_with_a_base_http_middleware(path: str, where: str) -> None:
    """BaseHTTPMiddleware runs the rest of the app in another task with a copied
    context: around Wove's middleware or within it, every weave is still recorded."""
    wove_layer = Middleware(WoveMiddleware, server_timing=True)
    tagging = Middleware(Tagging)
    layers = [tagging, wove_layer] if where == "outside" else [wove_layer, tagging]
    app = Starlette(routes=starlette_testapp.ROUTES, middleware=layers)

    async def main() -> None:
        async with client(app) as c:
            replies = await asyncio.gather(*(c.get(path) for _ in range(5)))
        assert [r.status_code for r in replies] == [200] * 5
        assert all(r.headers["x-tagged"] == "yes" for r in replies)
        traces = store_of(app).recent()
        assert len(traces) == 5
        expected = {"in_body"} if path == "/stream" else TASKS
        for trace in traces:
            assert trace.status == 200
            assert {r.task for r in trace.records} == expected
            assert all(r.status == "ok" for r in trace.records)

    run(main())


def test_weaves_run_while_a_streamed_body_is_produced_are_traced() -> None:
    """The trace is finished at the last body message, not when the headers leave."""
    app = starlette_testapp.build(server_timing=True)

    async def main() -> None:
        async with client(app) as c:
            reply = await c.get("/stream")
        assert reply.text == "first second"
        # The header left before the body's weave ran: no entry, but the trace has it.
        assert "server-timing" not in reply.headers
        (trace,) = store_of(app).recent()
        assert [r.task for r in trace.records] == ["in_body"]

    run(main())


def test_server_timing_follows_debug_unless_set() -> None:
    async def timing(**options: Any) -> str | None:
        app = starlette_testapp.build(**options)
        async with client(app) as c:
            reply = await c.get("/async-weave")
        assert reply.status_code == 200
        value: str | None = reply.headers.get("server-timing")
        return value

    async def main() -> None:
        assert await timing() is None
        assert (await timing(debug=True) or "").startswith("wove;dur=")
        assert await timing(debug=True, server_timing=False) is None
        assert (await timing(server_timing=True) or "").startswith("wove;dur=")
        assert await timing(debug=True, record=False) is None

    run(main())


def test_an_app_header_is_kept_and_a_request_without_weaves_gets_none() -> None:
    async def with_header(request: Request) -> Response:
        return Response("x", headers={"Server-Timing": "db;dur=3"})

    from starlette.routing import Route

    app = Starlette(
        routes=[*starlette_testapp.ROUTES, Route("/own", with_header)],
        middleware=[Middleware(WoveMiddleware, server_timing=True)],
    )

    async def main() -> None:
        async with client(app) as c:
            own = await c.get("/own")
            plain = await c.get("/plain")
        assert own.headers["server-timing"] == "db;dur=3"  # no weave: nothing added
        assert "server-timing" not in plain.headers
        assert store_of(app).recent() == []  # empty requests are not kept by default

    run(main())


def test_keep_empty_traces_and_a_bounded_store() -> None:
    app = starlette_testapp.build(keep_empty_traces=True, trace_store_size=3)

    async def main() -> None:
        async with client(app) as c:
            for _ in range(5):
                await c.get("/plain")
        assert len(store_of(app)) == 3
        assert store_of(app).max_requests == 3

    run(main())


def test_a_failing_endpoint_is_traced_with_its_error() -> None:
    app = starlette_testapp.build()

    async def main() -> None:
        async with client(app) as c:
            reply = await c.get("/detach-then-raise")
        assert reply.status_code == 500
        (trace,) = store_of(app).recent()
        assert trace.status is None
        assert trace.error == "RuntimeError: the endpoint failed"

    run(main())


def test_trace_pages_are_hidden_unless_debug() -> None:
    app = starlette_testapp.build()

    async def main() -> None:
        async with client(app) as c:
            await c.get("/async-weave")
            for page in ("/wove/", "/wove/traces.json", f"/wove/{store_of(app).recent()[0].id}/"):
                assert (await c.get(page)).status_code == 404

    run(main())


def test_trace_pages_with_debug() -> None:
    app = starlette_testapp.build(debug=True)

    async def main() -> None:
        async with client(app) as c:
            await c.get("/async-weave")
            (trace,) = store_of(app).recent()
            page = await c.get("/wove/")
            listing = (await c.get("/wove/traces.json")).json()
            one = (await c.get(f"/wove/{trace.id}.json")).json()
            detail = await c.get(f"/wove/{trace.id}/")
            missing = await c.get("/wove/nope.json")
            missing_page = await c.get("/wove/nope/")
            posted = await c.post("/wove/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["cache-control"] == "no-store, private"
        assert "/async-weave" in page.text
        assert f'href="/wove/{trace.id}.json"' in page.text
        assert [t["id"] for t in listing["traces"]] == [trace.id]
        assert {r["task"] for r in one["records"]} == TASKS
        assert one == listing["traces"][0]
        assert detail.status_code == 200
        assert "GET /async-weave" in detail.text
        assert (missing.status_code, missing_page.status_code) == (404, 404)
        assert posted.status_code == 405
        # The pages are not traced themselves.
        assert [t.path for t in store_of(app).recent()] == ["/async-weave"]

    run(main())


@pytest.mark.parametrize("asynchronous", [False, True])
def test_trace_access_decides_who_sees_the_pages(asynchronous: bool) -> None:
    def sync_rule(request: Request) -> bool:
        return request.headers.get("x-staff") == "yes"

    async def async_rule(request: Request) -> bool:
        await asyncio.sleep(0)
        return sync_rule(request)

    app = starlette_testapp.build(
        debug=True, trace_access=async_rule if asynchronous else sync_rule
    )

    async def main() -> None:
        async with client(app) as c:
            refused = await c.get("/wove/traces.json")  # even with debug=True
            allowed = await c.get("/wove/traces.json", headers={"x-staff": "yes"})
        assert refused.status_code == 404
        assert allowed.status_code == 200

    run(main())


def test_trace_path_is_configurable_or_off() -> None:
    moved = starlette_testapp.build(debug=True, trace_path="/_debug/traces/")
    off = starlette_testapp.build(debug=True, trace_path=None)

    async def main() -> None:
        async with client(moved) as c:
            assert (await c.get("/_debug/traces/traces.json")).status_code == 200
            assert (await c.get("/wove/")).status_code == 404  # no such route in the app
        async with client(off) as c:
            assert (await c.get("/wove/")).status_code == 404

    run(main())


def test_sync_endpoints_never_wait_for_anyio_thread_tokens() -> None:
    """anyio's limiter at 2 tokens: two sync endpoints hold both and wait for a sync task
    of an async endpoint's weave, then more sync endpoints than tokens run weaves of sync
    tasks at once. Wove's own pool runs every task, so nothing waits for a token."""

    async def main() -> None:
        anyio.to_thread.current_default_thread_limiter().total_tokens = 2
        app = starlette_testapp.build()
        async with client(app) as c:
            holders = [asyncio.create_task(c.get("/hold")) for _ in range(2)]
            await asyncio.sleep(0.2)  # both sync endpoints now hold a token each
            assert anyio.to_thread.current_default_thread_limiter().borrowed_tokens == 2
            released = await asyncio.wait_for(c.get("/release"), 10)
            held = await asyncio.wait_for(asyncio.gather(*holders), 10)
            many = await asyncio.wait_for(
                asyncio.gather(*(c.get("/sync-weave?delay=0.05") for _ in range(8))), 20
            )
        assert released.json()["thread"].startswith("wove-")
        assert [r.json() for r in held] == [{"released": True}] * 2
        assert [r.status_code for r in many] == [200] * 8
        assert all(r.json()["thread"].startswith("wove-") for r in many)
        assert len(store_of(app).recent()) == 11

    run(main())


async def lifespan_of(app: Any) -> tuple[asyncio.Queue[Any], list[Any], asyncio.Task[None]]:
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.create_task(app(scope, inbox.get, send))
    await inbox.put({"type": "lifespan.startup"})
    while not sent:
        await asyncio.sleep(0.01)
    assert sent[-1]["type"] == "lifespan.startup.complete"
    return inbox, sent, task


def test_the_store_starts_and_stops_with_the_lifespan(tmp_path: Any) -> None:
    app = starlette_testapp.build()
    marker = tmp_path / "marker.json"

    async def main() -> None:
        assert not hasattr(app.state, "wove_traces")
        inbox, sent, task = await lifespan_of(app)
        store = store_of(app)  # made at startup, before any request
        async with client(app) as c:
            await c.get("/async-weave")
            assert len(store) == 1
            # Work detached in this process and still running at shutdown is waited for.
            slow = asyncio.create_task(
                c.get("/detach", params={"kind": "marker", "path": str(marker), "delay": 0.5})
            )
            await asyncio.sleep(0.2)
            await inbox.put({"type": "lifespan.shutdown"})
            await asyncio.wait_for(task, 10)
            assert sent[-1]["type"] == "lifespan.shutdown.complete"
            assert marker.exists()
            assert len(store) == 0  # emptied at shutdown
            await slow
            # A request after shutdown starts a new store lazily.
            await c.get("/async-weave")
        assert store_of(app) is not store
        assert len(store_of(app)) == 1

    run(main())


def test_without_a_lifespan_the_store_starts_on_the_first_request() -> None:
    app = starlette_testapp.build()

    async def main() -> None:
        async with client(app) as c:
            await c.get("/plain")
        assert isinstance(store_of(app), TraceStore)

    run(main())


def test_max_threads_is_applied_at_startup() -> None:
    import wove

    before = wove.settings().max_threads
    app = starlette_testapp.build(max_threads=before + 1)

    async def main() -> None:
        inbox, _sent, task = await lifespan_of(app)
        assert wove.settings().max_threads == before + 1
        await inbox.put({"type": "lifespan.shutdown"})
        await task

    try:
        run(main())
    finally:
        wove.configure(max_threads=before)


def test_a_websocket_passes_through() -> None:
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    async def echo(socket: WebSocket) -> None:
        await socket.accept()
        await socket.send_text(await socket.receive_text())
        await socket.close()

    app = Starlette(routes=[WebSocketRoute("/ws", echo)], middleware=[Middleware(WoveMiddleware)])

    async def main() -> list[Any]:
        inbox: asyncio.Queue[Any] = asyncio.Queue()
        for message in ({"type": "websocket.connect"}, {"type": "websocket.receive", "text": "hi"}):
            await inbox.put(message)
        sent: list[Any] = []

        async def send(message: Any) -> None:
            sent.append(message)

        scope = {"type": "websocket", "path": "/ws", "headers": [], "query_string": b""}
        await asyncio.wait_for(app(scope, inbox.get, send), 5)
        return sent

    sent = run(main())
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert sent[1]["text"] == "hi"


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("record", "yes"),
        ("server_timing", 1),
        ("server_timing_entries", 0),
        ("trace_store_size", True),
        ("trace_path", "wove"),
        ("trace_path", "/wove"),
        ("trace_access", "staff"),
        ("max_threads", 0),
        ("detach_mode", "thread"),
        ("shutdown_timeout", -1),
    ],
)
def test_bad_options_are_refused_when_the_app_builds_its_middleware(
    option: str, value: Any
) -> None:
    with pytest.raises(InvalidOptionError, match=option):
        WoveMiddleware(starlette_testapp.build(), **{option: value})


def test_trace_json_is_plain_json() -> None:
    app = starlette_testapp.build(debug=True)

    async def main() -> None:
        async with client(app) as c:
            await c.get("/sync-weave")
            body = (await c.get("/wove/traces.json")).content
        assert json.loads(body)["traces"][0]["path"] == "/sync-weave"

    run(main())


def test_an_endpoint_knows_its_trace_id_and_its_page_links_back_to_the_list() -> None:
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from wove import weave

    async def endpoint(request: Request) -> Response:
        trace_id = request.scope["wove.trace_id"]  # set before the endpoint runs
        async with weave() as w:

            @w.do
            def only() -> int:
                return 1

        return JSONResponse({"trace": trace_id, "only": w.result.only})

    app = Starlette(
        debug=True, routes=[Route("/own", endpoint)], middleware=[Middleware(WoveMiddleware)]
    )

    async def main() -> None:
        async with client(app) as c:
            reply = (await c.get("/own")).json()
            page = (await c.get(f"/wove/{reply['trace']}/")).text
            listing = (await c.get("/wove/")).text
        (trace,) = store_of(app).recent()
        assert reply == {"trace": trace.id, "only": 1}
        assert '<p class="nav"><a href="/wove/">' in page
        assert "· 1 task ·" in page
        assert f'href="/wove/{trace.id}/"' in listing
        assert "All recent requests" not in listing

    run(main())
