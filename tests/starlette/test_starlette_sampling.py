"""WoveMiddleware(trace_sample_rate=..., trace_slow_ms=...): a share of requests recorded
in full; a failed or slow request always kept."""

from __future__ import annotations

from typing import Any

import pytest
import starlette_testapp
from starlette.applications import Starlette
from starlette_support import client, run

from wove import InvalidOptionError
from wove.contrib.starlette import WoveMiddleware
from wove.contrib.traces import TraceStore


def store_of(app: Starlette) -> TraceStore:
    store: TraceStore = app.state.wove_traces
    return store


def test_rate_zero_drops_a_fast_request_and_sends_no_header() -> None:
    app = starlette_testapp.build(server_timing=True, trace_sample_rate=0.0)

    async def main() -> None:
        async with client(app) as c:
            reply = await c.get("/async-weave")
        assert reply.status_code == 200
        assert "server-timing" not in reply.headers
        assert len(store_of(app)) == 0

    run(main())


def test_rate_zero_keeps_a_slow_request_with_its_header() -> None:
    app = starlette_testapp.build(server_timing=True, trace_sample_rate=0.0, trace_slow_ms=0)

    async def main() -> None:
        async with client(app) as c:
            reply = await c.get("/async-weave")
        assert reply.headers["server-timing"].startswith("wove;dur=")
        (trace,) = store_of(app).recent()
        assert {r.task for r in trace.records} == starlette_testapp.TASKS

    run(main())


def test_rate_zero_keeps_a_request_that_raised() -> None:
    app = starlette_testapp.build(trace_sample_rate=0.0)

    async def main() -> None:
        async with client(app) as c:
            try:
                await c.get("/detach-then-raise")
            except RuntimeError:
                pass  # the test transport may re-raise it, or answer 500
        (trace,) = store_of(app).recent()
        assert trace.error is not None
        assert "RuntimeError" in trace.error

    run(main())


def test_rate_one_keeps_every_request() -> None:
    app = starlette_testapp.build(trace_sample_rate=1.0)

    async def main() -> None:
        async with client(app) as c:
            for _ in range(3):
                await c.get("/sync-weave")
        assert len(store_of(app)) == 3

    run(main())


@pytest.mark.parametrize(
    "options",
    [
        {"trace_sample_rate": 2},
        {"trace_sample_rate": -0.5},
        {"trace_sample_rate": "1"},
        {"trace_sample_rate": True},
        {"trace_slow_ms": -1},
        {"trace_slow_ms": "fast"},
        {"trace_unsampled_timings": "yes"},
    ],
)
def test_bad_sampling_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(InvalidOptionError, match="trace_"):
        WoveMiddleware(starlette_testapp.build(), **options)
