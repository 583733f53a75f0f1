"""Property-based tests: random weaves against a sequential reference evaluator.

Hypothesis draws a weave description (sync and async tasks, mapped tasks over literals,
keywords and upstream results, short sleeps, failures of several exception kinds,
retries, timeouts, thread-sensitive tasks, merge(), nested weaves of every kind, a plain
``with`` inside a running loop, background weaves, a cancelled ``async with``, tracing and
debug on). The same description is evaluated by plain function calls in topological
order, and the run is checked against it: the values when nothing fails; when something
fails, the exception (the very object a task raised), what stayed readable, that no
dependent of a failed task ran, and that nothing of the weave starts or keeps running
after its block. Smaller properties follow: the first failure in time is the one raised,
and waiting for a slot does not count toward a timeout.

``WOVE_FUZZ=1`` (``make fuzz``) runs many more examples (``WOVE_FUZZ_EXAMPLES=N``) and
shrinks what fails.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import event as tally
from hypothesis import strategies as st

import wove
from wove import TaskCancelled, TaskTimeout, WoveResult, merge, weave

settings.register_profile(
    "wove-bounded",
    max_examples=120,
    deadline=None,
    derandomize=True,  # `make test` sees the same examples each run
    database=None,  # no .hypothesis/ directory in the checkout
    # No shrinking: a failing (or hanging) example is reported as drawn, at once, instead
    # of after minutes of re-running it; `make fuzz` shrinks.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile(
    "wove-fuzz",
    max_examples=int(os.environ.get("WOVE_FUZZ_EXAMPLES", "3000")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
PROFILE = settings.get_profile("wove-fuzz" if os.environ.get("WOVE_FUZZ") else "wove-bounded")

P = 1_000_003  # values are ints mod P, so deep graphs stay cheap to compare
SHORT_TIMEOUT = 0.05  # a "slow" task runs past it
SLOW_SLEEP = 0.3
LONG_TIMEOUT = 30.0  # a task that must never reach its timeout
BOUND = 20.0  # a weave that takes longer than this is a hang
SETTLE = 0.06  # how long to watch for task bodies starting after a block ended


class Boom(Exception):
    """What the generated failing tasks raise (most of them)."""


class BaseBoom(BaseException):
    """Not an Exception: never retried, and still the weave's exception."""


class Carried(Exception):
    """An exception *returned* as a task's value: it is a value like any other."""

    def __eq__(self, other: object) -> bool:
        return type(other) is Carried and other.args == self.args

    def __hash__(self) -> int:
        return hash(self.args)


# What a failing task raises, by kind. StopIteration only from sync tasks: in a coroutine,
# Python itself turns it into a RuntimeError (PEP 479).
ERRORS: dict[str, type[BaseException]] = {
    "boom": Boom,
    "base": BaseBoom,
    "stop": StopIteration,
    "timeout": TimeoutError,  # raised by the task itself, not a timeout of Wove's
}


# --- the description -------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    name: str
    is_async: bool
    deps: tuple[str, ...]  # parameters: earlier tasks, keywords, "data"
    source: tuple[int, ...] | str | None  # mapped over literal items, or over a name
    as_generator: bool  # a literal source passed as a one-shot generator
    length: int  # unmapped: -1 gives an int, n >= 0 a list of n distinct ints
    seed: int
    sleep: float
    fail_times: int  # the first attempts (of each failing item) that raise
    fail_mod: int  # mapped: items with _h(item) % fail_mod == 0 are the failing ones
    error: str  # what it raises: a key of ERRORS
    carry: bool  # its value (each element) is wrapped in a Carried exception
    sensitive: bool  # a sync task with thread_sensitive=True
    retries: int
    timeout: float | None
    slow: bool  # sleeps past its (short) timeout
    workers: int | None
    limit: int | None
    nested: Desc | None
    nested_mode: str  # sync task: "with" | "asyncio.run"; async: "async with" | "with"
    merged: str  # async task: its sleeps and failure run in `await merge(part, [0])`,
    # with `part` "sync" or "async" ("" for none)

    @property
    def needs(self) -> set[str]:
        return set(self.deps) | ({self.source} if isinstance(self.source, str) else set())

    def fails(self, item: Any) -> bool:
        return item is None or _h(item) % self.fail_mod == 0

    def doomed(self, item: Any) -> bool:
        """Whether this call fails for good (ignoring nested weaves)."""
        if self.slow:
            return True
        if not self.fails(item):
            return False
        if self.error == "base":  # never retried
            return self.fail_times >= 1
        return self.fail_times > self.retries


@dataclass(frozen=True)
class Desc:
    keywords: dict[str, Any]  # for a nested weave, filled in at run time ("base")
    tasks: tuple[Task, ...]
    max_workers: int | None
    debug: bool  # must never change what runs or its results
    traced: bool  # the top weave runs inside wove.collect(), which takes other paths


def _h(value: Any) -> int:
    if isinstance(value, list):
        return sum((j + 1) * _h(x) for j, x in enumerate(value)) % P
    if isinstance(value, dict):
        return sum((j + 1) * (_h(k) + _h(value[k])) for j, k in enumerate(sorted(value))) % P
    if isinstance(value, Carried):
        return (_h(value.args[0]) + 5) % P
    if isinstance(value, str):  # the keys of `data`
        return sum(map(ord, value)) % P
    assert isinstance(value, int), value
    return value % P


def _compute(task: Task, kwargs: dict[str, Any], item: Any) -> int:
    total = task.seed * 1000 + sum(_h(kwargs[d]) for d in task.deps)
    if item is not None:
        total += 7 * _h(item) + 1
    return total % P


def _wrap(task: Task, value: int) -> Any:
    return Carried(value) if task.carry else value


def _shape(task: Task, value: int) -> Any:
    """An unmapped task's value (a mapped task's item values are only wrapped)."""
    if task.length < 0:
        return _wrap(task, value)
    return [_wrap(task, value + j) for j in range(task.length)]


# --- generation ------------------------------------------------------------------------


@st.composite
def descs(draw: st.DrawFn, prefix: str = "", depth: int = 0) -> Desc:
    if depth == 0:
        keywords: dict[str, Any] = {
            "k0": draw(st.integers(0, 50)),
            "k1": draw(st.lists(st.integers(0, 30), max_size=4, unique=True)),
            # Mapped over, a dict gives its keys.
            "k2": draw(st.dictionaries(st.integers(0, 30), st.integers(0, 9), max_size=3)),
        }
        lists = {"k1", "k2"}
    else:
        keywords = {"base": 0}  # the outer task passes its own value
        lists = set()
    may_fail = draw(st.booleans())
    count = draw(st.integers(1, 6 if depth == 0 else 3))
    tasks: list[Task] = []
    for i in range(count):
        name = f"{prefix}t{i}"
        earlier = [t.name for t in tasks]
        deps = tuple(
            draw(st.lists(st.sampled_from([*earlier, *keywords, "data"]), max_size=3, unique=True))
        )
        kind = draw(
            st.sampled_from(["plain", "literal", "name"] if lists else ["plain", "literal"])
        )
        source: tuple[int, ...] | str | None = None
        if kind == "literal":
            source = tuple(draw(st.lists(st.integers(0, 40), max_size=4, unique=True)))
        elif kind == "name":
            source = draw(st.sampled_from(sorted(lists)))
        is_async = draw(st.booleans())
        nested = None
        nested_mode = ""
        if depth == 0 and draw(st.integers(0, 4)) == 0:
            nested = draw(descs(prefix=f"{name}_", depth=depth + 1))
            nested_mode = draw(
                st.sampled_from(["async with", "with"] if is_async else ["with", "asyncio.run"])
            )
        fail_times = draw(st.sampled_from([0, 0, 1, 2, 99]))
        retries = draw(st.integers(0, 2))
        error = "boom"
        if may_fail:
            error = draw(st.sampled_from(["boom", "boom", "base", "timeout", "stop"]))
            if is_async and error == "stop":
                error = "boom"
        else:
            fail_times = min(fail_times, retries)
        timing = draw(
            st.sampled_from(
                ["none", "long", "slow"] if may_fail and nested is None else ["none", "long"]
            )
        )
        mapped = source is not None
        tasks.append(
            Task(
                name=name,
                is_async=is_async,
                deps=deps,
                source=source,
                as_generator=kind == "literal" and draw(st.booleans()),
                length=-1 if mapped else draw(st.integers(-1, 3)),
                seed=draw(st.integers(0, 99)),
                sleep=draw(st.sampled_from([0.0, 0.001, 0.003])),
                fail_times=fail_times,
                fail_mod=draw(st.integers(1, 3)),
                error=error,
                carry=draw(st.integers(0, 5)) == 0,
                # Not with asyncio.run(): the caller's thread may be running a loop.
                sensitive=not is_async
                and nested_mode != "asyncio.run"
                and draw(st.integers(0, 5)) == 0,
                retries=retries,
                timeout={"none": None, "long": LONG_TIMEOUT, "slow": SHORT_TIMEOUT}[timing],
                slow=timing == "slow",
                workers=draw(st.none() | st.integers(1, 3)) if mapped else None,
                limit=draw(st.sampled_from([None, None, 6000])) if mapped else None,
                nested=nested,
                nested_mode=nested_mode,
                merged=draw(st.sampled_from(["", "", "sync", "async"])) if is_async else "",
            )
        )
        if mapped or tasks[-1].length >= 0:
            lists.add(name)
    return Desc(
        keywords,
        tuple(tasks),
        draw(st.sampled_from([None, None, 1, 2])),
        debug=draw(st.integers(0, 9)) == 0,
        traced=depth == 0 and draw(st.booleans()),
    )


# --- the reference ---------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    state: str  # "ok", "doomed" (fails itself) or "blocked" (a dependency does not finish)
    value: Any = None
    items: int = 1  # how many calls finish it (items of a mapped task)


Scope = tuple[tuple[str, Any], ...]  # (nested task, item) per level: attempts left out


def evaluate(desc: Desc, keywords: dict[str, Any], scope: Scope, table: dict) -> dict:
    """Plain calls in definition order (a topological order); records every level."""
    values: dict[str, Any] = {**keywords, "data": dict(keywords)}
    outcomes: dict[str, Outcome] = {}
    for task in desc.tasks:
        if any(outcomes[n].state != "ok" for n in task.needs if n in outcomes):
            outcome = Outcome("blocked")
        else:
            kwargs = {d: values[d] for d in task.deps}
            if task.source is None:
                items: list[Any] = [None]
            elif isinstance(task.source, tuple):
                items = list(task.source)
            else:
                items = list(values[task.source])
            doomed = False
            results = []
            for item in items:
                value = _compute(task, kwargs, item)
                if task.doomed(item):
                    doomed = True
                elif task.nested is not None:
                    inner = evaluate(
                        task.nested, {"base": value}, (*scope, (task.name, item)), table
                    )
                    if any(o.state != "ok" for o in inner.values()):
                        doomed = True
                    else:
                        value = (value + _h([o.value for o in inner.values()])) % P
                results.append(value)
            if doomed:
                outcome = Outcome("doomed", items=len(items))
            elif task.source is None:
                outcome = Outcome("ok", _shape(task, results[0]))
            else:
                outcome = Outcome("ok", [_wrap(task, r) for r in results], items=len(items))
        outcomes[task.name] = outcome
        table[(scope, task.name)] = outcome
        if outcome.state == "ok":
            values[task.name] = outcome.value
    return outcomes


# --- running ---------------------------------------------------------------------------

RunScope = tuple[tuple[str, Any, int], ...]  # (nested task, item, attempt) per level


def _plain(scope: RunScope) -> Scope:
    return tuple((name, item) for name, item, _ in scope)


@dataclass
class Event:
    seq: int
    kind: str  # "start" or "end"
    scope: RunScope
    name: str
    item: Any
    attempt: int
    status: str = ""  # of an end: "ok", "error", "cancelled"


@dataclass
class Raised:
    error: BaseException
    scope: RunScope
    name: str
    final: bool  # no retry was left for it


@dataclass
class WeaveRun:
    """One weave block that ran (the top one or a nested one), for the checks."""

    desc: Desc
    scope: RunScope
    error: BaseException | None = None
    result: WoveResult | None = None
    end: int = -1  # the event sequence number when its block returned


@dataclass
class Recorder:
    lock: threading.Lock = field(default_factory=threading.Lock)
    seq: int = 0
    events: list[Event] = field(default_factory=list)
    raised: list[Raised] = field(default_factory=list)
    attempts: dict[tuple[RunScope, str, Any], int] = field(default_factory=dict)
    runs: list[WeaveRun] = field(default_factory=list)

    def mark(self) -> int:
        with self.lock:
            self.seq += 1
            return self.seq

    def start(self, scope: RunScope, name: str, item: Any) -> int:
        with self.lock:
            key = (scope, name, item)
            attempt = self.attempts.get(key, 0)
            self.attempts[key] = attempt + 1
            self.seq += 1
            self.events.append(Event(self.seq, "start", scope, name, item, attempt))
            return attempt

    def merged(self, scope: RunScope, name: str, item: Any, attempt: int, kind: str) -> None:
        with self.lock:
            self.seq += 1
            self.events.append(Event(self.seq, kind, scope, name, item, attempt))

    def end(self, scope: RunScope, name: str, item: Any, attempt: int, status: str) -> None:
        with self.lock:
            self.seq += 1
            self.events.append(Event(self.seq, "end", scope, name, item, attempt, status))


def _make_function(task: Task, body: Callable[[dict[str, Any]], Any]) -> Any:
    # Wove reads dependencies from parameter names, so the signature has to be generated.
    params = [*task.deps, *(["item"] if task.source is not None else [])]
    if task.is_async:
        source = f"async def {task.name}({', '.join(params)}):\n    return await _body(locals())\n"
    else:
        source = f"def {task.name}({', '.join(params)}):\n    return _body(locals())\n"
    namespace: dict[str, Any] = {"_body": body}
    exec(source, namespace)
    return namespace[task.name]


def _register(w: Any, desc: Desc, rec: Recorder, scope: RunScope) -> None:
    for task in desc.tasks:
        options: dict[str, Any] = {}
        if task.retries:
            options["retries"] = task.retries
        if task.timeout is not None:
            options["timeout"] = task.timeout
        if task.workers is not None:
            options["workers"] = task.workers
        if task.limit is not None:
            options["limit_per_minute"] = task.limit
        if task.sensitive:
            options["thread_sensitive"] = True
        function = _make_function(task, _body_for(task, rec, scope))
        if task.source is None:
            w.do(**options)(function) if options else w.do(function)
        elif isinstance(task.source, tuple):
            items = (x for x in task.source) if task.as_generator else list(task.source)
            w.do(items, **options)(function)
        else:
            w.do(task.source, **options)(function)


def _body_for(task: Task, rec: Recorder, scope: RunScope) -> Callable[[dict[str, Any]], Any]:
    def prologue(kwargs: dict[str, Any]) -> tuple[Any, int, int]:
        item = kwargs.pop("item", None)
        attempt = rec.start(scope, task.name, item)
        return item, attempt, _compute(task, kwargs, item)

    def maybe_fail(item: Any, attempt: int) -> None:
        if attempt < task.fail_times and task.fails(item):
            error = ERRORS[task.error](f"{task.name} item={item} attempt={attempt} {scope}")
            final = attempt >= task.retries or task.error == "base"
            with rec.lock:
                rec.raised.append(Raised(error, scope, task.name, final))
            raise error

    def epilogue(value: int, inner: list[Any] | None) -> Any:
        if inner is not None:
            value = (value + _h(inner)) % P
        return _wrap(task, value) if task.source is not None else _shape(task, value)

    def sync_body(kwargs: dict[str, Any]) -> Any:
        item, attempt, value = prologue(kwargs)
        status = "error"
        try:
            if task.sleep:
                time.sleep(task.sleep)
            maybe_fail(item, attempt)
            if task.slow:
                time.sleep(SLOW_SLEEP)
            inner = None
            if task.nested is not None:
                inner_scope = (*scope, (task.name, item, attempt))
                if task.nested_mode == "with":
                    inner = _run_sync(task.nested, rec, inner_scope, {"base": value})
                else:
                    inner = asyncio.run(_run_async(task.nested, rec, inner_scope, {"base": value}))
            result = epilogue(value, inner)
            status = "ok"
            return result
        finally:
            rec.end(scope, task.name, item, attempt, status)

    def merged_sync(key: tuple[Any, int]) -> None:
        item, attempt = key
        rec.merged(scope, task.name, item, attempt, "merge-start")
        try:
            if task.sleep:
                time.sleep(task.sleep)
            maybe_fail(item, attempt)
            if task.slow:
                time.sleep(SLOW_SLEEP)  # the merged call is waited for, timeout or not
        finally:
            rec.merged(scope, task.name, item, attempt, "merge-end")

    async def merged_async(key: tuple[Any, int]) -> None:
        item, attempt = key
        rec.merged(scope, task.name, item, attempt, "merge-start")
        try:
            if task.sleep:
                await asyncio.sleep(task.sleep)
            maybe_fail(item, attempt)
            if task.slow:
                await asyncio.sleep(SLOW_SLEEP)
        finally:
            rec.merged(scope, task.name, item, attempt, "merge-end")

    async def async_body(kwargs: dict[str, Any]) -> Any:
        item, attempt, value = prologue(kwargs)
        status = "error"
        try:
            if task.merged:
                part = merged_sync if task.merged == "sync" else merged_async
                assert await merge(part, [(item, attempt)]) == [None]
            else:
                if task.sleep:
                    await asyncio.sleep(task.sleep)
                maybe_fail(item, attempt)
                if task.slow:
                    await asyncio.sleep(SLOW_SLEEP)
            inner = None
            if task.nested is not None:
                inner_scope = (*scope, (task.name, item, attempt))
                try:
                    if task.nested_mode == "with":  # a plain `with` on a running loop's thread
                        inner = _run_sync(task.nested, rec, inner_scope, {"base": value})
                    else:
                        inner = await _run_async(task.nested, rec, inner_scope, {"base": value})
                except StopIteration as stop:
                    # A coroutine cannot raise StopIteration (PEP 479 would make it a
                    # RuntimeError that no task raised): fail with a recorded Boom.
                    error = Boom(f"{task.name}: the nested weave raised {stop!r}")
                    with rec.lock:
                        rec.raised.append(Raised(error, scope, task.name, True))
                    raise error from stop
            result = epilogue(value, inner)
            status = "ok"
            return result
        except asyncio.CancelledError:
            status = "cancelled"
            raise
        finally:
            rec.end(scope, task.name, item, attempt, status)

    return async_body if task.is_async else sync_body


def _inner_values(run: WeaveRun) -> list[Any]:
    if run.error is not None:
        raise run.error
    assert run.result is not None
    return list(run.result)


def _run_sync(desc: Desc, rec: Recorder, scope: RunScope, keywords: dict[str, Any]) -> Any:
    run = WeaveRun(desc, scope)
    with rec.lock:
        rec.runs.append(run)
    w = weave(max_workers=desc.max_workers, debug=desc.debug, **keywords)
    try:
        with w:
            _register(w, desc, rec, scope)
    except RuntimeError as error:
        # A coroutine cannot raise StopIteration (PEP 479): `async with` raises a
        # RuntimeError whose cause is the task's own StopIteration (docs/errors.md).
        cause = error.__cause__
        run.error = cause if isinstance(cause, StopIteration) else error
    except BaseException as error:
        run.error = error
    run.end = rec.mark()
    run.result = w.result
    return _inner_values(run)


async def _run_async(desc: Desc, rec: Recorder, scope: RunScope, keywords: dict[str, Any]) -> Any:
    run = WeaveRun(desc, scope)
    with rec.lock:
        rec.runs.append(run)
    w = weave(max_workers=desc.max_workers, debug=desc.debug, **keywords)
    try:
        async with w:
            _register(w, desc, rec, scope)
    except asyncio.CancelledError as error:  # cancelled with the task awaiting it
        run.error = error
        run.end = rec.mark()
        raise
    except BaseException as error:
        run.error = error
    run.end = rec.mark()
    run.result = w.result
    return _inner_values(run)


def _run_top(
    mode: str, desc: Desc, rec: Recorder, on_done_async: bool, cancel_after: float
) -> None:
    """Run the top weave in ``mode``; what it did is in ``rec.runs[0]``."""
    keywords = desc.keywords
    if mode == "sync":
        try:
            _run_sync(desc, rec, (), keywords)
        except BaseException:
            pass
    elif mode == "async":

        async def main() -> None:
            try:
                await _run_async(desc, rec, (), keywords)
            except BaseException:
                pass
            # Nothing of the weave may be left on the caller's loop.
            left = asyncio.all_tasks() - {asyncio.current_task()}
            assert not left, f"asyncio tasks left on the caller's loop: {left}"

        asyncio.run(main())
    elif mode == "async, cancelled":

        async def cancelled() -> None:
            waiting = asyncio.ensure_future(_run_async(desc, rec, (), keywords))
            await asyncio.sleep(cancel_after)
            waiting.cancel()
            try:
                await waiting
            except BaseException:
                pass
            left = asyncio.all_tasks() - {asyncio.current_task()}
            assert not left, f"asyncio tasks left on the caller's loop: {left}"

        asyncio.run(cancelled())
    elif mode == "in loop":

        async def main() -> None:
            try:
                _run_sync(desc, rec, (), keywords)  # blocks this loop: documented
            except BaseException:
                pass

        asyncio.run(main())
    else:
        _run_background(mode, desc, rec, on_done_async)


def _run_background(mode: str, desc: Desc, rec: Recorder, on_done_async: bool) -> None:
    run = WeaveRun(desc, ())
    rec.runs.append(run)
    called = threading.Event()
    results: list[WoveResult] = []

    def note(result: WoveResult) -> None:
        run.end = rec.mark()
        results.append(result)
        called.set()

    async def note_async(result: WoveResult) -> None:
        note(result)

    on_done = note_async if on_done_async else note
    w = weave(
        background=True,
        on_done=on_done,
        max_workers=desc.max_workers,
        debug=desc.debug,
        **desc.keywords,
    )
    began = time.monotonic()
    if mode == "background":
        with w:
            _register(w, desc, rec, ())
    else:  # "async background": entered with `async with`; the loop ends right after

        async def main() -> None:
            async with w:
                _register(w, desc, rec, ())

        asyncio.run(main())
    returned = time.monotonic() - began
    assert returned < 1.0, f"the background block took {returned:.2f} s to return"
    assert called.wait(BOUND), "on_done was never called"
    assert w.wait(BOUND), "w.wait() timed out after on_done was called"
    assert w.done
    result = results[0]
    run.result = result
    run.error = result.exception
    assert w.result.exception is result.exception
    time.sleep(SETTLE)
    assert len(results) == 1, f"on_done was called {len(results)} times"


def _bounded(seconds: float, function: Callable[[], None], what: str) -> None:
    outcome: dict[str, BaseException] = {}

    def target() -> None:
        try:
            function()
        except BaseException as error:
            outcome["error"] = error

    thread = threading.Thread(target=target, name="property-guard", daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"HANG: did not finish within {seconds} s: {what}"
    if "error" in outcome:
        raise outcome["error"]


# --- the checks ------------------------------------------------------------------------


def _explains(rec: Recorder, error: BaseException, table: dict) -> str:
    """Which doomed task raised ``error`` (the block's exception), or fail."""
    for raised in rec.raised:
        if raised.error is error:
            assert raised.final, f"{error!r} was retried, yet it is the weave's exception"
            owner = table[(_plain(raised.scope), raised.name)]
            assert owner.state == "doomed", f"{error!r} came from a task that should succeed"
            return raised.name
    if isinstance(error, TaskTimeout):
        assert error.task in _SLOW, f"{error!r}: a timeout of a task that is not slow"
        return error.task
    raise AssertionError(f"the weave raised {error!r}, which no task raised")


_SLOW: set[str] = set()  # names of the slow tasks of the current example


def _owned(rec: Recorder, error: BaseException, run: WeaveRun, name: str) -> bool:
    """Whether ``error`` was raised by task ``name`` of ``run`` (or a weave nested in it)."""
    for raised in rec.raised:
        if raised.error is error:
            top = raised.scope[len(run.scope)][0] if len(raised.scope) > len(run.scope) else None
            return raised.scope[: len(run.scope)] == run.scope and (
                (raised.name == name and len(raised.scope) == len(run.scope)) or top == name
            )
    if isinstance(error, TaskTimeout):
        return error.task == name or error.task.startswith(f"{name}_")
    return False


def _read(result: WoveResult, name: str) -> tuple[str, Any]:
    try:
        return "value", result[name]
    except TaskCancelled as cancelled:
        return "cancelled", cancelled
    except BaseException as error:
        return "error", error


def check_run(rec: Recorder, run: WeaveRun, table: dict, events: list[Event]) -> None:
    scope = _plain(run.scope)
    desc = run.desc
    outcomes = {t.name: table[(scope, t.name)] for t in desc.tasks}
    names = [t.name for t in desc.tasks]
    result, error = run.result, run.error
    assert result is not None, f"weave at {run.scope}: no result"
    where = f"weave at scope {run.scope or 'top'}"
    if not any(o.state == "doomed" for o in outcomes.values()):
        assert error is None, f"{where}: nothing should fail, but it raised {error!r}"
        assert result.exception is None
        for name in names:
            assert result[name] == outcomes[name].value, f"{where}: wrong value of {name}"
        assert list(result) == [outcomes[n].value for n in names]
        assert set(result.timings) == set(names), f"{where}: timings {set(result.timings)}"
        assert not result.cancelled, f"{where}: cancelled {result.cancelled}"
        return
    assert error is not None, f"{where}: a task is doomed, yet the weave succeeded"
    assert result.exception is error, f"{where}: w.result.exception is not the raised one"
    _explains(rec, error, table)
    ours = [e for e in events if e.scope == run.scope]
    for task in desc.tasks:
        name = task.name
        how, value = _read(result, name)
        if how == "cancelled":
            assert name in result.cancelled, f"{where}: {name} raises TaskCancelled"
            assert value.cause is error, f"{where}: {name}'s TaskCancelled.cause"
            assert name not in result.timings
        elif how == "error":
            assert name not in result.cancelled, f"{where}: {name} failed, yet is cancelled"
            assert _owned(rec, value, run, name), f"{where}: {name} raises {value!r}"
            assert name not in result.timings
        else:
            assert outcomes[name].state == "ok", f"{where}: {name} doomed/blocked has a value"
            assert value == outcomes[name].value, f"{where}: wrong value of {name}"
            assert name not in result.cancelled
            assert name in result.timings, f"{where}: {name} has a value but no timing"
        # A task whose every call returned before the block ended has finished: its
        # result stays readable (SPEC 4).
        if outcomes[name].state == "ok" and outcomes[name].items and not task.slow:
            finished = {
                e.item for e in ours if e.name == name and e.status == "ok" and e.seq < run.end
            }
            if len(finished) == outcomes[name].items:
                assert name in result.timings, (
                    f"{where}: every call of {name} returned, yet it has no result "
                    f"({'cancelled' if name in result.cancelled else 'failed'})"
                )


def check_events(rec: Recorder, table: dict, events: list[Event]) -> None:
    by_scope: dict[RunScope, list[Event]] = {}
    for event in events:
        by_scope.setdefault(event.scope, []).append(event)
    for scope, scoped in by_scope.items():
        plain = _plain(scope)
        # When each task's calls all returned: the sequence number of the last one.
        done: dict[str, int] = {}
        ok_items: dict[str, dict[Any, int]] = {}
        for event in scoped:
            if event.kind == "end" and event.status == "ok":
                ok_items.setdefault(event.name, {})[event.item] = event.seq
        for name, items in ok_items.items():
            if len(items) == table[(plain, name)].items:
                done[name] = max(items.values())
        for event in scoped:
            if event.kind != "start":
                continue
            outcome = table[(plain, event.name)]
            assert outcome.state != "blocked", (
                f"{event.name} (scope {scope}) started although a task it needs failed"
            )
            task = _TASKS[event.name]
            for need in task.needs:
                if (plain, need) not in table:
                    continue  # a keyword
                needed = table[(plain, need)]
                if needed.state == "ok" and needed.items == 0:
                    continue  # mapped over nothing: finished without a call
                early = f"{event.name} (scope {scope}) started before {need} had finished"
                assert need in done, early
                assert done[need] < event.seq, early
    for run in rec.runs:
        inside = [e for e in events if e.scope[: len(run.scope)] == run.scope]
        assert run.end > 0, f"the weave at scope {run.scope} never returned"
        late = [e for e in inside if e.kind == "start" and e.seq > run.end]
        assert not late, f"task bodies started after their weave's block ended: {late}"
        ends = {
            (e.scope, e.name, repr(e.item), e.attempt)
            for e in inside
            if e.kind == "end" and e.seq < run.end
        }
        running = [
            e
            for e in inside
            if e.kind == "start"
            and not (_TASKS[e.name].slow and not _TASKS[e.name].is_async)
            and (e.scope, e.name, repr(e.item), e.attempt) not in ends
        ]
        assert not running, f"calls still running after the block at {run.scope} ended: {running}"
        # A call started by merge() is waited for, even past its task's timeout (docs).
        merge_ends = {
            (e.scope, e.name, repr(e.item), e.attempt)
            for e in inside
            if e.kind == "merge-end" and e.seq < run.end
        }
        merging = [
            e
            for e in inside
            if e.kind == "merge-start"
            and (e.seq > run.end or (e.scope, e.name, repr(e.item), e.attempt) not in merge_ends)
        ]
        assert not merging, f"merged calls running after the block at {run.scope}: {merging}"


def check_records(records: list[wove.TraceRecord], events: list[Event]) -> None:
    """Every attempt of every task is reported (docs: tracing): as many "ok" and "error"
    records per task as calls of it that returned or raised."""
    for name, task in _TASKS.items():
        if task.slow:
            continue  # an abandoned call returns after its "timeout" record
        ended = [e for e in events if e.kind == "end" and e.name == name]
        for status in ("ok", "error"):
            calls = sum(e.status == status for e in ended)
            # A nested weave's TaskTimeout raised through this task is reported as
            # "timeout" too (it was not this task's own timeout, but the type says so).
            statuses = ("error", "timeout") if status == "error" and task.nested else (status,)
            reported = sum(r.task == name and r.status in statuses for r in records)
            assert reported == calls, (
                f"{name}: {calls} calls ended {status!r}, {reported} records say so"
            )


_TASKS: dict[str, Task] = {}


def _index(desc: Desc) -> None:
    for task in desc.tasks:
        _TASKS[task.name] = task
        if task.slow:
            _SLOW.add(task.name)
        if task.nested is not None:
            _index(task.nested)


def _describe(desc: Desc, indent: str = "") -> str:
    lines = [
        f"{indent}weave(max_workers={desc.max_workers}, debug={desc.debug}, {desc.keywords})"
        f"{' traced' if desc.traced else ''}"
    ]
    for t in desc.tasks:
        lines.append(
            f"{indent}  {'async ' if t.is_async else ''}{t.name}({', '.join(t.deps)})"
            f" source={t.source!r}{' (gen)' if t.as_generator else ''} len={t.length}"
            f" sleep={t.sleep} fail={t.fail_times}%{t.fail_mod} {t.error} retries={t.retries}"
            f" carry={t.carry} sensitive={t.sensitive}"
            f" timeout={t.timeout} slow={t.slow} workers={t.workers} limit={t.limit}"
            f"{' nested ' + t.nested_mode if t.nested else ''}"
            f"{' merge ' + t.merged if t.merged else ''}"
        )
        if t.nested is not None:
            lines.append(_describe(t.nested, indent + "    "))
    return "\n".join(lines)


# "async, cancelled": the task awaiting `async with` is cancelled after `cancel_after` s.
MODES = ["sync", "async", "async, cancelled", "in loop", "background", "async background"]
CANCEL_AFTER = st.sampled_from([0.0, 0.001, 0.004, 0.02])
TIMEOUT = 3600 if os.environ.get("WOVE_FUZZ") else 200


def _check_example(desc: Desc, mode: str, on_done_async: bool, cancel_after: float) -> None:
    _TASKS.clear()
    _SLOW.clear()
    _index(desc)
    table: dict = {}
    evaluate(desc, desc.keywords, (), table)
    top = [table[((), t.name)].state for t in desc.tasks]
    tally(f"mode: {mode}")
    tally(f"outcome: {'fails' if 'doomed' in top else 'succeeds'}")
    for task in _TASKS.values():
        if task.nested is not None:
            tally(f"nested: {'async' if task.is_async else 'sync'} task, {task.nested_mode}")
        if task.slow:
            tally("has a slow task")
        if task.fail_times and task.error != "boom":
            tally(f"raises {task.error}")
        if task.sensitive:
            tally("thread-sensitive task")
        if task.merged:
            tally(f"merge() of a {task.merged} part")
    if desc.traced:
        tally("traced")
    if desc.debug:
        tally("debug")
    rec = Recorder()
    what = f"mode={mode}\n{_describe(desc)}"
    records: list[wove.TraceRecord] = []

    def run() -> None:
        if desc.traced:
            with wove.collecting(records.append):
                _run_top(mode, desc, rec, on_done_async, cancel_after)
        else:
            _run_top(mode, desc, rec, on_done_async, cancel_after)

    _bounded(BOUND, run, what)
    time.sleep(SETTLE)  # anything that would start late has had time to
    with rec.lock:
        events = list(rec.events)
        runs = list(rec.runs)
    check_events(rec, table, events)
    if desc.traced:
        check_records(list(records), events)
    for run in runs:
        if run.result is None and isinstance(run.error, asyncio.CancelledError):
            continue  # an inner `async with` cancelled with its task: no result to check
        check_run(rec, run, table, events)


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT)
@settings(PROFILE)
@given(
    desc=descs(),
    mode=st.sampled_from(MODES),
    on_done_async=st.booleans(),
    cancel_after=CANCEL_AFTER,
)
def test_random_weave_matches_the_reference(
    desc: Desc, mode: str, on_done_async: bool, cancel_after: float
) -> None:
    _check_example(desc, mode, on_done_async, cancel_after)


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT)
@settings(PROFILE, max_examples=max(1, PROFILE.max_examples // 3))
@given(
    desc=descs(),
    mode=st.sampled_from(MODES),
    on_done_async=st.booleans(),
    cancel_after=CANCEL_AFTER,
    threads=st.integers(1, 4),
)
def test_random_weave_on_a_small_pool(
    desc: Desc, mode: str, on_done_async: bool, cancel_after: float, threads: int
) -> None:
    # Nested weaves and abandoned calls must not starve a pool this small (the docs: the
    # limit is raised while a pool thread waits for a nested weave or is abandoned).
    before = wove.settings().max_threads
    wove.configure(max_threads=threads)
    try:
        _check_example(desc, mode, on_done_async, cancel_after)
    finally:
        wove.configure(max_threads=before)


# --- the first failure in time wins ------------------------------------------------------

GAP = 0.1  # between two failures, so that which one came first is not a race


@st.composite
def failers(draw: st.DrawFn) -> list[tuple[bool, bool, int]]:
    """(async?, mapped?, rank in time) per failing task, in definition order."""
    count = draw(st.integers(2, 3))
    ranks = draw(st.permutations(range(count)))
    return [(draw(st.booleans()), draw(st.booleans()), rank) for rank in ranks]


def _failing_task(w: Any, name: str, is_async: bool, mapped: bool, rank: int, raised: dict):
    def fail_now(item: int) -> None:
        if item:  # of a mapped task, item 0 succeeds at once and item 1 fails
            error = Boom(f"{name} (failing {rank}th)")
            raised[name] = error
            raise error

    body: Callable[..., Any]
    if is_async and mapped:

        async def body(item: int) -> None:
            await asyncio.sleep((rank + 1) * GAP)
            fail_now(item)

    elif is_async:

        async def body() -> None:
            await asyncio.sleep((rank + 1) * GAP)
            fail_now(1)

    elif mapped:

        def body(item: int) -> None:
            time.sleep((rank + 1) * GAP)
            fail_now(item)

    else:

        def body() -> None:
            time.sleep((rank + 1) * GAP)
            fail_now(1)

    body.__name__ = name
    if mapped:
        w.do([0, 1])(body)
    else:
        w.do(body)


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT)
@settings(PROFILE, max_examples=max(1, PROFILE.max_examples // 4))
@given(tasks=failers(), is_async=st.booleans(), bystander=st.booleans())
def test_the_first_failure_in_time_is_raised(
    tasks: list[tuple[bool, bool, int]], is_async: bool, bystander: bool
) -> None:
    raised: dict[str, BaseException] = {}
    names = [f"f{i}" for i in range(len(tasks))]
    first = names[next(i for i, (_, _, rank) in enumerate(tasks) if rank == 0)]

    def register(w: Any) -> None:
        for name, (task_async, mapped, rank) in zip(names, tasks, strict=True):
            _failing_task(w, name, task_async, mapped, rank, raised)
        if bystander:  # an unrelated task that finishes before any failure

            @w.do
            def calm():
                return "calm"

    def run() -> tuple[BaseException | None, WoveResult]:
        w = weave()
        try:
            with w:
                register(w)
        except Boom as error:
            return error, w.result
        return None, w.result

    async def run_async() -> tuple[BaseException | None, WoveResult]:
        w = weave()
        try:
            async with w:
                register(w)
        except Boom as error:
            return error, w.result
        return None, w.result

    box: dict[str, Any] = {}

    def go() -> None:
        box["out"] = asyncio.run(run_async()) if is_async else run()

    _bounded(BOUND, go, f"{tasks} async={is_async}")
    error, result = box["out"]
    assert error is not None
    assert error is raised[first], f"raised {error!r}, but {first} failed first"
    assert result.exception is error
    if bystander:
        assert result.calm == "calm"
    for name, (task_async, _, _) in zip(names, tasks, strict=True):
        if name != first and not task_async and name in raised:
            # A later sync failure ran to its end (threads are waited for): reading it
            # raises its own exception.
            how, value = _read(result, name)
            assert how == "error", f"{name}: {how} {value!r}"
            assert value is raised[name]


# --- waiting for a slot is not running ----------------------------------------------------

STEP = 0.05  # each call's own duration
STEP_TIMEOUT = 0.2  # four times a call, but less than the wait behind the others


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT)
@settings(PROFILE, max_examples=max(1, PROFILE.max_examples // 4))
@given(
    bound=st.sampled_from(["max_workers", "workers", "limit_per_minute"]),
    is_async=st.booleans(),
    mapped=st.booleans(),
    count=st.integers(5, 6),
    retries=st.integers(0, 1),
)
def test_waiting_for_a_slot_does_not_count_toward_the_timeout(
    bound: str, is_async: bool, mapped: bool, count: int, retries: int
) -> None:
    # A timeout bounds each attempt's run (docs: "once it runs longer than this"): calls
    # queued behind a bound of the weave (max_workers, workers, or spaced by
    # limit_per_minute) must not time out while they wait. (A full shared pool is
    # different: docs/errors.md says a call may then time out before it starts.)
    if bound in ("workers", "limit_per_minute"):
        mapped = True  # options of mapped tasks
    if bound == "max_workers":
        is_async = False  # it bounds threads
    options: dict[str, Any] = {"timeout": STEP_TIMEOUT, "retries": retries}
    if bound == "workers":
        options["workers"] = 1
    if bound == "limit_per_minute":
        options["limit_per_minute"] = 60 / (2 * STEP)  # item i starts at i * 2 * STEP

    def register(w: Any) -> None:
        if not mapped:
            for i in range(count):
                w.do(**options)(_stepper(f"t{i}", i, is_async))
            return
        if is_async:

            async def items(item: int) -> int:
                await asyncio.sleep(STEP)
                return item

        else:

            def items(item: int) -> int:
                time.sleep(STEP)
                return item

        w.do(list(range(count)), **options)(items)

    def run() -> list[Any]:
        with weave(max_workers=1 if bound == "max_workers" else None) as w:
            register(w)
        return list(w.result)

    box: dict[str, Any] = {}
    _bounded(BOUND, lambda: box.setdefault("values", run()), f"{bound} {mapped=}")
    expected = [list(range(count))] if mapped else list(range(count))
    assert box["values"] == expected


def _stepper(name: str, value: int, is_async: bool) -> Callable[[], Any]:
    call: Callable[[], Any]
    if is_async:

        async def call() -> int:
            await asyncio.sleep(STEP)
            return value

    else:

        def call() -> int:
            time.sleep(STEP)
            return value

    call.__name__ = name
    return call
