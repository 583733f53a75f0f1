"""OpenTelemetry: the cost of the spans of a 10-task weave (one weave span, ten attempt
spans) with the SDK configured and an exporter that drops everything, against the same
weave not instrumented (per weave, 200 in a row; target 1.10): with every trace
sampled (``otel``), and with the SDK's ratio sampler at 10% (``otel-sampled-0.1``).
``otel-own`` puts the SDK's own cost on both sides (the baseline makes the same eleven
spans by hand), which leaves Wove's share of ``otel``.

The two sides run in the same process, interleaved: the instrumentor is switched on for
the timed runs of one side and off for the other's. Spans go through the SDK's
``BatchSpanProcessor``, as a production setup's would, to an exporter that does nothing,
so the figure is the span work (start, attributes, context, end, queueing), not I/O.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from wove import weave

from .harness import Row, Skipped, Workload, _time, check

WEAVES = 200


def _ten_tasks() -> int:
    with weave() as w:
        for index in range(10):

            def task(index: int = index) -> int:
                return index

            task.__name__ = f"t{index}"
            w.do(task)
    return sum(w.result[f"t{index}"] for index in range(10))


def _ten_tasks_then_bare_spans(tracer: Any) -> int:
    """The same weave not instrumented, then the eleven spans Wove would make, made by
    hand with the SDK alone on this thread: a weave span, and under it one span per task
    with Wove's four attributes, each made current (attach) and ended (end, detach) as
    Wove does. What the spans cost without Wove: the floor of ``otel``."""
    from opentelemetry import context as otel_context
    from opentelemetry import trace

    total = _ten_tasks()
    run = tracer.start_span("weave otel.py:1", attributes={"wove.weave": "otel.py:1"})
    parent = trace.set_span_in_context(run)
    token = otel_context.attach(parent)
    for index in range(10):
        name = f"t{index}"
        span = tracer.start_span(name, parent, attributes=_BARE_ATTRIBUTES[index])
        inner = otel_context.attach(trace.set_span_in_context(span))
        span.end()
        otel_context.detach(inner)
    otel_context.detach(token)
    run.end()
    return total


_BARE_ATTRIBUTES = [
    {"wove.task": f"t{i}", "wove.lane": "thread", "wove.attempt": 0, "wove.weave": "otel.py:1"}
    for i in range(10)
]


def _measure(runs: int) -> list[Row]:
    return [_measure_one(runs, None), _measure_one(runs, None, floor=True), _measure_one(runs, 0.1)]


def _measure_one(runs: int, ratio: float | None, *, floor: bool = False) -> Row:
    """``ratio``: the SDK samples that share of traces (``TraceIdRatioBased``); None:
    every trace (the SDK's default sampler, parent-based always-on). ``floor``: the
    baseline makes the same eleven spans by hand (``otel-own``: Wove's own share)."""
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        from wove.contrib.opentelemetry import WoveInstrumentor
    except ImportError as missing:
        raise Skipped(f"needs opentelemetry-sdk ({missing})") from None

    class NoOpExporter(SpanExporter):
        exported = 0

        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            NoOpExporter.exported += len(spans)
            return SpanExportResult.SUCCESS

    provider = (
        TracerProvider()
        if ratio is None
        else TracerProvider(sampler=ParentBased(TraceIdRatioBased(ratio)))
    )
    provider.add_span_processor(BatchSpanProcessor(NoOpExporter()))
    instrumentor = WoveInstrumentor()
    check([_ten_tasks()], 45, "otel")
    instrumentor.instrument(tracer_provider=provider)
    try:
        for _ in range(1 if ratio is None else 200):  # until one trace is sampled
            check([_ten_tasks()], 45, "otel")
        provider.force_flush()
        if NoOpExporter.exported < 11:
            raise AssertionError(f"expected 11 spans, exported {NoOpExporter.exported}")
    finally:
        instrumentor.uninstrument()
    _ten_tasks()
    traced: list[float] = []
    plain: list[float] = []
    tracer = provider.get_tracer("bench")

    def by_hand() -> int:
        return _ten_tasks_then_bare_spans(tracer)

    baseline_of = by_hand if floor else _ten_tasks
    baseline_of()
    try:
        for _ in range(runs):
            plain.append(_time(baseline_of, WEAVES))
            instrumentor.instrument(tracer_provider=provider)
            try:
                traced.append(_time(_ten_tasks, WEAVES))
            finally:
                instrumentor.uninstrument()
    finally:
        provider.shutdown()
    wove, baseline = statistics.median(traced), statistics.median(plain)
    sampled = "every trace" if ratio is None else f"{ratio:.0%} of traces sampled"
    if floor:
        return Row(
            name="otel-own",
            wove=wove,
            baseline=baseline,
            unit="s",
            target=1.10,
            runs=runs,
            note="Wove's own share: the instrumented weave / the same weave not "
            "instrumented plus the same 11 spans made by hand with the SDK (attributes, "
            f"attach, end, detach); per weave, {WEAVES} in a row: "
            f"+{(wove - baseline) * 1e6:.0f} µs",
        )
    return Row(
        name="otel" if ratio is None else f"otel-sampled-{ratio:g}",
        wove=wove,
        baseline=baseline,
        unit="s",
        target=1.10,
        runs=runs,
        note=f"10 trivial sync tasks, 11 spans a sampled weave (SDK, {sampled}, "
        f"BatchSpanProcessor, no-op exporter) / not instrumented; per weave, {WEAVES} in a "
        f"row: +{(wove - baseline) * 1e6:.0f} µs",
    )


WORKLOADS = [
    Workload(
        "otel",
        "a 10-task weave with WoveInstrumentor, the OpenTelemetry SDK and a no-op exporter "
        "(every trace, then 10% of traces sampled) / the same weave not instrumented",
        _measure,
    )
]
