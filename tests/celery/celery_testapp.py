"""The Celery app of the Celery tests: the real worker runs it (``celery -A
celery_testapp worker``, see worker.py) and the test process uses it as the client.

Both find the broker (and result backend: the same Redis) in ``WOVE_TEST_REDIS_URL``,
which must be set before this module is imported (conftest.py and worker.py do).

With ``WOVE_TEST_SPANS`` set (test_tracing_celery.py's worker), the process records
OpenTelemetry spans (global SDK tracer provider, Wove instrumented) and appends each, as
one JSON line, to the file it names.
"""

from __future__ import annotations

import importlib.util
import os
import time

from celery import Celery

REDIS_URL = os.environ["WOVE_TEST_REDIS_URL"]

# Wove's task module is registered only once it exists (it is being written).
INCLUDE = [
    module for module in ["wove.contrib.celery"] if importlib.util.find_spec(module) is not None
]

app = Celery("wove_tests", broker=REDIS_URL, backend=REDIS_URL, include=INCLUDE)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    # Set explicitly: left unset, Celery 5 warns (CPendingDeprecationWarning) at startup.
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=1,
    task_acks_late=False,
    result_expires=3600,
    broker_transport_options={"visibility_timeout": 3600},
)


@app.task(name="tests.add")
def add(x: int, y: int) -> int:
    """A raw Celery task, the baseline."""
    return x + y


@app.task(name="tests.sleep")
def sleep(seconds: float) -> float:
    """A raw Celery task that takes ``seconds``, the baseline for timing."""
    time.sleep(seconds)
    return seconds


@app.task(name="tests.wove_file")
def wove_file() -> str:
    """Where the worker imports Wove from (the tests check it is the client's Wove)."""
    import wove

    return str(wove.__file__)


# --- Wove's remote environment (configured the same way in the client and the worker)
TRACED_QUEUE = "wove-traced"
WOVE_KEYS = [os.environ.get("WOVE_TEST_KEY", "test-key-" + "x" * 40)]
try:
    import wove
    from wove.contrib.celery import CeleryEnv
except ImportError:  # the integration is being written
    CeleryEnv = None
if CeleryEnv is not None:
    wove.register_env("celery", CeleryEnv(app, keys=WOVE_KEYS))
    # A second environment, for the worker of test_tracing_celery.py (its own queue).
    wove.register_env("celery-traced", CeleryEnv(app, keys=WOVE_KEYS, queue=TRACED_QUEUE))
    # For test_liveness.py's workers, each on a Redis of its own (the test process
    # registers this name again, on an app of that Redis).
    wove.register_env("liveness", CeleryEnv(app, keys=WOVE_KEYS))


def _record_spans(path: str) -> None:
    """The traced worker: every span ended in this process (the pool's children too:
    they inherit the provider at the fork) appended to ``path`` as a JSON line."""
    import json
    from collections.abc import Sequence

    from opentelemetry import trace
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        SimpleSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    from wove.contrib.opentelemetry import WoveInstrumentor

    def hex_id(value: int | None, digits: int) -> str | None:
        return None if value is None else format(value, f"0{digits}x")

    class JsonLines(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            lines = []
            for span in spans:
                assert span.context is not None
                lines.append(
                    json.dumps(
                        {
                            "name": span.name,
                            "kind": span.kind.name,
                            "trace_id": hex_id(span.context.trace_id, 32),
                            "span_id": hex_id(span.context.span_id, 16),
                            "parent_id": hex_id(span.parent and span.parent.span_id, 16),
                            "attributes": dict(span.attributes or {}),
                            "status": span.status.status_code.name,
                            "events": [event.name for event in span.events],
                            "pid": os.getpid(),
                        }
                    )
                )
            with open(path, "a") as out:  # one write per span: whole lines, any process
                for line in lines:
                    out.write(line + "\n")
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLines()))
    trace.set_tracer_provider(provider)
    WoveInstrumentor().instrument()


if os.environ.get("WOVE_TEST_SPANS") and CeleryEnv is not None:
    _record_spans(os.environ["WOVE_TEST_SPANS"])
