"""The trace pages, served by the middleware under ``trace_path`` (default ``/wove/``):
recent requests as a waterfall, one request, and the same as JSON. Requests that
``trace_access`` refuses (by default: all, unless the app has ``debug=True``) get 404."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

from wove.contrib.traces import RequestRecorder, trace_json, waterfall_html

from .conf import WoveOptions, allowed

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_NO_CACHE = {"Cache-Control": "no-store, private"}


async def serve(
    scope: Scope,
    receive: Receive,
    send: Send,
    options: WoveOptions,
    recorder: RequestRecorder,
    rest: str,
) -> None:
    """Answer the request for ``{trace_path}{rest}``."""
    request = Request(scope, receive)
    debug = bool(getattr(scope.get("app"), "debug", False))
    if not await allowed(options, request, debug):
        response: Response = _not_found("no such page")
    elif request.method not in ("GET", "HEAD"):
        response = PlainTextResponse("method not allowed", 405, headers={"Allow": "GET, HEAD"})
    else:
        assert options.trace_path is not None
        base = scope.get("root_path", "") + options.trace_path
        response = _page(recorder, rest, base)
    await response(scope, receive, send)


def _page(recorder: RequestRecorder, rest: str, base: str) -> Response:
    store = recorder.store
    assert store is not None
    if rest == "":
        return HTMLResponse(waterfall_html(store.recent(), base_url=base), headers=_NO_CACHE)
    if rest == "traces.json":
        body = {"traces": [trace_json(t) for t in store.recent()]}
        return JSONResponse(body, headers=_NO_CACHE)
    if rest.endswith(".json") and "/" not in rest:
        trace = store.get(rest.removesuffix(".json"))
        if trace is None:
            return _not_found(f"no trace {rest.removesuffix('.json')!r}")
        return JSONResponse(trace_json(trace), headers=_NO_CACHE)
    if rest.endswith("/") and rest.count("/") == 1:
        trace_id = rest[:-1]
        trace = store.get(trace_id)
        if trace is None:
            return _not_found(
                f"no trace {trace_id!r}: it was never stored, or newer ones replaced it"
            )
        title = f"{trace.method} {trace.path}"
        page = waterfall_html([trace], title=title, base_url=base, back_link=True)
        return HTMLResponse(page, headers=_NO_CACHE)
    return _not_found("no such page")


def _not_found(text: str) -> Response:
    return PlainTextResponse(text, 404, headers=_NO_CACHE)
