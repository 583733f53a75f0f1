"""``detach(mode="fork")`` under the OpenTelemetry instrumentation: the forked child
writes its runs and attempts down and reports them; the parent makes their spans, in
the request's trace, under the span current at ``detach()``. The child itself exports
nothing of Wove's."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from wove import Weave, weave
from wove.contrib.opentelemetry import WoveInstrumentor
from wove.contrib.starlette import WoveMiddleware, detach
from wove.contrib.traces.detached import run_forked
from wove.contrib.traces.forked import fork_reports

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

WAIT = 20.0  # seconds, at most, for a child's report


class ByPid(SpanExporter):
    """Writes ``pid name`` of each span it exports to a file, from any process (a forked
    child keeps regular files): what the child exported itself."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self.path.open("a") as file:
            for span in spans:
                file.write(f"{os.getpid()} {span.name}\n")
        return SpanExportResult.SUCCESS


@pytest.fixture
def exported(tmp_path: Path) -> Iterator[tuple[TracerProvider, InMemorySpanExporter, Path]]:
    memory = InMemorySpanExporter()
    log = tmp_path / "exported.txt"
    log.touch()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.add_span_processor(SimpleSpanProcessor(ByPid(log)))
    WoveInstrumentor().instrument(tracer_provider=provider)
    try:
        yield provider, memory, log
    finally:
        WoveInstrumentor().uninstrument()
        provider.shutdown()


class Restock(Weave):
    @Weave.do
    def shelves(self) -> list[str]:
        time.sleep(0.01)
        return ["A", "B"]

    @Weave.do("shelves")
    def counted(self, shelf: str) -> int:
        time.sleep(0.01)
        if shelf == "B":
            raise LookupError("shelf B is gone")
        return 3


def build(tracer_provider: TracerProvider) -> object:
    tracer = tracer_provider.get_tracer("shop")

    async def restock(request: Request) -> Response:
        with tracer.start_as_current_span("plan restock"):  # current at detach()
            detach(Restock, mode="fork")
        return PlainTextResponse("queued")

    app = Starlette(routes=[Route("/restock", restock)], middleware=[Middleware(WoveMiddleware)])
    return OpenTelemetryMiddleware(app, tracer_provider=tracer_provider)


def _until(check: object, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"no {what} after {WAIT} s"
        time.sleep(0.02)


def _span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def _parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def test_a_forked_childs_spans_are_made_in_the_requests_trace(
    exported: tuple[TracerProvider, InMemorySpanExporter, Path],
) -> None:
    provider, memory, log = exported
    app = build(provider)
    before = time.time_ns()

    async def main() -> None:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            assert (await c.get("/restock")).text == "queued"

    asyncio.run(main())
    answered = time.time_ns()

    def wove_spans() -> list[ReadableSpan]:
        names = ("shelves", "counted")
        spans = memory.get_finished_spans()
        return [s for s in spans if s.name.startswith("weave ") or s.name in names]

    _until(lambda: len(wove_spans()) == 4, "spans of the child's weave and tasks")
    spans = memory.get_finished_spans()
    (request,) = [s for s in spans if s.kind is SpanKind.SERVER]
    (planned,) = [s for s in spans if s.name == "plan restock"]
    (run,) = [s for s in spans if s.name.startswith("weave ")]
    tasks = sorted(
        (s for s in spans if s.name in ("shelves", "counted")),
        key=lambda s: (s.name, (s.attributes or {}).get("wove.item_index", -1)),
    )
    assert [s.name for s in tasks] == ["counted", "counted", "shelves"]
    # One trace; the weave under the span current at detach(), the tasks under the weave.
    assert request.context is not None
    trace_id = request.context.trace_id
    assert {s.context.trace_id for s in [planned, run, *tasks] if s.context} == {trace_id}
    assert _parent_id(planned) == _span_id(request)
    assert _parent_id(run) == _span_id(planned)
    assert {_parent_id(s) for s in tasks} == {_span_id(run)}
    # Named and attributed as a weave run in this process, plus the child's pid.
    this_file = Path(__file__).read_text().splitlines()
    line = 1 + next(n for n, text in enumerate(this_file) if "detach(Restock" in text)
    origin = f"{__file__}:{line}"
    attributes = dict(run.attributes or {})
    pid = attributes.pop("wove.pid")
    assert isinstance(pid, int)
    assert pid != os.getpid()
    assert run.name == f"weave test_opentelemetry_fork.py:{line}"
    assert attributes == {"wove.weave": origin}
    assert run.kind is SpanKind.INTERNAL
    first, second, shelves = tasks
    for span, index in ((first, 0), (second, 1), (shelves, None)):
        expected: dict[str, object] = {
            "wove.task": span.name,
            "wove.lane": "thread",
            "wove.attempt": 0,
            "wove.weave": origin,
        }
        if index is not None:
            expected["wove.item_index"] = index
        assert dict(span.attributes or {}) == expected
        assert span.kind is SpanKind.INTERNAL
    # Statuses: the failed item ERROR with its exception (type and message), the run too.
    assert first.status.status_code is StatusCode.UNSET
    assert not first.events
    assert second.status.status_code is StatusCode.ERROR
    assert second.status.description == "LookupError: shelf B is gone"
    (event,) = second.events
    assert event.name == "exception"
    assert dict(event.attributes or {}) == {
        "exception.type": "LookupError",
        "exception.message": "shelf B is gone",
    }
    assert run.status.status_code is StatusCode.ERROR
    # The child's clock: in order, after detach(), within the work's time.
    for span in (run, *tasks):
        assert span.start_time is not None
        assert span.end_time is not None
        assert span.start_time <= span.end_time
        assert planned.start_time is not None
        assert span.start_time >= planned.start_time
        assert span.end_time <= time.time_ns()
        assert span.start_time < answered + int(WAIT * 1e9)
    assert run.start_time is not None
    assert run.end_time is not None
    assert shelves.start_time is not None
    assert shelves.end_time is not None
    assert run.start_time <= shelves.start_time <= shelves.end_time <= run.end_time
    assert shelves.end_time - shelves.start_time >= 9_000_000  # its 10 ms sleep
    for item in (first, second):
        assert item.start_time is not None
        assert item.start_time >= shelves.end_time
    assert request.start_time is not None
    assert request.start_time >= before
    # The child exported none of Wove's spans itself: only this process did.
    lines = [text.split(" ", 1) for text in log.read_text().splitlines()]
    assert {pid_text for pid_text, _ in lines} == {str(os.getpid())}
    assert sum(name.startswith("weave ") for _, name in lines) == 1


def test_without_a_span_current_at_detach_the_childs_weave_starts_a_trace(
    exported: tuple[TracerProvider, InMemorySpanExporter, Path],
) -> None:
    _provider, memory, _ = exported

    async def restock(request: Request) -> Response:
        detach(Restock, mode="fork")
        return PlainTextResponse("queued")

    app = Starlette(routes=[Route("/", restock)], middleware=[Middleware(WoveMiddleware)])

    async def main() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            await c.get("/")

    asyncio.run(main())
    _until(lambda: len(memory.get_finished_spans()) == 4, "spans of the child")
    spans = memory.get_finished_spans()
    (run,) = [s for s in spans if s.name.startswith("weave ")]
    assert run.parent is None
    assert {s.context.trace_id for s in spans if s.context} == {
        run.context.trace_id if run.context else 0
    }


def test_uninstrumented_the_child_reports_no_spans(tmp_path: Path) -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))

    async def restock(request: Request) -> Response:
        with provider.get_tracer("t").start_as_current_span("view"):
            detach(Restock, mode="fork")
        return PlainTextResponse("queued")

    app = Starlette(routes=[Route("/", restock)], middleware=[Middleware(WoveMiddleware)])

    async def main() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            await c.get("/")

    asyncio.run(main())
    _until(lambda: fork_reports().waiting == 0, "report")
    assert [s.name for s in memory.get_finished_spans()] == ["view"]


def _nested_work() -> int:
    with weave() as w:

        @w.do
        def inner() -> int:
            return 1

    return int(w.result.final)


def test_a_weave_run_inside_the_childs_task_nests_under_its_span(
    exported: tuple[TracerProvider, InMemorySpanExporter, Path],
) -> None:
    """``run_forked`` outside a request: what is current when it starts is the parent."""
    provider, memory, _ = exported
    with provider.get_tracer("t").start_as_current_span("job") as job:
        run_forked(_nested_work, (), {}, "nested", None)
    _until(lambda: len(memory.get_finished_spans()) == 5, "spans of the child")
    by_name = {s.name: s for s in memory.get_finished_spans()}
    (outer, nested) = sorted(
        (s for s in by_name.values() if s.name.startswith("weave ")),
        key=lambda s: s.start_time or 0,
    )
    assert _parent_id(outer) == job.get_span_context().span_id
    assert _parent_id(by_name["_nested_work"]) == _span_id(outer)
    assert _parent_id(nested) == _span_id(by_name["_nested_work"])
    assert _parent_id(by_name["inner"]) == _span_id(nested)
    assert (nested.attributes or {})["wove.pid"] == (outer.attributes or {})["wove.pid"]
