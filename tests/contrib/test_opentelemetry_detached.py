"""``weave(background=True, fork=...)`` under the OpenTelemetry instrumentation: the
detached child (forked, or a spawned interpreter) writes its run and attempts down and
sends them back; the parent makes their spans under the span current where the block
ended, with the SDK's in-memory exporter reading them here."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from wove import weave
from wove.contrib.opentelemetry import WoveInstrumentor
from wove.contrib.traces.forked import fork_reports

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

WAIT = 30.0  # seconds, at most, for a child's report (a spawned child imports Wove first)


@pytest.fixture
def exported() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    WoveInstrumentor().instrument(tracer_provider=provider)
    try:
        yield provider, memory
    finally:
        WoveInstrumentor().uninstrument()
        provider.shutdown()


@pytest.fixture
def children() -> Iterator[list[int]]:
    """The detached children a test starts: killed by pid at teardown if still ours."""
    started: list[int] = []
    yield started
    for pid in started:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue  # gone
        if b"pytest" in cmdline or b"wove.spawn_child" in cmdline:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, f"no {what} after {WAIT} s"
        time.sleep(0.02)


def _id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def _parent(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


@pytest.mark.timeout(90)
@pytest.mark.parametrize("mode", ["fork", "spawn"])
def test_a_detached_weaves_spans_come_back_under_the_span_current_at_its_block(
    mode: str,
    exported: tuple[TracerProvider, InMemorySpanExporter],
    children: list[int],
) -> None:
    provider, memory = exported

    # Local functions: a spawned child gets them by value (cloudpickle).
    def stock() -> int:
        return 3

    def doubled(stock: int) -> int:
        return stock * 2

    waiting = fork_reports().waiting
    tracer = provider.get_tracer("shop")
    with (
        tracer.start_as_current_span("plan restock") as planning,
        weave(background=True, fork=mode) as w,
    ):
        w.do(stock)
        w.do(doubled)
    assert w.pid is not None
    children.append(w.pid)

    _until(lambda: len(memory.get_finished_spans()) == 4, "spans of the detached child")
    spans = {span.name: span for span in memory.get_finished_spans()}
    (name,) = [n for n in spans if n.startswith("weave ")]
    run = spans[name]
    assert name.startswith("weave test_opentelemetry_detached.py:")
    assert _parent(run) == _id(planning)  # type: ignore[arg-type]
    assert run.attributes is not None
    assert run.attributes["wove.pid"] == w.pid
    for task in ("stock", "doubled"):
        span = spans[task]
        assert _parent(span) == _id(run)
        assert span.attributes is not None
        assert span.attributes["wove.task"] == task
        assert span.attributes["wove.attempt"] == 0
        assert span.status.status_code == StatusCode.UNSET
    assert spans["stock"].end_time <= spans["doubled"].start_time  # type: ignore[operator]
    assert {s.context.trace_id for s in spans.values() if s.context} == {
        planning.get_span_context().trace_id
    }
    _until(lambda: fork_reports().waiting == waiting, "end of the wait for the report")


@pytest.mark.timeout(60)
def test_a_failed_task_of_a_detached_weave_has_status_error_and_its_exception(
    exported: tuple[TracerProvider, InMemorySpanExporter], children: list[int]
) -> None:
    _provider, memory = exported

    def count() -> int:
        raise LookupError("shelf B is gone")

    with weave(background=True, fork="fork") as w:
        w.do(count)
    assert w.pid is not None
    children.append(w.pid)

    _until(lambda: len(memory.get_finished_spans()) == 2, "spans of the detached child")
    spans = {span.name: span for span in memory.get_finished_spans()}
    failed = spans["count"]
    assert failed.status.status_code == StatusCode.ERROR
    assert failed.status.description == "LookupError: shelf B is gone"
    (event,) = failed.events
    assert event.name == "exception"
    assert event.attributes is not None
    assert event.attributes["exception.type"] == "LookupError"
    (run,) = [s for s in spans.values() if s.name.startswith("weave ")]
    assert run.parent is None  # no span was current where the block ended
    assert run.status.status_code == StatusCode.ERROR


@pytest.mark.timeout(60)
def test_not_instrumented_a_detached_weave_is_not_followed(
    tmp_path: Path, children: list[int]
) -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    done = tmp_path / "ran"
    waiting = fork_reports().waiting

    def mark() -> None:
        done.write_text("ran")

    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("view"), weave(background=True, fork="fork") as w:
        w.do(mark)
    assert w.pid is not None
    children.append(w.pid)
    assert fork_reports().waiting == waiting  # no report is expected from this child
    _until(done.exists, "run of the detached child")
    assert [s.name for s in memory.get_finished_spans()] == ["view"]
