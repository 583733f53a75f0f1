"""``WoveMiddleware``: trace every request's weaves, and start detached work after it.

Sync and async capable, so it never forces Django to switch modes around it. Put it
near the top of ``MIDDLEWARE`` so it also sees weaves run by the middleware below it,
but below django-debug-toolbar's middleware, which reads the finished trace.
For each request it:

- records every weave task (and mapped item) run while the request is handled, on any
  thread or loop, into a :class:`~wove.contrib.traces.RequestTrace` kept in the bounded
  store, also set as ``request.wove_trace``; its id is ``request.wove_trace_id`` from
  the start (for a link to its page, ``reverse("wove:trace_detail", args=[id])``);
  with ``WOVE["TRACE_SAMPLE_RATE"]`` below 1.0, only a share of the requests are kept,
  plus every failed or slow one (``request.wove_trace`` is None for the others);
- adds a ``Server-Timing`` header when ``WOVE["SERVER_TIMING"]`` is on (the default
  with ``DEBUG``) and the trace is kept, after any value the app set;
- hooks ``response.close()`` to start the work ``detach()`` registered.

Weaves run while a streaming response's body is produced come after the response has
left the middleware, so they are not part of the trace.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase

from wove.contrib.traces import ActiveRequest, server_timing

from . import after_response, conf
from .recording import recorder


class WoveMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        options = conf.wove_settings()
        pending, token = after_response.open_pending(request.method or "", request.path)
        try:
            with _recording(options, request) as active:
                _name_trace(request, active)
                response: HttpResponseBase = self.get_response(request)
                self._finish(options, request, response, active)
        finally:
            after_response.close_pending(token)
        after_response.start_after(response, pending)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        options = conf.wove_settings()
        pending, token = after_response.open_pending(request.method or "", request.path)
        try:
            with _recording(options, request) as active:
                _name_trace(request, active)
                get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]]
                get_response = self.get_response
                response: HttpResponseBase = await get_response(request)
                self._finish(options, request, response, active)
        finally:
            after_response.close_pending(token)
        after_response.start_after(response, pending)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        """The view raised: drop the work it detached (it may rely on rolled-back data)."""
        pending = after_response.current_pending()
        if pending is not None:
            pending.dropped_because = f"the view raised {type(exception).__name__}"

    @staticmethod
    def _finish(
        options: conf.WoveSettings,
        request: HttpRequest,
        response: HttpResponseBase,
        active: ActiveRequest | None,
    ) -> None:
        if active is None:
            return
        trace = active.finish(response.status_code)
        request.wove_trace = trace  # type: ignore[attr-defined]
        if trace is not None and options.server_timing:
            value = server_timing(trace, options.server_timing_entries)
            if value:
                existing = response.get("Server-Timing")
                response["Server-Timing"] = f"{existing}, {value}" if existing else value


def _name_trace(request: HttpRequest, active: ActiveRequest | None) -> None:
    """``request.wove_trace_id``: the id the trace will have in the store (and in the trace
    pages' URLs), for a view that links to its own trace; None when not recording."""
    request.wove_trace_id = None if active is None else active.id  # type: ignore[attr-defined]


def _recording(
    options: conf.WoveSettings, request: HttpRequest
) -> contextlib.AbstractContextManager[ActiveRequest | None]:
    if not options.record:
        return contextlib.nullcontext()
    return recorder().recording(request.method or "", request.path)
