"""A remote task in the caller's trace, and under its own name in Celery's monitoring.

The caller records its spans with the SDK's in-memory exporter (a tracer provider of
each test's own); a second real worker (this module's ``traced_worker``, on its own
queue, environment ``"celery-traced"``) records its spans as JSON lines in a file (see
celery_testapp.py), which the tests read. The signed ``trace`` field of the envelope is
tested without a worker.
"""

from __future__ import annotations

import contextvars
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from celery import signals
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from redisserver import RedisServer
from worker import Worker, start_worker

from wove import weave
from wove.contrib.celery import TASK_NAME, EnvelopeError, Keyring
from wove.contrib.celery import tracing as celery_tracing
from wove.contrib.celery.envelope import (
    MAX_TRACE_CHARS,
    MAX_TRACE_ENTRIES,
    envelope_trace,
    open_envelope,
    seal,
)
from wove.contrib.opentelemetry import WoveInstrumentor

KEYRING = Keyring.from_config(["k" * 40])
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def wait_for(predicate: Any, timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return found


# --- the envelope's trace field (no worker) --------------------------------------------


def test_an_envelope_without_a_trace_has_the_seven_fields_and_opens() -> None:
    envelope = seal(KEYRING, "call", "m1", b"body")
    assert "trace" not in envelope
    assert envelope_trace(envelope) is None
    assert open_envelope(KEYRING, envelope, kind="call", max_age=60, message_id="m1") == b"body"
    assert "trace" not in seal(KEYRING, "call", "m1", b"body", trace={})


def test_the_trace_travels_signed_and_survives_json() -> None:
    carrier = {"traceparent": TRACEPARENT, "tracestate": "a=1", "wove-attempt": "0"}
    envelope = json.loads(json.dumps(seal(KEYRING, "call", "m1", b"body", trace=carrier)))
    assert open_envelope(KEYRING, envelope, kind="call", max_age=60, message_id="m1") == b"body"
    assert envelope_trace(envelope) == carrier


@pytest.mark.parametrize(
    "change",
    [
        lambda e: e["trace"].update(traceparent=TRACEPARENT.replace("b7ad", "b7ae")),
        lambda e: e["trace"].update(baggage="user=admin"),
        lambda e: e.pop("trace"),
    ],
    ids=["altered", "added-entry", "removed"],
)
def test_a_changed_trace_breaks_the_signature(change: Any) -> None:
    envelope: dict[str, Any] = seal(KEYRING, "call", "m1", b"b", trace={"traceparent": TRACEPARENT})
    change(envelope)
    with pytest.raises(EnvelopeError) as refused:
        open_envelope(KEYRING, envelope, kind="call", max_age=60)
    assert refused.value.reason == "signature"


def test_a_trace_added_to_an_untraced_envelope_breaks_the_signature() -> None:
    envelope: dict[str, Any] = seal(KEYRING, "call", "m1", b"b")
    envelope["trace"] = {"traceparent": TRACEPARENT}
    with pytest.raises(EnvelopeError) as refused:
        open_envelope(KEYRING, envelope, kind="call", max_age=60)
    assert refused.value.reason == "signature"


@pytest.mark.parametrize(
    "trace_field",
    [
        "traceparent",
        ["traceparent"],
        {"traceparent": 1},
        {f"k{i}": "v" for i in range(MAX_TRACE_ENTRIES + 1)},
        {"baggage": "x" * MAX_TRACE_CHARS},
    ],
    ids=["str", "list", "non-str-value", "too-many", "too-long"],
)
def test_a_trace_of_the_wrong_shape_is_malformed_and_cannot_be_sealed(trace_field: Any) -> None:
    envelope: dict[str, Any] = seal(KEYRING, "call", "m1", b"b", trace={"traceparent": "x"})
    envelope["trace"] = trace_field
    with pytest.raises(EnvelopeError) as refused:
        open_envelope(KEYRING, envelope, kind="call", max_age=60)
    assert refused.value.reason == "malformed"
    assert "trace" in str(refused.value)
    if isinstance(trace_field, dict):
        with pytest.raises(ValueError, match="trace"):
            seal(KEYRING, "call", "m1", b"b", trace=trace_field)


def test_a_baggage_over_the_limit_is_dropped_and_the_trace_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from wove.contrib.opentelemetry import remote

    big = {"traceparent": TRACEPARENT, "baggage": "x" * MAX_TRACE_CHARS}
    monkeypatch.setattr(remote, "current_carrier", lambda: big)
    assert celery_tracing.trace_context() == {"traceparent": TRACEPARENT}


def test_without_opentelemetry_there_is_no_trace_and_no_span(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As if opentelemetry were not installed: importing the helpers fails.
    monkeypatch.setitem(sys.modules, "wove.contrib.opentelemetry.remote", None)
    assert celery_tracing.trace_context() is None
    span = celery_tracing.task_span("t", {"traceparent": TRACEPARENT}, "f.py:1", "id")
    assert span is celery_tracing.NO_SPAN
    with span as entered:
        entered.failed(ValueError("x"))
    assert (
        celery_tracing.weave_context({"traceparent": TRACEPARENT}, "id") is celery_tracing.NO_SPAN
    )


def test_without_a_current_span_there_is_no_trace() -> None:
    assert celery_tracing.trace_context() is None


def test_monitoring_names() -> None:
    def outer() -> Any:
        def royalties() -> None: ...

        return royalties

    function = outer()
    assert celery_tracing.call_name(function, "royalties") == (
        f"wove:{__name__}.test_monitoring_names.outer.royalties"
    )
    assert celery_tracing.call_name(lambda: 1, "price") == (
        f"wove:{__name__}.test_monitoring_names.price"
    )
    assert celery_tracing.call_name(print, "p") == "wove:builtins.p"
    assert celery_tracing.weave_name("/srv/app/views.py:42") == "wove:weave views.py:42"


# --- against the real workers -----------------------------------------------------------


@dataclass
class Traced:
    provider: TracerProvider
    exporter: InMemorySpanExporter

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name == name]


@pytest.fixture
def traced() -> Iterator[Traced]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    WoveInstrumentor().instrument(tracer_provider=provider)
    try:
        yield Traced(provider, exporter)
    finally:
        WoveInstrumentor().uninstrument()
        provider.shutdown()


@dataclass
class TracedWorker:
    worker: Worker
    spans_path: Path

    def spans(self) -> list[dict[str, Any]]:
        try:
            text = self.spans_path.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def wait_for_spans(self, name: str, count: int = 1) -> list[dict[str, Any]]:
        return wait_for(  # type: ignore[no-any-return]
            lambda: (
                (found := [s for s in self.spans() if s["name"] == name])
                and len(found) >= count
                and found
            ),
            what=f"{count} span(s) {name!r} from the worker",
        )


@pytest.fixture(scope="module")
def traced_worker(
    redis_server: RedisServer, celery_worker: Worker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TracedWorker]:
    """A second worker, on the queue of environment "celery-traced", that records its
    spans (celery_worker first: it sets the broker for celery_testapp)."""
    import celery_testapp

    directory = tmp_path_factory.mktemp("celery-traced")
    spans_path = directory / "spans.jsonl"
    worker = start_worker(
        "celery_testapp",
        broker_url=redis_server.url,
        env_extra={"WOVE_TEST_SPANS": str(spans_path)},
        directory=directory,
        concurrency=2,
        queues=[celery_testapp.TRACED_QUEUE],
        label_prefix="wove-traced",
    )
    try:
        yield TracedWorker(worker, spans_path)
    finally:
        worker.stop()


def hex_id(value: int, digits: int) -> str:
    return format(value, f"0{digits}x")


def remote_attempts(traced: Traced, name: str) -> list[ReadableSpan]:
    return [s for s in traced.named(name) if (s.attributes or {}).get("wove.lane") == "remote"]


@pytest.mark.slow
def test_the_workers_span_is_a_child_of_the_callers_remote_attempt(
    traced: Traced, traced_worker: TracedWorker, tmp_path: Path
) -> None:
    tracer = traced.provider.get_tracer("tests")
    marker = tmp_path / "failed-once"
    with tracer.start_as_current_span("request"):
        line = sys._getframe().f_lineno + 1
        with weave(env="celery-traced", x=3) as w:

            @w.do
            def doubled(x: int) -> tuple[int, int]:
                tracer = trace.get_tracer("tests.worker")
                # A span of the task's own code, and a weave on the worker: they nest.
                with tracer.start_as_current_span("inside"), weave(x=x) as inner:

                    @inner.do
                    def twice(x: int) -> int:
                        return x * 2

                return inner.result.twice, os.getpid()

            @w.do([10, 20])
            def priced(item: int) -> int:
                return item + 1

            @w.do(retries=1, idempotent=True)
            def flaky(x: int) -> int:
                if not marker.exists():
                    marker.write_text("1")
                    raise ValueError("the first attempt fails")
                return x

    value, pid = w.result.doubled
    assert (value, w.result.priced, w.result.flaky) == (6, [11, 21], 3)
    assert pid != os.getpid()

    (request,) = traced.named("request")
    assert request.context is not None
    trace_id = hex_id(request.context.trace_id, 32)
    origin = f"{__file__}:{line}"

    # doubled: the worker's span under the caller's attempt, the task's own spans under it
    (caller,) = remote_attempts(traced, "doubled")
    assert caller.context is not None
    (remote,) = [s for s in traced_worker.wait_for_spans("doubled") if s["trace_id"] == trace_id]
    assert remote["parent_id"] == hex_id(caller.context.span_id, 16)
    assert remote["kind"] == "CONSUMER"
    assert remote["status"] == "UNSET"
    assert remote["pid"] == pid
    assert remote["attributes"] == {
        "wove.task": "doubled",
        "wove.lane": "remote",
        "wove.weave": origin,
        "wove.attempt": 0,
        "celery.task_id": (caller.attributes or {})["wove.annotation.celery_task"],
    }
    (inside,) = [s for s in traced_worker.wait_for_spans("inside") if s["trace_id"] == trace_id]
    assert inside["parent_id"] == remote["span_id"]
    workers_weave = [
        s
        for s in traced_worker.spans()
        if s["trace_id"] == trace_id and s["name"].startswith("weave ")
    ]
    assert [s["parent_id"] for s in workers_weave] == [inside["span_id"]]
    (twice,) = [
        s for s in traced_worker.spans() if s["name"] == "twice" and s["trace_id"] == trace_id
    ]
    assert twice["parent_id"] == workers_weave[0]["span_id"]
    assert twice["attributes"]["wove.lane"] == "thread"

    # priced: one span per item, each under its own item's attempt
    callers = {
        (s.attributes or {})["wove.item_index"]: s for s in remote_attempts(traced, "priced")
    }
    remotes = traced_worker.wait_for_spans("priced", 2)
    by_index = {s["attributes"]["wove.item_index"]: s for s in remotes if s["trace_id"] == trace_id}
    assert set(by_index) == set(callers) == {0, 1}
    for index, span in by_index.items():
        context = callers[index].context
        assert context is not None
        assert span["parent_id"] == hex_id(context.span_id, 16)

    # flaky: the failed first attempt is an ERROR span with its exception, then attempt 1
    attempts = {(s.attributes or {})["wove.attempt"]: s for s in remote_attempts(traced, "flaky")}
    remotes = [s for s in traced_worker.wait_for_spans("flaky", 2) if s["trace_id"] == trace_id]
    by_attempt = {s["attributes"]["wove.attempt"]: s for s in remotes}
    assert set(by_attempt) == set(attempts) == {0, 1}
    assert by_attempt[0]["status"] == "ERROR"
    assert by_attempt[0]["events"] == ["exception"]
    assert by_attempt[1]["status"] == "UNSET"
    for attempt, span in by_attempt.items():
        context = attempts[attempt].context
        assert context is not None
        assert span["parent_id"] == hex_id(context.span_id, 16)


@pytest.mark.slow
def test_a_detached_weave_on_the_worker_joins_the_trace_it_was_sent_from(
    traced: Traced, traced_worker: TracedWorker
) -> None:
    tracer = traced.provider.get_tracer("tests")
    with tracer.start_as_current_span("enqueue") as enqueue:
        line = sys._getframe().f_lineno + 1
        with weave(background=True, env="celery-traced") as w:

            @w.do
            def receipt() -> int:
                return 1

    assert w.remote_id
    trace_id = hex_id(enqueue.get_span_context().trace_id, 32)
    name = f"weave {os.path.basename(__file__)}:{line}"
    (span,) = [s for s in traced_worker.wait_for_spans(name) if s["trace_id"] == trace_id]
    assert span["parent_id"] == hex_id(enqueue.get_span_context().span_id, 16)


@pytest.mark.slow
def test_the_sender_thread_publishes_in_the_callers_context(
    traced: Traced, celery_app: Any
) -> None:
    published: list[dict[str, Any]] = []

    def record(sender: str, body: Any, headers: dict[str, Any], **_: Any) -> None:
        args = body[0] if isinstance(body, tuple | list) else []
        published.append(
            {
                "task": sender,
                "thread": threading.current_thread().name,
                "request_id": request_id.get(),
                "span": trace.get_current_span().get_span_context(),
                "shadow": headers.get("shadow"),
                "envelope": args[0] if args else None,
            }
        )

    signals.before_task_publish.connect(record, weak=False)
    token = request_id.set("req-42")
    try:
        with weave(env="celery") as w:

            @w.do
            def answer() -> int:
                return 42

        assert w.result.answer == 42
    finally:
        request_id.reset(token)
        signals.before_task_publish.disconnect(record)

    (message,) = [m for m in published if m["task"] == TASK_NAME]
    assert message["thread"] == "wove-celery-sender"  # not the caller's thread...
    assert message["request_id"] == "req-42"  # ...yet in the caller's context
    (attempt,) = remote_attempts(traced, "answer")
    assert message["span"] == attempt.get_span_context()  # the remote attempt's span
    assert (
        message["shadow"]
        == f"wove:{__name__}.test_the_sender_thread_publishes_in_the_callers_context.answer"
    )
    carrier = message["envelope"]["trace"]
    context = attempt.get_span_context()
    version, trace_id, parent_id, _flags = carrier["traceparent"].split("-")
    assert (version, trace_id, parent_id) == (
        "00",
        hex_id(context.trace_id, 32),
        hex_id(context.span_id, 16),
    )
    assert carrier["wove-attempt"] == "0"


@pytest.mark.slow
def test_untraced_calls_carry_no_trace(celery_app: Any) -> None:
    published: list[Any] = []

    def record(sender: str, body: Any, **_: Any) -> None:
        if sender == TASK_NAME:
            published.append(body[0][0])

    signals.before_task_publish.connect(record, weak=False)
    try:
        with weave(env="celery") as w:

            @w.do
            def answer() -> int:
                return 42

        assert w.result.answer == 42
    finally:
        signals.before_task_publish.disconnect(record)
    (envelope,) = published
    assert "trace" not in envelope


@pytest.mark.slow
def test_celery_monitoring_shows_the_users_task_name(
    celery_app: Any, celery_worker: Worker, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    expected = f"wove:{__name__}.test_celery_monitoring_shows_the_users_task_name.run.waiting"
    outcome: list[Any] = []

    def run() -> None:
        with weave(env="celery") as w:

            @w.do(timeout=30)
            def waiting() -> str:
                deadline = time.monotonic() + 20
                while not release.exists() and time.monotonic() < deadline:
                    time.sleep(0.02)
                return "released"

        outcome.append(w.result.waiting)

    caller = threading.Thread(target=run, name="test-caller")
    caller.start()
    try:

        def active() -> list[dict[str, Any]]:
            inspect = celery_app.control.inspect(destination=[celery_worker.name], timeout=1.0)
            replies = inspect.active() or {}
            return [t for t in replies.get(celery_worker.name, []) if t["name"] == expected]

        (running,) = wait_for(active, what=f"{expected!r} in inspect().active()")
        assert running["type"] == TASK_NAME  # the registered task is still wove.run
    finally:
        release.write_text("go")
        caller.join(30)
    assert not caller.is_alive()
    assert outcome == ["released"]
    assert f"Task {expected}[{running['id']}] received" in celery_worker.log_text()
