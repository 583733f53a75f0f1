"""``WoveMiddleware``: trace every request's weaves, serve the trace pages, and start the
work ``detach()`` registered once the response has been sent.

A pure ASGI middleware (no ``BaseHTTPMiddleware``): it sets the trace collector in the
request's own task, so every weave the app runs for that request is recorded, in async
endpoints, in sync endpoints (Starlette runs them on anyio's worker threads with a copy
of the context) and inside a ``BaseHTTPMiddleware`` placed around or within it. For
each HTTP request it:

- adds a ``Server-Timing`` header to ``http.response.start`` when enabled (headers go
  before the body, so it is built from the trace so far: for an ordinary response that
  is every weave the endpoint ran);
- finishes the trace when the last body message goes out (or when the app returns),
  files it in the bounded store and sets ``scope["wove.trace"]`` (None for a request
  not kept: with ``trace_sample_rate`` below 1.0, only a share of the requests are
  kept, plus every failed or slow one, and the header is sent for those only); the trace's id is
  ``scope["wove.trace_id"]`` from the start (its page: ``{trace_path}{id}/``);
- then runs or starts the work ``detach()`` registered;
- answers ``{trace_path}``, ``{trace_path}{id}/``, ``{trace_path}{id}.json`` and
  ``{trace_path}traces.json`` itself, for the requests ``trace_access`` allows (404
  for the others, so the pages' existence is not shown).

The trace store starts with the app's lifespan (``lifespan.startup``), or with the
first request when no lifespan runs, and is emptied at ``lifespan.shutdown``, after the
work detached in this process has finished (at most ``shutdown_timeout`` seconds).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import wove
from wove import wait_for_background
from wove.contrib.traces import RequestRecorder, TraceStore, server_timing
from wove.contrib.traces.request import describe

from . import after_response, pages
from .conf import DetachMode, TraceAccess, WoveOptions

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class WoveMiddleware:
    """``app.add_middleware(WoveMiddleware, server_timing=True)``, or
    ``Middleware(WoveMiddleware, ...)`` in ``Starlette(middleware=[...])``; every option
    is keyword-only and optional (docs/starlette.md has the table)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        record: bool = True,
        server_timing: bool | None = None,
        server_timing_entries: int = 20,
        trace_store_size: int = 100,
        keep_empty_traces: bool = False,
        trace_sample_rate: float = 1.0,
        trace_slow_ms: float | None = 500.0,
        trace_unsampled_timings: bool = True,
        trace_path: str | None = "/wove/",
        trace_access: TraceAccess | None = None,
        max_threads: int | None = None,
        detach_mode: DetachMode = "background",
        shutdown_timeout: float = 30.0,
    ) -> None:
        self.app = app
        self.options = WoveOptions(
            record=record,
            server_timing=server_timing,
            server_timing_entries=server_timing_entries,
            trace_store_size=trace_store_size,
            keep_empty_traces=keep_empty_traces,
            trace_sample_rate=trace_sample_rate,
            trace_slow_ms=trace_slow_ms,
            trace_unsampled_timings=trace_unsampled_timings,
            trace_path=trace_path,
            trace_access=trace_access,
            max_threads=max_threads,
            detach_mode=detach_mode,
            shutdown_timeout=shutdown_timeout,
        )
        self._lock = threading.Lock()
        self._recorder: RequestRecorder | None = None
        self._detaching = 0  # requests now running their detached work in this process
        self._idle: asyncio.Event | None = None

    # --- start and stop -------------------------------------------------------------------

    @property
    def store(self) -> TraceStore:
        """The bounded store of this app's recent traces (started on first use)."""
        store = self.start().store
        assert store is not None  # start() always builds one
        return store

    def start(self, app: object = None) -> RequestRecorder:
        """Build the trace store and apply ``max_threads``; at ``lifespan.startup``, or
        lazily on the first request. Does nothing once started."""
        recorder = self._recorder
        if recorder is None:
            with self._lock:
                if self._recorder is None:
                    if self.options.max_threads is not None:
                        wove.configure(max_threads=self.options.max_threads)
                    self._recorder = RequestRecorder(
                        TraceStore(self.options.trace_store_size),
                        keep_empty=self.options.keep_empty_traces,
                        sample_rate=self.options.trace_sample_rate,
                        slow_ms=self.options.trace_slow_ms,
                        unsampled_timings=self.options.trace_unsampled_timings,
                    )
                recorder = self._recorder
        state = getattr(app, "state", None)
        if state is not None and getattr(state, "wove_traces", None) is not recorder.store:
            state.wove_traces = recorder.store  # request.app.state.wove_traces
        return recorder

    async def stop(self) -> bool:
        """Wait (at most ``shutdown_timeout`` seconds) for detached work still running in
        this process and for background weaves, then empty and drop the store. False if
        some work was still running at the deadline."""
        deadline = time.monotonic() + self.options.shutdown_timeout
        done = True
        if self._detaching:
            idle = self._idle = asyncio.Event()
            try:
                await asyncio.wait_for(idle.wait(), max(deadline - time.monotonic(), 0.0))
            except TimeoutError:
                done = False
        left = max(deadline - time.monotonic(), 0.0)
        # A plain thread, not anyio's limiter or the loop's executor: they may be full.
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        loop = asyncio.get_running_loop()

        def wait() -> None:
            finished = wait_for_background(left)
            loop.call_soon_threadsafe(_settle, waiter, finished)

        threading.Thread(target=wait, name="wove-shutdown", daemon=True).start()
        done = await waiter and done
        with self._lock:
            recorder, self._recorder = self._recorder, None
        if recorder is not None and recorder.store is not None:
            recorder.store.clear()
        return done

    # --- ASGI -----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = scope.get("app")

        async def receive_and_start() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.start(app)
            return message

        async def stop_then_send(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await self.stop()
            await send(message)

        await self.app(scope, receive_and_start, stop_then_send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = scope.get("app")
        recorder = self._recorder or self.start(app)  # lazily, when no lifespan ran
        options = self.options
        method: str = scope["method"]
        path = _route_path(scope)
        if options.trace_path is not None and path.startswith(options.trace_path):
            await pages.serve(
                scope, receive, send, options, recorder, path[len(options.trace_path) :]
            )
            return
        record = options.record
        pending, token = after_response.open_pending(
            method, path, recorder if record else None, options.detach_mode
        )
        active = recorder.begin(method, path) if record else None
        if active is not None:  # for a page that links to its own trace
            scope["wove.trace_id"] = active.id
        timing = options.server_timing
        if timing is None:
            timing = _debug(app)
        entries = options.server_timing_entries
        status: int | None = None

        async def send_traced(message: Message) -> None:
            nonlocal status
            kind = message["type"]
            if kind == "http.response.start":
                status = message["status"]
                if timing and active is not None and active.keeps(status):
                    value = server_timing(active.snapshot(status), entries)
                    if value:
                        headers = list(message.get("headers", ()))
                        headers.append((b"server-timing", value.encode("latin-1")))
                        message = {**message, "headers": headers}
            elif (
                kind == "http.response.body"
                and not message.get("more_body", False)
                and active is not None
                and not active.finished
            ):
                scope["wove.trace"] = active.finish(status)
            await send(message)

        try:
            if active is None:
                await self.app(scope, receive, send_traced)
            else:
                with recorder.collecting(active):
                    await self.app(scope, receive, send_traced)
        except BaseException as exc:
            if active is not None and not active.finished:
                scope["wove.trace"] = active.finish(status, error=describe(exc))
            after_response.drop(pending, f"the endpoint raised {type(exc).__name__}")
            raise
        finally:
            after_response.close_pending(token, pending)
        if active is not None and not active.finished:  # no final body message was sent
            scope["wove.trace"] = active.finish(status)
        if pending.items:
            await self._detach(pending)

    async def _detach(self, pending: after_response.PendingWork) -> None:
        self._detaching += 1
        try:
            await after_response.run_all(pending)
        finally:
            self._detaching -= 1
            if not self._detaching and self._idle is not None:
                self._idle.set()


def _settle(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)


def _route_path(scope: Scope) -> str:
    """The path within the app (without the ``root_path`` it is mounted under)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :] or "/"
    return path


def _debug(app: object) -> bool:
    """The app's ``debug`` flag (Starlette and FastAPI set ``scope["app"]``)."""
    return bool(getattr(app, "debug", False))


__all__ = ["WoveMiddleware"]
