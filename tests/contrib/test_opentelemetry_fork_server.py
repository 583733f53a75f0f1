"""``weave(background=True, fork=True)`` under the OpenTelemetry instrumentation while a
fork server runs: the server forks the child, yet the child's spans still come back to
the process that detached it, under the span current where the block ended.

The fork server must start while its process has one thread, which the pytest process
no longer has: the scenario runs in a script of its own. Every process it starts (the
script, the server, the detached child) is killed by pid at teardown.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc to kill only its own processes"
)

# argv[1]: a directory of the test's, which names every process forked from the script
# (they keep its command line): what the teardown kills.
# argv[2]: "server-first" starts the fork server before Wove is instrumented (its
# children are not), "instrumented-first" after (its children inherit the instrument).
# argv[3]: "weave" detaches a weave(background=True, fork=True) of two tasks; "detach"
# a Starlette endpoint's detach(mode="fork") of a Weave class with the same two.
SCRIPT = """
import json, os, sys, time

import wove
from wove import weave

order = sys.argv[2]


def start_server():  # while this process has one thread
    return wove.start_fork_server()


if order == "server-first":
    server = start_server()

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from wove.contrib.opentelemetry import WoveInstrumentor

memory = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(memory))
WoveInstrumentor().instrument(tracer_provider=provider)
tracer = provider.get_tracer("shop")
if order == "instrumented-first":
    server = start_server()


def stock():
    return 3


def doubled(stock):
    return stock * 2


if sys.argv[3] == "weave":
    with tracer.start_as_current_span("plan restock"), weave(background=True, fork=True) as w:
        w.do(stock)
        w.do(doubled)
    child = w.pid
else:  # a Starlette endpoint's detach(mode="fork")
    import asyncio

    import httpx
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from wove.contrib.starlette import WoveMiddleware, detach

    class Restock(wove.Weave):
        @wove.Weave.do
        def stock(self):
            return 3

        @wove.Weave.do
        def doubled(self, stock):
            return stock * 2

    async def restock(request):
        with tracer.start_as_current_span("plan restock"):
            detach(Restock, mode="fork")
        return PlainTextResponse("queued")

    app = Starlette(routes=[Route("/restock", restock)], middleware=[Middleware(WoveMiddleware)])

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/restock")).text == "queued"

    asyncio.run(main())
    child = None  # detach() does not say; the weave span's wove.pid does

deadline = time.monotonic() + 30
while len(memory.get_finished_spans()) < 4 and time.monotonic() < deadline:
    time.sleep(0.02)


def described(span):
    parent = span.parent
    return {
        "name": span.name,
        "trace": span.context.trace_id,
        "id": span.context.span_id,
        "parent": None if parent is None else parent.span_id,
        "pid": (span.attributes or {}).get("wove.pid"),
    }


spans = [described(span) for span in memory.get_finished_spans()]
print(json.dumps({"parent": os.getpid(), "server": server, "child": child, "spans": spans}))
wove.stop_fork_server()
"""


def _ours(tmp_path: Path) -> list[int]:
    """The processes whose command line names ``tmp_path``: the script, and the server
    and the children forked from it (a forked process keeps its parent's command line),
    whether or not the script got to say their pids."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue  # gone
        if str(tmp_path).encode() in cmdline:
            found.append(int(entry))
    return found


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[subprocess.Popen[str]]]:
    """The script's process; at teardown it, the server and the child it detached are
    killed by pid."""
    scripts: list[subprocess.Popen[str]] = []
    yield scripts
    for script in scripts:
        if script.poll() is None:
            script.kill()
        script.communicate()
    for pid in _ours(tmp_path):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.timeout(60)
@pytest.mark.parametrize("scenario", ["weave", "detach"])
@pytest.mark.parametrize("order", ["server-first", "instrumented-first"])
def test_work_forked_by_the_fork_server_sends_its_spans_back(
    order: str, scenario: str, tmp_path: Path, started: list[subprocess.Popen[str]]
) -> None:
    script = tmp_path / "through_the_server.py"
    script.write_text(SCRIPT, encoding="utf-8")
    run = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path), order, scenario],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started.append(run)
    stdout, stderr = run.communicate(timeout=50)
    assert run.returncode == 0, stderr
    report: dict[str, Any] = json.loads(stdout)
    spans = {span["name"]: span for span in report["spans"]}
    weave_names = [name for name in spans if name.startswith("weave ")]
    # Each once: a child that inherited the instrument records each run once too.
    names = [span["name"] for span in report["spans"]]
    assert len(names) == 4, f"the child's spans did not come back once each: {names}"
    assert len(weave_names) == 1, names
    assert set(spans) - set(weave_names) == {"plan restock", "stock", "doubled"}
    planned = spans["plan restock"]
    (weave_name,) = weave_names
    run_span = spans[weave_name]
    assert weave_name.startswith("weave through_the_server.py:")
    if scenario == "weave":  # detach() does not give the pid; the span does
        assert run_span["pid"] == report["child"]
    # One trace: the weave under the span current where the block ended, its tasks
    # under the weave.
    assert {span["trace"] for span in spans.values()} == {planned["trace"]}
    assert run_span["parent"] == planned["id"]
    assert spans["stock"]["parent"] == run_span["id"]
    assert spans["doubled"]["parent"] == run_span["id"]
    # Run by a child the server forked: neither this process nor the server.
    assert isinstance(run_span["pid"], int)
    assert run_span["pid"] not in (report["parent"], report["server"])
