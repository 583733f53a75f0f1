"""wove.contrib.opentelemetry: a span per weave run and per task attempt, recorded by the
OpenTelemetry SDK's in-memory exporter on a tracer provider of each test's own (the global
provider is never set)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode

import wove
from wove import TaskTimeout, weave
from wove.contrib.opentelemetry import WoveInstrumentor
from wove.contrib.opentelemetry.base import MinimalInstrumentor
from wove.contrib.opentelemetry.spans import weave_span_name
from wove.lowlevel import annotating

ROOT = Path(__file__).resolve().parents[2]
HERE = os.path.basename(__file__)


@dataclass
class Traced:
    provider: TracerProvider
    exporter: InMemorySpanExporter

    @property
    def tracer(self) -> trace.Tracer:
        return self.provider.get_tracer("tests")

    def spans(self) -> tuple[ReadableSpan, ...]:
        return tuple(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        (span,) = self.named(name)
        return span

    def weaves(self) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name.startswith("weave ")]


def _provider(**options: Any) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(**options)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@pytest.fixture
def traced() -> Iterator[Traced]:
    provider, exporter = _provider()
    WoveInstrumentor().instrument(tracer_provider=provider)
    try:
        yield Traced(provider, exporter)
    finally:
        WoveInstrumentor().uninstrument()
        provider.shutdown()


def parent_of(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def trace_ids(spans: Sequence[ReadableSpan]) -> set[int]:
    return {s.context.trace_id for s in spans if s.context is not None}


def wait_until_ended(traced: Traced, name: str, timeout: float = 5.0) -> ReadableSpan:
    """An abandoned call's span ends when the call returns, on its own thread."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := traced.named(name):
            return found[0]
        time.sleep(0.01)
    raise AssertionError(f"span {name!r} did not end")


# --- the span tree, on every lane -----------------------------------------------------


def test_a_sync_weave_is_one_span_with_a_child_per_task_on_every_lane(traced: Traced) -> None:
    with traced.tracer.start_as_current_span("request"):
        line = sys._getframe().f_lineno + 1
        with weave(city="Oslo") as w:

            @w.do
            def forecast(city: str) -> str:  # a pool thread
                return f"rain in {city}"

            @w.do(thread_sensitive=True)
            def on_caller(forecast: str) -> str:  # the caller's thread
                return forecast.upper()

            @w.do
            async def news(city: str) -> str:  # a loop thread
                return city

    assert w.result["on_caller"] == "RAIN IN OSLO"
    request = traced.one("request")
    (weave_span,) = traced.weaves()
    origin = f"{__file__}:{line}"
    assert weave_span.name == f"weave {HERE}:{line}"
    assert weave_span.attributes == {"wove.weave": origin}
    assert weave_span.kind is SpanKind.INTERNAL
    assert weave_span.status.status_code is StatusCode.UNSET
    assert parent_of(weave_span) == span_id(request)
    lanes = {"forecast": "thread", "on_caller": "caller", "news": "loop"}
    for task, lane in lanes.items():
        span = traced.one(task)
        assert parent_of(span) == span_id(weave_span), task
        assert span.kind is SpanKind.INTERNAL
        assert span.status.status_code is StatusCode.UNSET
        assert dict(span.attributes or {}) == {
            "wove.task": task,
            "wove.lane": lane,
            "wove.attempt": 0,
            "wove.weave": origin,
        }
    assert len(trace_ids(traced.spans())) == 1
    # each task's span lies within the weave's
    assert weave_span.start_time is not None
    assert weave_span.end_time is not None
    for task in lanes:
        span = traced.one(task)
        assert span.start_time is not None
        assert span.end_time is not None
        assert weave_span.start_time <= span.start_time <= span.end_time <= weave_span.end_time
    # the caller's context is left as it was
    assert not trace.get_current_span().get_span_context().is_valid


def test_an_async_weave_nests_under_the_span_current_in_the_coroutine(traced: Traced) -> None:
    async def main() -> None:
        with traced.tracer.start_as_current_span("handler"):
            async with weave() as w:

                @w.do
                async def on_loop() -> int:
                    await asyncio.sleep(0.01)
                    return 1

                @w.do
                def on_pool(on_loop: int) -> int:
                    return on_loop + 1

            assert w.result.final == 2

    asyncio.run(main())
    (weave_span,) = traced.weaves()
    assert parent_of(weave_span) == span_id(traced.one("handler"))
    assert traced.one("on_loop").attributes["wove.lane"] == "loop"  # type: ignore[index]
    assert traced.one("on_pool").attributes["wove.lane"] == "thread"  # type: ignore[index]
    for task in ("on_loop", "on_pool"):
        assert parent_of(traced.one(task)) == span_id(weave_span)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_each_item_of_a_mapped_task_is_a_span_with_its_index(traced: Traced, kind: str) -> None:
    with weave(names=["a", "b", "c"]) as w:
        if kind == "sync":

            @w.do("names")
            def shouted(name: str) -> str:
                return name.upper()

        else:

            @w.do("names")
            async def shouted(name: str) -> str:
                return name.upper()

    assert w.result.final == ["A", "B", "C"]
    (weave_span,) = traced.weaves()
    items = traced.named("shouted")
    assert sorted(s.attributes["wove.item_index"] for s in items) == [0, 1, 2]  # type: ignore[index]
    lane = "thread" if kind == "sync" else "loop"
    for span in items:
        assert parent_of(span) == span_id(weave_span)
        assert span.attributes["wove.lane"] == lane  # type: ignore[index]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_weave_inside_a_task_is_a_child_of_that_tasks_span(traced: Traced, kind: str) -> None:
    with weave() as w:
        if kind == "sync":

            @w.do
            def outer() -> int:
                with weave() as inner:

                    @inner.do
                    def leaf() -> int:
                        return 1

                return inner.result.final  # type: ignore[no-any-return]

        else:

            @w.do
            async def outer() -> int:
                async with weave() as inner:

                    @inner.do
                    async def leaf() -> int:
                        return 1

                return inner.result.final  # type: ignore[no-any-return]

    assert w.result.final == 1
    outer_weave, inner_weave = sorted(traced.weaves(), key=lambda s: s.start_time or 0)
    outer = traced.one("outer")
    assert parent_of(outer) == span_id(outer_weave)
    assert parent_of(inner_weave) == span_id(outer)
    assert parent_of(traced.one("leaf")) == span_id(inner_weave)
    assert len(trace_ids(traced.spans())) == 1


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_span_the_task_opens_is_a_child_of_the_tasks_span(traced: Traced, kind: str) -> None:
    tracer = traced.tracer
    with weave() as w:
        if kind == "sync":

            @w.do
            def fetch() -> str:
                with tracer.start_as_current_span("GET /api"):
                    return threading.current_thread().name

        else:

            @w.do
            async def fetch() -> str:
                with tracer.start_as_current_span("GET /api"):
                    await asyncio.sleep(0.01)
                    return threading.current_thread().name

    assert w.result.final.startswith("wove-")
    assert parent_of(traced.one("GET /api")) == span_id(traced.one("fetch"))


def test_a_background_weave_nests_under_the_span_current_at_its_block(traced: Traced) -> None:
    release = threading.Event()
    with traced.tracer.start_as_current_span("request"), weave(background=True) as w:

        @w.do
        def mail() -> str:
            release.wait(5)
            return "sent"

    assert traced.named("mail") == []  # still running: nothing ended yet
    release.set()
    assert w.wait(5)
    (weave_span,) = traced.weaves()
    assert parent_of(weave_span) == span_id(traced.one("request"))
    assert parent_of(traced.one("mail")) == span_id(weave_span)
    assert weave_span.end_time is not None


# --- failures -------------------------------------------------------------------------


class Broken(Exception):
    pass


def _exception_types(span: ReadableSpan) -> list[object]:
    return [
        (e.attributes or {}).get("exception.type") for e in span.events if e.name == "exception"
    ]


def test_a_failed_task_and_its_weave_have_status_error_and_the_exception(
    traced: Traced,
) -> None:
    with pytest.raises(Broken), weave() as w:

        @w.do
        def failing() -> None:
            raise Broken("no stock")

    span = traced.one("failing")
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "Broken: no stock"
    assert _exception_types(span) == [f"{__name__}.Broken"]
    (weave_span,) = traced.weaves()
    assert weave_span.status.status_code is StatusCode.ERROR
    assert _exception_types(weave_span) == [f"{__name__}.Broken"]
    assert w.result.exception is not None


def test_each_attempt_of_a_retried_task_is_a_span(traced: Traced) -> None:
    calls = []
    with weave() as w:

        @w.do(retries=1)
        def flaky() -> str:
            calls.append(1)
            if len(calls) == 1:
                raise Broken("first try")
            return "ok"

    assert w.result.final == "ok"
    attempts = sorted(traced.named("flaky"), key=lambda s: s.attributes["wove.attempt"])  # type: ignore[index]
    assert [s.attributes["wove.attempt"] for s in attempts] == [0, 1]  # type: ignore[index]
    assert [s.status.status_code for s in attempts] == [StatusCode.ERROR, StatusCode.UNSET]
    (weave_span,) = traced.weaves()
    assert weave_span.status.status_code is StatusCode.UNSET


def test_a_sync_task_abandoned_at_its_timeout_ends_as_a_timeout(traced: Traced) -> None:
    release = threading.Event()
    with pytest.raises(TaskTimeout), weave() as w:

        @w.do(timeout=0.05)
        def stuck() -> None:
            release.wait(5)

    release.set()
    span = wait_until_ended(traced, "stuck")
    assert span.status.status_code is StatusCode.ERROR
    assert _exception_types(span) == ["wove.errors.TaskTimeout"]
    assert w.result.exception is not None


def test_an_async_task_at_its_timeout_ends_as_a_timeout(traced: Traced) -> None:
    with pytest.raises(TaskTimeout), weave() as w:

        @w.do(timeout=0.05)
        async def stuck() -> None:
            await asyncio.sleep(5)

    span = traced.one("stuck")
    assert span.status.status_code is StatusCode.ERROR
    assert _exception_types(span) == ["wove.errors.TaskTimeout"]
    assert w.result.exception is not None


def test_a_sibling_cancelled_by_a_failure_says_so_and_is_not_an_error(traced: Traced) -> None:
    async def main() -> None:
        async with weave() as w:

            @w.do
            async def slow() -> None:
                await asyncio.sleep(5)

            @w.do
            async def failing() -> None:
                await asyncio.sleep(0.01)
                raise Broken

        del w

    with pytest.raises(Broken):
        asyncio.run(main())
    slow = traced.one("slow")
    assert slow.attributes["wove.cancelled"] is True  # type: ignore[index]
    assert slow.status.status_code is StatusCode.UNSET
    assert _exception_types(slow) == []
    assert traced.one("failing").status.status_code is StatusCode.ERROR
    assert "wove.cancelled" not in (traced.one("failing").attributes or {})


def test_a_weave_whose_caller_is_cancelled_says_so(traced: Traced) -> None:
    async def main() -> None:
        async def run() -> None:
            async with weave() as w:

                @w.do
                async def slow() -> None:
                    await asyncio.sleep(5)

            del w

        task = asyncio.create_task(run())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    (weave_span,) = traced.weaves()
    assert weave_span.attributes["wove.cancelled"] is True  # type: ignore[index]
    assert weave_span.status.status_code is StatusCode.UNSET
    assert traced.one("slow").attributes["wove.cancelled"] is True  # type: ignore[index]


# --- annotations ----------------------------------------------------------------------


def test_annotations_become_attributes_primitive_values_only(traced: Traced) -> None:
    with weave() as w:

        @w.do
        def orm() -> int:
            # what the Django adapter annotates (wove.contrib.django.queries), and the user
            wove.annotate(queries=3, query_ms=1.25, cache="hit", rows=7, shape=object())
            return 1

        @w.do
        def not_a_number() -> int:
            wove.annotate(queries="three")
            return 2

    del w
    attributes = dict(traced.one("orm").attributes or {})
    assert attributes["wove.sql.count"] == 3
    assert attributes["wove.sql.time"] == 1.25
    assert attributes["wove.annotation.cache"] == "hit"
    assert attributes["wove.annotation.rows"] == 7
    assert "wove.annotation.shape" not in attributes
    assert "queries" not in str(attributes)
    assert "wove.sql.count" not in (traced.one("not_a_number").attributes or {})


# --- no SDK, not sampled, not instrumented: nothing recorded, the lean paths ------------


def _lean_run() -> bool:
    """Runs a weave; True when its task was traced (the run took its recording paths)."""
    with weave() as w:

        @w.do
        def task() -> bool:
            return annotating()

    return w.result.final  # type: ignore[no-any-return]


def test_with_the_sdk_the_task_runs_traced(traced: Traced) -> None:
    assert _lean_run() is True
    assert traced.weaves()


def test_a_noop_tracer_provider_makes_no_span_and_keeps_the_lean_paths() -> None:
    WoveInstrumentor().instrument(tracer_provider=trace.NoOpTracerProvider())
    try:
        assert _lean_run() is False
    finally:
        WoveInstrumentor().uninstrument()


def test_without_an_sdk_the_global_provider_makes_no_span_and_keeps_the_lean_paths() -> None:
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        pytest.skip("a global tracer provider was set in this process")
    WoveInstrumentor().instrument()
    try:
        assert _lean_run() is False
    finally:
        WoveInstrumentor().uninstrument()


def test_a_trace_not_sampled_records_nothing_and_keeps_the_lean_paths() -> None:
    provider, exporter = _provider(sampler=ALWAYS_OFF)
    WoveInstrumentor().instrument(tracer_provider=provider)
    try:
        assert _lean_run() is False
    finally:
        WoveInstrumentor().uninstrument()
    assert exporter.get_finished_spans() == ()


def test_uninstrument_stops_the_spans(traced: Traced) -> None:
    WoveInstrumentor().uninstrument()
    try:
        assert _lean_run() is False
        assert traced.spans() == ()
    finally:
        WoveInstrumentor().instrument(tracer_provider=traced.provider)


# --- the instrumentor -----------------------------------------------------------------


def test_the_instrumentor_follows_the_opentelemetry_convention(
    caplog: pytest.LogCaptureFixture,
) -> None:
    instrumentor = WoveInstrumentor()
    assert isinstance(instrumentor, BaseInstrumentor)
    assert WoveInstrumentor() is instrumentor  # a singleton
    assert list(instrumentor.instrumentation_dependencies()) == []
    assert not instrumentor.is_instrumented_by_opentelemetry
    provider, exporter = _provider()
    instrumentor.instrument(tracer_provider=provider)
    try:
        assert instrumentor.is_instrumented_by_opentelemetry
        with caplog.at_level(logging.WARNING):
            instrumentor.instrument(tracer_provider=provider)  # only a warning
        assert "already instrumented" in caplog.text
        _lean_run()
        assert len([s for s in exporter.get_finished_spans() if s.name == "task"]) == 1
    finally:
        instrumentor.uninstrument()
    assert not instrumentor.is_instrumented_by_opentelemetry
    instrumentor.uninstrument()  # only a warning
    assert "already uninstrumented" in caplog.text


def test_the_minimal_instrumentor_has_the_same_surface(caplog: pytest.LogCaptureFixture) -> None:
    """What WoveInstrumentor is based on with opentelemetry-api only."""
    calls: list[tuple[str, dict[str, Any]]] = []

    class Probe(MinimalInstrumentor):
        def instrumentation_dependencies(self) -> tuple[str, ...]:
            return ()

        def _instrument(self, **kwargs: Any) -> None:
            calls.append(("instrument", kwargs))

        def _uninstrument(self, **kwargs: Any) -> None:
            calls.append(("uninstrument", kwargs))

    probe = Probe()
    assert Probe() is probe
    assert not probe.is_instrumented_by_opentelemetry
    probe.instrument(tracer_provider="p", skip_dep_check=True)
    assert probe.is_instrumented_by_opentelemetry
    with caplog.at_level(logging.WARNING):
        probe.instrument()
        probe.uninstrument()
        probe.uninstrument()
    assert calls == [("instrument", {"tracer_provider": "p"}), ("uninstrument", {})]
    assert "already instrumented" in caplog.text
    assert "already uninstrumented" in caplog.text


def test_the_weave_span_name_is_the_blocks_file_name_and_line() -> None:
    assert weave_span_name("/srv/app/views.py:42") == "weave views.py:42"
    assert weave_span_name(r"C:\app\views.py:7") == "weave views.py:7"
    assert weave_span_name("<stdin>") == "weave <stdin>"


# --- auto-instrumentation -------------------------------------------------------------


def test_the_package_declares_the_opentelemetry_instrumentor_entry_point() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    value = project["entry-points"]["opentelemetry_instrumentor"]["wove"]
    entry_point = EntryPoint("wove", value, "opentelemetry_instrumentor")
    assert entry_point.load() is WoveInstrumentor
    assert project["optional-dependencies"]["opentelemetry"] == ["opentelemetry-api>=1.25"]


AUTO_SCRIPT = """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from wove import weave
from wove.contrib.opentelemetry import WoveInstrumentor

assert WoveInstrumentor().is_instrumented_by_opentelemetry
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)  # after instrument(): the global provider is followed

with weave() as w:

    @w.do
    def task():
        return 1

print(sorted(span.name.split()[0] for span in exporter.get_finished_spans()))
"""


@pytest.mark.slow
def test_opentelemetry_instrument_finds_and_instruments_wove(tmp_path: Path) -> None:
    """``opentelemetry-instrument python app.py``, with a distribution whose metadata has
    the entry point of pyproject.toml, first on the path (as an installed wove has it)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    value = project["entry-points"]["opentelemetry_instrumentor"]["wove"]
    site = tmp_path / "site"
    info = site / f"wove-{wove.__version__}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: wove\nVersion: {wove.__version__}\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(
        f"[opentelemetry_instrumentor]\nwove = {value}\n", encoding="utf-8"
    )
    script = tmp_path / "app.py"
    script.write_text(AUTO_SCRIPT, encoding="utf-8")
    command = Path(sys.executable).parent / "opentelemetry-instrument"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]),
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        # only wove's instrumentor: not Django's or ASGI's, also installed here
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "django,asgi,wsgi",
    }
    done = subprocess.run(
        [str(command), sys.executable, str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['task', 'weave']", done.stdout + done.stderr
