"""The endpoint of the Starlette overhead measurement: a weave of 10 tasks (5 sync, 5
async), with or without ``WoveMiddleware``; see ``wrk_overhead.sh`` and
docs/performance.md. ``WITH_WOVE``: 1 recording with Server-Timing, 2 recording without
it, 3 ``record=False``, anything else no middleware. ``WORK``: seconds each task waits.
``TRACE_SAMPLE_RATE``: the middleware's ``trace_sample_rate``;
``TRACE_UNSAMPLED_TIMINGS=0``: ``trace_unsampled_timings=False``.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from wove import weave
from wove.contrib.starlette import WoveMiddleware

WORK = float(os.environ.get("WORK", "0"))
OPTIONS: dict[str, dict[str, Any]] = {
    "1": {"server_timing": True},
    "2": {"server_timing": False},
    "3": {"record": False},
}


def _sync_task(index: int) -> Any:
    def task() -> int:
        if WORK:
            time.sleep(WORK)
        return index

    task.__name__ = f"sync{index}"
    return task


def _async_task(index: int) -> Any:
    async def task() -> int:
        if WORK:
            await asyncio.sleep(WORK)
        return index

    task.__name__ = f"async{index}"
    return task


async def ten(request: Request) -> PlainTextResponse:
    async with weave() as w:
        for index in range(5):
            w.do(_sync_task(index))
            w.do(_async_task(index))
    return PlainTextResponse("ok")


def make() -> Starlette:
    options = OPTIONS.get(os.environ.get("WITH_WOVE", ""))
    if options is not None and os.environ.get("TRACE_SAMPLE_RATE"):
        options = {**options, "trace_sample_rate": float(os.environ["TRACE_SAMPLE_RATE"])}
    if options is not None and os.environ.get("TRACE_UNSAMPLED_TIMINGS") == "0":
        options = {**options, "trace_unsampled_timings": False}
    middleware = [Middleware(WoveMiddleware, **options)] if options is not None else []
    return Starlette(routes=[Route("/", ten)], middleware=middleware)
