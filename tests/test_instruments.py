"""wove.lowlevel.add_instrument: a scope per run and per attempt, opened in the context
the work runs in, on every lane, so an instrument's "current span" nests."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import pytest

from wove import TaskTimeout, weave
from wove.lowlevel import add_instrument

_current: contextvars.ContextVar[Span | None] = contextvars.ContextVar("span", default=None)


@dataclass
class Span:
    name: str
    parent: Span | None
    lane: str | None = None
    thread: str = ""
    error: BaseException | None = None
    ended: bool = False
    extra: Mapping[str, object] = field(default_factory=dict)


class Recorder:
    """A stand-in tracer: spans made current in a context variable, as OpenTelemetry's."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.lock = threading.Lock()

    def weave_started(self, origin: str, run_id: int) -> WeaveSpan:
        span = Span(f"weave {origin}", _current.get())
        _current.set(span)  # the run's context: every task's parent
        with self.lock:
            self.spans.append(span)
        return WeaveSpan(self, span)


class WeaveSpan:
    def __init__(self, recorder: Recorder, span: Span) -> None:
        self.recorder, self.span = recorder, span

    def attempt_started(self, task: str, index: int | None, lane: str, attempt: int) -> Attempt:
        name = task if index is None else f"{task}[{index}]"
        span = Span(name, _current.get(), lane, threading.current_thread().name)
        with self.recorder.lock:
            self.recorder.spans.append(span)
        return Attempt(span, _current.set(span))

    def finished(self, error: BaseException | None) -> None:
        self.span.error, self.span.ended = error, True


class Attempt:
    def __init__(self, span: Span, token: contextvars.Token[Span | None]) -> None:
        self.span, self.token = span, token

    def finished(self, error: BaseException | None, extra: Mapping[str, object]) -> None:
        self.span.error, self.span.ended, self.span.extra = error, True, dict(extra)
        _current.reset(self.token)  # raises if called in another context


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    instrument = Recorder()
    remove = add_instrument(instrument)
    try:
        yield instrument
    finally:
        remove()


def _by_name(recorder: Recorder) -> dict[str, Span]:
    return {span.name: span for span in recorder.spans}


def test_every_attempt_on_every_lane_is_a_child_of_the_weave_inside_the_callers(
    recorder: Recorder,
) -> None:
    outer = Span("request", None)
    token = _current.set(outer)
    seen_inside: dict[str, str | None] = {}
    try:
        with weave() as w:

            @w.do
            def on_pool() -> int:
                seen = _current.get()
                seen_inside["on_pool"] = seen.name if seen else None
                return 1

            @w.do(thread_sensitive=True)
            def on_caller(on_pool: int) -> int:
                return on_pool + 1

            @w.do
            async def on_loop(on_caller: int) -> int:
                seen = _current.get()
                seen_inside["on_loop"] = seen.name if seen else None
                return on_caller + 1

            @w.do([1, 2], retries=1)
            async def items(item: int) -> int:
                return item

    finally:
        _current.reset(token)
    spans = _by_name(recorder)
    weave_span = next(s for s in recorder.spans if s.name.startswith("weave "))
    assert weave_span.parent is outer
    assert weave_span.ended
    assert weave_span.error is None
    for name, lane in [
        ("on_pool", "thread"),
        ("on_caller", "caller"),
        ("on_loop", "loop"),
        ("items[0]", "loop"),
        ("items[1]", "loop"),
    ]:
        assert spans[name].parent is weave_span, name
        assert spans[name].lane == lane
        assert spans[name].ended
    # the task's own code sees its attempt as current (its own spans nest under it)
    assert seen_inside == {"on_pool": "on_pool", "on_loop": "on_loop"}
    assert _current.get() is None


def test_failed_and_cancelled_attempts_end_with_their_error(recorder: Recorder) -> None:
    class Broken(Exception):
        pass

    async def main() -> None:
        async with weave() as w:

            @w.do
            async def slow() -> None:
                await asyncio.sleep(5)

            @w.do
            async def failing() -> None:
                await asyncio.sleep(0.01)
                raise Broken

    with pytest.raises(Broken):
        asyncio.run(main())
    spans = _by_name(recorder)
    assert isinstance(spans["failing"].error, Broken)
    assert isinstance(spans["slow"].error, asyncio.CancelledError)
    weave_span = next(s for s in recorder.spans if s.name.startswith("weave "))
    assert isinstance(weave_span.error, Broken)


def test_a_sync_attempt_abandoned_at_its_timeout_ends_as_a_timeout(recorder: Recorder) -> None:
    release = threading.Event()
    with pytest.raises(TaskTimeout), weave() as w:

        @w.do(timeout=0.05)
        def stuck() -> None:
            release.wait(5)

    release.set()
    span = _by_name(recorder)["stuck"]
    for _ in range(200):  # it ends when the abandoned call returns, on its thread
        if span.ended:
            break
        threading.Event().wait(0.01)
    assert isinstance(span.error, TaskTimeout)


def test_a_broken_instrument_does_not_break_the_weave(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def weave_started(self, origin: str, run_id: int) -> None:
            raise RuntimeError("instrument bug")

    remove = add_instrument(Broken())
    try:
        with weave() as w:

            @w.do
            def value() -> int:
                return 3

    finally:
        remove()
    assert w.result.value == 3
    assert "instrument bug" in caplog.text
