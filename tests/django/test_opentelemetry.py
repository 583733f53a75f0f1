"""A Django request instrumented with opentelemetry-instrumentation-django and Wove's
instrumentor: one trace, request span -> weave span -> task spans, the tasks on pool
threads included, with the SQL count the adapter measured."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import AsyncClient, Client, override_settings
from opentelemetry.instrumentation.django import DjangoInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from wove.contrib.django.recording import store
from wove.contrib.opentelemetry import WoveInstrumentor

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """Both instrumentors on a provider of this test's own (the global one is not set).
    Instrumenting Django adds its middleware to settings.MIDDLEWARE: the clients are made
    after it."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    DjangoInstrumentor().instrument(tracer_provider=provider)
    WoveInstrumentor().instrument(tracer_provider=provider)
    try:
        yield exporter
    finally:
        WoveInstrumentor().uninstrument()
        DjangoInstrumentor().uninstrument()
        provider.shutdown()


def _id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def _check_one_trace(spans: tuple[ReadableSpan, ...], tasks: set[str]) -> dict[str, ReadableSpan]:
    (request,) = [s for s in spans if s.kind is SpanKind.SERVER]
    (weave_span,) = [s for s in spans if s.name.startswith("weave views.py:")]
    assert weave_span.parent is not None
    assert weave_span.parent.span_id == _id(request)
    by_name = {s.name: s for s in spans if s.name in tasks}
    assert set(by_name) == tasks
    for span in by_name.values():
        assert span.parent is not None, span.name
        assert span.parent.span_id == _id(weave_span), span.name
    assert len({s.context.trace_id for s in spans if s.context is not None}) == 1
    return by_name


def test_a_sync_view_is_one_trace_request_weave_tasks(exporter: InMemorySpanExporter) -> None:
    response = Client().get("/parallel/")
    assert response.status_code == 200
    tasks = _check_one_trace(exporter.get_finished_spans(), {"authors", "books", "totals"})
    for name in ("authors", "books"):
        attributes = tasks[name].attributes or {}
        assert attributes["wove.lane"] == "thread"  # on a pool thread
        assert attributes["wove.sql.count"] == 1
        assert isinstance(attributes["wove.sql.time"], float)
    assert "wove.sql.count" not in (tasks["totals"].attributes or {})  # it ran no query


def test_the_sql_count_is_there_without_wove_recording_the_request(
    exporter: InMemorySpanExporter,
) -> None:
    """The spans alone make the tasks traced, so the adapter counts their queries."""
    store().clear()
    with override_settings(WOVE={"RECORD": False}):
        response = Client().get("/parallel/")
    assert response.status_code == 200
    assert store().recent() == []  # Wove's own trace of the request was not recorded
    tasks = _check_one_trace(exporter.get_finished_spans(), {"authors", "books", "totals"})
    assert (tasks["authors"].attributes or {})["wove.sql.count"] == 1


def test_an_async_view_is_one_trace_request_weave_tasks(exporter: InMemorySpanExporter) -> None:
    response = asyncio.run(AsyncClient().get("/parallel-async/"))  # type: ignore[arg-type]
    assert response.status_code == 200
    tasks = _check_one_trace(exporter.get_finished_spans(), {"authors", "books"})
    for span in tasks.values():
        attributes = span.attributes or {}
        assert attributes["wove.lane"] == "thread"
        assert attributes["wove.sql.count"] == 1


def test_a_thread_sensitive_task_on_the_request_thread_is_in_the_trace(
    exporter: InMemorySpanExporter,
) -> None:
    response = Client().get("/sensitive/")
    assert response.status_code == 200
    tasks = _check_one_trace(exporter.get_finished_spans(), {"seen_here", "pool_thread"})
    assert (tasks["seen_here"].attributes or {})["wove.lane"] == "caller"
    assert (tasks["pool_thread"].attributes or {})["wove.lane"] == "thread"


def test_work_detached_into_a_fork_is_in_the_requests_trace(
    exporter: InMemorySpanExporter, tmp_path: Path
) -> None:
    """The forked child reports its run; its spans are made here, under the request's."""
    marker = tmp_path / "marker"
    response = Client().get("/detach/", {"marker": str(marker), "mode": "fork"})
    assert response.content == b"sent"
    deadline = time.monotonic() + 20
    while not [s for s in exporter.get_finished_spans() if s.name == "_write_marker"]:
        assert time.monotonic() < deadline, "no span of the forked child's task"
        time.sleep(0.02)
    child_pid = int(marker.read_text())
    assert child_pid != os.getpid()
    spans = exporter.get_finished_spans()
    (request,) = [s for s in spans if s.kind is SpanKind.SERVER]
    (weave_span,) = [s for s in spans if s.name.startswith("weave views.py:")]
    (task,) = [s for s in spans if s.name == "_write_marker"]
    assert weave_span.parent is not None
    assert weave_span.parent.span_id == _id(request)
    assert task.parent is not None
    assert task.parent.span_id == _id(weave_span)
    assert len({s.context.trace_id for s in spans if s.context is not None}) == 1
    assert (weave_span.attributes or {})["wove.pid"] == child_pid
    assert (task.attributes or {})["wove.lane"] == "thread"
    assert request.end_time is not None
    assert task.start_time is not None
    assert task.start_time >= request.start_time  # type: ignore[operator]


@pytest.mark.timeout(60)
def test_work_detached_in_the_background_is_in_the_requests_trace(
    exporter: InMemorySpanExporter, tmp_path: Path
) -> None:
    """It starts when the response is closed, after the request's span has ended: its
    weave's span is still a child of the span current at ``detach()``."""
    marker = tmp_path / "marker"
    response = Client().get("/detach/", {"marker": str(marker), "mode": "background"})
    assert response.content == b"sent"
    deadline = time.monotonic() + 20
    while not [s for s in exporter.get_finished_spans() if s.name.startswith("weave views.py:")]:
        assert time.monotonic() < deadline, "no span of the detached weave"
        time.sleep(0.02)
    assert int(marker.read_text()) == os.getpid()
    spans = exporter.get_finished_spans()
    (request,) = [s for s in spans if s.kind is SpanKind.SERVER]
    (weave_span,) = [s for s in spans if s.name.startswith("weave views.py:")]
    (task,) = [s for s in spans if s.name == "_write_marker"]
    assert weave_span.parent is not None
    assert weave_span.parent.span_id == _id(request)
    assert task.parent is not None
    assert task.parent.span_id == _id(weave_span)
    assert len({s.context.trace_id for s in spans if s.context is not None}) == 1
    assert request.end_time is not None
    assert weave_span.start_time is not None
    assert weave_span.start_time >= request.end_time  # it started after the response
