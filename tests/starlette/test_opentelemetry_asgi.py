"""A Starlette request through opentelemetry-instrumentation-asgi's middleware, with
Wove's instrumentor: one trace, request span -> weave span -> task spans, for an async
endpoint and a sync one (run on anyio's threads)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import starlette_testapp
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette_support import client, run

from wove.contrib.opentelemetry import WoveInstrumentor


@pytest.fixture
def provider() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    WoveInstrumentor().instrument(tracer_provider=provider)
    try:
        yield provider, exporter
    finally:
        WoveInstrumentor().uninstrument()
        provider.shutdown()


def _id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


@pytest.mark.parametrize("path", ["/async-weave", "/sync-weave"])
def test_a_request_is_one_trace_request_weave_tasks(
    provider: tuple[TracerProvider, InMemorySpanExporter], path: str
) -> None:
    tracer_provider, exporter = provider
    app = OpenTelemetryMiddleware(starlette_testapp.build(), tracer_provider=tracer_provider)

    async def main() -> None:
        async with client(app) as c:
            reply = await c.get(path)
        assert reply.status_code == 200

    run(main())
    spans = exporter.get_finished_spans()
    (request,) = [s for s in spans if s.kind is SpanKind.SERVER]
    assert request.name == f"GET {path}"
    (weave_span,) = [s for s in spans if s.name.startswith("weave starlette_testapp.py:")]
    assert weave_span.parent is not None
    assert weave_span.parent.span_id == _id(request)
    tasks = {s.name: s for s in spans if s.name in starlette_testapp.TASKS}
    assert set(tasks) == starlette_testapp.TASKS
    for span in tasks.values():
        assert span.parent is not None
        assert span.parent.span_id == _id(weave_span)
    assert (tasks["from_thread"].attributes or {})["wove.lane"] == "thread"
    assert (tasks["from_loop"].attributes or {})["wove.lane"] == "loop"
    assert len({s.context.trace_id for s in spans if s.context is not None}) == 1
