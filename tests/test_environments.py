"""Remote environments: routing tasks to a registered env, and their semantics there.

The env here is a small in-process fake (it runs the call on this process, in a thread
or on the loop); the Celery engine is proven against a real worker in tests/celery.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from guards import finishes_within
from overlap import Overlap

import wove
from wove import (
    DetachedWeave,
    InvalidOptionError,
    RemoteCall,
    RemoteTaskError,
    TaskTimeout,
    UnresolvedNameError,
    WeaveStateError,
    WoveResult,
    environments,
    weave,
)
from wove.environments import get_env, register_env

ENV = "fake"


class FakeEnv:
    """Runs each call here and records it; can hang a task, or fail it a few times."""

    def __init__(self) -> None:
        self.calls: list[RemoteCall] = []
        self.cancelled: list[str] = []
        self.hang: set[str] = set()  # tasks whose run() waits until cancelled
        self.failures: dict[str, int] = {}  # task -> how many more runs raise
        self.overlap = Overlap()
        self.started = threading.Event()  # set when a run() begins
        self.detached: list[DetachedWeave] = []
        self.remote_id = "remote-42"
        self._lock = threading.Lock()

    async def run(self, call: RemoteCall) -> Any:
        with self._lock:
            self.calls.append(call)
        with self.overlap.running():
            self.started.set()
            try:
                if call.task in self.hang:
                    await asyncio.Event().wait()  # forever, until cancelled
                with self._lock:
                    left = self.failures.get(call.task, 0)
                    if left:
                        self.failures[call.task] = left - 1
                if left:
                    raise ConnectionError(f"flaky remote run of {call.task}")
                if inspect.iscoroutinefunction(call.function):
                    return await call.function(**call.kwargs)
                return await asyncio.to_thread(call.function, **call.kwargs)
            except asyncio.CancelledError:
                with self._lock:
                    self.cancelled.append(call.task)
                raise

    def detach(self, weave: DetachedWeave) -> str:
        self.detached.append(weave)
        return self.remote_id

    def tasks_called(self) -> list[str]:
        return [call.task for call in self.calls]


@pytest.fixture(autouse=True)
def only_these_environments(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees only the environments it registers: the Celery tests of the same
    session register "celery" for the whole session."""
    monkeypatch.setattr(environments, "_envs", {})


@pytest.fixture
def env() -> Iterator[FakeEnv]:
    fake = FakeEnv()
    remove = register_env(ENV, fake)
    try:
        yield fake
    finally:
        remove()
    with pytest.raises(InvalidOptionError):
        get_env(ENV)


def origin_of(line: int) -> str:
    """The origin of a `with weave()` on ``line`` of this file."""
    return f"{__file__}:{line}"


def next_line() -> int:
    return sys._getframe(1).f_lineno + 1


# --- routing ---------------------------------------------------------------------------


def test_a_task_with_env_runs_there_and_its_value_feeds_a_local_task(env: FakeEnv) -> None:
    line = next_line()
    with weave(base=3) as w:

        @w.do
        def numbers(base: int) -> list[int]:
            return [base, base + 1]

        @w.do(env=ENV, timeout=30)
        def doubled(numbers: list[int], base: int) -> list[int]:
            return [n * 2 for n in numbers] + [base]

        @w.do
        def total(doubled: list[int]) -> int:
            return sum(doubled)

    assert w.result.doubled == [6, 8, 3]
    assert w.result.total == 17
    [call] = env.calls  # the local tasks did not go to the env
    assert call.task == "doubled"
    assert call.function is doubled
    assert dict(call.kwargs) == {"numbers": [3, 4], "base": 3}
    assert call.timeout == 30
    assert call.origin == origin_of(line)


def test_a_task_without_timeout_sends_none(env: FakeEnv) -> None:
    with weave() as w:

        @w.do(env=ENV)
        def there() -> int:
            return 1

    assert w.result.there == 1
    assert [call.timeout for call in env.calls] == [None]


def test_the_weave_env_sends_every_task_but_env_none(env: FakeEnv) -> None:
    here_thread: list[str] = []
    with weave(env=ENV) as w:

        @w.do
        def first() -> int:
            return 1

        @w.do
        async def second(first: int) -> int:
            return first + 1

        @w.do(env=None)
        def local(second: int) -> int:
            here_thread.append(threading.current_thread().name)
            return second * 10

    assert w.result.local == 20
    assert sorted(env.tasks_called()) == ["first", "second"]
    assert here_thread  # it ran, here


def test_async_and_sync_task_functions_both_route(env: FakeEnv) -> None:
    with weave() as w:

        @w.do(env=ENV)
        async def fetched() -> str:
            await asyncio.sleep(0)
            return "async"

        @w.do(env=ENV)
        def computed(fetched: str) -> str:
            return fetched + "+sync"

    assert w.result.computed == "async+sync"
    assert env.tasks_called() == ["fetched", "computed"]
    assert inspect.iscoroutinefunction(env.calls[0].function)
    assert not inspect.iscoroutinefunction(env.calls[1].function)


def test_weave_class_tasks_route(env: FakeEnv) -> None:
    class Pipeline(wove.Weave):
        @wove.Weave.do
        def raw(self) -> int:
            return 5

        @wove.Weave.do(env=ENV)
        def shaped(self, raw: int, scale: int) -> int:
            return raw * scale

    with weave(Pipeline, scale=2) as w:
        pass

    assert w.result.shaped == 10
    [call] = env.calls
    assert call.task == "shaped"
    assert dict(call.kwargs) == {"raw": 5, "scale": 2}  # self is bound, not injected


def test_a_weave_class_subclass_inherits_the_env_of_the_task_it_overrides(
    env: FakeEnv,
) -> None:
    class Base(wove.Weave):
        @wove.Weave.do(env=ENV)
        def value(self) -> int:
            return 1

    class Child(Base):
        @wove.Weave.do(retries=1)
        def value(self) -> int:
            return 2

    with weave(Child) as w:
        pass

    assert w.result.value == 2
    assert env.tasks_called() == ["value"]


def test_the_task_env_wins_over_the_weave_env_in_a_weave_class(env: FakeEnv) -> None:
    class Pipeline(wove.Weave):
        @wove.Weave.do(env=None)
        def here(self) -> int:
            return 1

        @wove.Weave.do
        def there(self, here: int) -> int:
            return here + 1

    with weave(Pipeline, env=ENV) as w:
        pass

    assert w.result.there == 2
    assert env.tasks_called() == ["there"]


def test_an_async_caller_routes_too(env: FakeEnv) -> None:
    async def main() -> WoveResult:
        async with weave(n=4) as w:

            @w.do(env=ENV)
            def squared(n: int) -> int:
                return n * n

            @w.do
            async def shown(squared: int) -> str:
                return f"={squared}"

        return w.result

    result = asyncio.run(main())
    assert result.shown == "=16"
    assert env.tasks_called() == ["squared"]


def test_a_remote_error_reaches_the_caller_unchanged(env: FakeEnv) -> None:
    raised = RemoteTaskError("boom", "KeyError", "'x'", "Traceback ...")

    class Failing(FakeEnv):
        async def run(self, call: RemoteCall) -> Any:
            raise raised

    remove = register_env("failing", Failing())
    try:
        with pytest.raises(RemoteTaskError) as caught, weave() as w:

            @w.do(env="failing")
            def boom() -> int:
                return 1

    finally:
        remove()
    assert caught.value is raised
    assert w.result.exception is raised


# --- mapped tasks ----------------------------------------------------------------------


def test_a_mapped_task_sends_one_call_per_item(env: FakeEnv) -> None:
    with weave(items=[1, 2, 3]) as w:

        @w.do("items", env=ENV)
        def squared(item: int, offset: int = 0) -> int:
            return item * item + offset

    assert w.result.squared == [1, 4, 9]
    assert sorted(call.kwargs["item"] for call in env.calls) == [1, 2, 3]
    assert {call.task for call in env.calls} == {"squared"}


def test_workers_bounds_the_remote_calls_in_flight(env: FakeEnv) -> None:
    # Two calls must be in flight at once to pass the barrier (it breaks after 10 s if
    # they are serialised); more than two would show in the peak.
    pair = threading.Barrier(2, timeout=10)

    with weave() as w:

        @w.do(range(6), env=ENV, workers=2)
        def paired(item: int) -> int:
            pair.wait()
            return item

    assert w.result.paired == [0, 1, 2, 3, 4, 5]
    assert env.overlap.calls == 6
    assert env.overlap.peak == 2


def test_without_workers_the_remote_items_all_run_at_once(env: FakeEnv) -> None:
    everyone = threading.Barrier(4, timeout=10)

    with weave() as w:

        @w.do(range(4), env=ENV)
        def together(item: int) -> int:
            everyone.wait()
            return item

    assert w.result.together == [0, 1, 2, 3]
    assert env.overlap.peak == 4


# --- traces ----------------------------------------------------------------------------


def test_a_remote_task_is_traced_in_the_remote_lane(env: FakeEnv) -> None:
    with wove.collect() as records, weave() as w:

        @w.do(env=ENV)
        def there() -> int:
            return 1

        @w.do
        def here(there: int) -> int:
            return there

        @w.do
        async def looped() -> int:
            return 2

    lanes = {record.task: record.lane for record in records}
    assert lanes == {"there": "remote", "here": "thread", "looped": "loop"}
    assert all(record.status == "ok" for record in records)


def test_a_mapped_remote_task_traces_each_item_in_the_remote_lane(env: FakeEnv) -> None:
    with wove.collect() as records, weave() as w:

        @w.do([10, 20], env=ENV)
        def each(item: int) -> int:
            return item

    assert sorted((r.task, r.index, r.lane) for r in records) == [
        ("each", 0, "remote"),
        ("each", 1, "remote"),
    ]


# --- cancellation, timeout, retries ----------------------------------------------------


def test_a_failing_task_cancels_the_pending_remote_call(env: FakeEnv) -> None:
    env.hang.add("slow")

    def run() -> None:
        with weave() as w:

            @w.do(env=ENV)
            def slow() -> int:
                return 1

            @w.do
            def broken() -> int:
                assert env.started.wait(10), "the remote call never started"
                raise ValueError("local failure")

    with pytest.raises(ValueError, match="local failure"):
        finishes_within(20, run)
    # The weave returned only after the remote call was told to stop.
    assert env.cancelled == ["slow"]


def test_an_async_caller_cancelled_cancels_the_remote_call(env: FakeEnv) -> None:
    env.hang.add("slow")

    async def main() -> None:
        async def weave_it() -> None:
            async with weave() as w:

                @w.do(env=ENV)
                def slow() -> int:
                    return 1

        task = asyncio.create_task(weave_it())
        await asyncio.to_thread(env.started.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    finishes_within(20, lambda: asyncio.run(main()))
    assert env.cancelled == ["slow"]


def test_a_remote_timeout_raises_task_timeout_and_cancels_the_call(env: FakeEnv) -> None:
    env.hang.add("slow")

    records: list[wove.TraceRecord] = []

    def run() -> None:  # (in another thread: collect there)
        with wove.collecting(records.append), weave() as w:

            @w.do(env=ENV, timeout=0.2)
            def slow() -> int:
                return 1

    with pytest.raises(TaskTimeout) as caught:
        finishes_within(20, run)
    assert caught.value.task == "slow"
    assert caught.value.seconds == 0.2
    assert env.cancelled == ["slow"]
    assert [(r.lane, r.status) for r in records] == [("remote", "timeout")]


def test_retries_call_the_env_again(env: FakeEnv) -> None:
    env.failures["flaky"] = 2

    with wove.collect() as records, weave() as w:

        @w.do(env=ENV, retries=2, idempotent=True)
        def flaky() -> str:
            return "finally"

    assert w.result.flaky == "finally"
    assert env.tasks_called() == ["flaky"] * 3
    assert [(r.attempt, r.status, r.lane) for r in records] == [
        (0, "error", "remote"),
        (1, "error", "remote"),
        (2, "ok", "remote"),
    ]


def test_retries_exhausted_raise_the_last_error(env: FakeEnv) -> None:
    env.failures["flaky"] = 3

    with pytest.raises(ConnectionError, match="flaky remote run"), weave() as w:

        @w.do(env=ENV, retries=2, idempotent=True)
        def flaky() -> str:
            return "never"

    assert env.tasks_called() == ["flaky"] * 3


# --- errors at the decorator and the block ---------------------------------------------


@pytest.mark.parametrize("bad", ["", 3, b"fake", True])
def test_a_bad_task_env_is_refused_at_the_decorator(bad: Any) -> None:
    with weave() as w:
        with pytest.raises(InvalidOptionError, match="env must be the name"):
            w.do(env=bad)

        @w.do
        def fine() -> int:
            return 1

    assert w.result.fine == 1


@pytest.mark.parametrize("bad", ["", 3])
def test_a_bad_weave_env_is_refused_by_weave(bad: Any) -> None:
    with pytest.raises(InvalidOptionError, match="env must be the name"):
        weave(env=bad)


def test_env_with_thread_sensitive_true_is_refused() -> None:
    with (
        weave() as w,
        pytest.raises(InvalidOptionError, match="thread_sensitive=True with env='x'"),
    ):
        w.do(env="x", thread_sensitive=True)

    # thread_sensitive=False (or None) with an env is fine
    w2 = weave()
    with w2:
        w2.do(env="x", thread_sensitive=False)
        w2.do(env="x", thread_sensitive=None)


def test_env_with_fork_is_refused() -> None:
    with pytest.raises(InvalidOptionError, match="fork= and env='x'"):
        weave(env="x", background=True, fork=True)
    with pytest.raises(InvalidOptionError, match="fork= and env='x'"):
        weave(env="x", background=True, fork="spawn")


def test_an_unknown_task_env_fails_the_block_before_any_task_runs(env: FakeEnv) -> None:
    ran: list[str] = []
    with pytest.raises(InvalidOptionError) as caught, weave() as w:

        @w.do
        def local() -> None:
            ran.append("local")

        @w.do(env=ENV)
        def known() -> None:
            ran.append("known")

        @w.do(env="nowhere")
        def unknown() -> None:
            ran.append("unknown")

    message = str(caught.value)
    assert "'nowhere'" in message
    assert f"configured: {ENV!r}" in message
    assert ran == []
    assert env.calls == []


def test_an_unknown_weave_env_fails_the_block_before_any_task_runs(env: FakeEnv) -> None:
    ran: list[str] = []
    with (
        pytest.raises(InvalidOptionError, match="no remote environment named 'elsewhere'"),
        weave(env="elsewhere") as w,
    ):

        @w.do(env=None)
        def local() -> None:
            ran.append("local")

        @w.do(env=ENV)
        def known() -> None:
            ran.append("known")

        @w.do
        def default() -> None:
            ran.append("default")

    assert ran == []
    assert env.calls == []


def test_no_configured_env_says_none() -> None:
    with pytest.raises(InvalidOptionError, match=r"\(configured: none\)"), weave() as w:

        @w.do(env="nowhere")
        def unknown() -> None:
            pass


def test_register_env_refuses_a_non_env_and_an_empty_name() -> None:
    class OnlyRun:
        async def run(self, call: RemoteCall) -> Any:
            return None

    for bad in (object(), OnlyRun(), "celery"):
        with pytest.raises(InvalidOptionError, match="expects a remote environment"):
            register_env("bad", bad)  # type: ignore[arg-type]
    for name in ("", None, 3):
        with pytest.raises(InvalidOptionError, match="non-empty string"):
            register_env(name, FakeEnv())  # type: ignore[arg-type]
    with pytest.raises(InvalidOptionError):
        get_env("bad")


def test_remove_only_removes_the_env_it_registered() -> None:
    first, second = FakeEnv(), FakeEnv()
    remove_first = register_env("swap", first)
    assert get_env("swap") is first
    remove_second = register_env("swap", second)  # replaces
    assert get_env("swap") is second
    remove_first()  # no longer the one registered: a no-op
    assert get_env("swap") is second
    remove_second()
    with pytest.raises(InvalidOptionError):
        get_env("swap")
    remove_second()  # twice is harmless


def test_registering_again_reroutes_the_next_weave() -> None:
    first, second = FakeEnv(), FakeEnv()
    remove = register_env("swap", first)
    try:
        for _ in range(2):
            with weave() as w:

                @w.do(env="swap")
                def there() -> int:
                    return 1

            remove = register_env("swap", second)
    finally:
        remove()
    assert first.tasks_called() == ["there"]
    assert second.tasks_called() == ["there"]


# --- detached remote weaves ------------------------------------------------------------


def test_a_background_weave_with_env_is_detached_to_the_env(env: FakeEnv) -> None:
    done: list[WoveResult] = []
    line = next_line()
    with weave(background=True, env=ENV, on_done=done.append, base=2) as w:

        @w.do
        def first(base: int) -> int:
            return base + 1

        @w.do(env=ENV)
        def second(first: int) -> int:
            return first * 10

        @w.do(env=None)
        def third(second: int) -> int:
            return second + 1

    assert w.remote_id == env.remote_id
    [detached] = env.detached
    assert detached.origin == origin_of(line)
    assert dict(detached.tasks) == {"first": first, "second": second, "third": third}
    assert dict(detached.data) == {"base": 2}
    assert env.calls == []  # nothing ran here
    assert done == []

    status = finishes_within(20, detached.run)  # what a worker does

    assert status == 0
    assert env.calls == []  # on the worker, every task runs locally
    [result] = done
    assert result.exception is None
    assert (result.first, result.second, result.third) == (3, 30, 31)


def test_a_detached_weave_that_fails_reports_it_and_returns_1(env: FakeEnv) -> None:
    done: list[WoveResult] = []
    with weave(background=True, env=ENV, on_done=done.append) as w:

        @w.do
        def broken() -> int:
            raise KeyError("gone")

    [detached] = env.detached
    assert finishes_within(20, detached.run) == 1
    [result] = done
    assert isinstance(result.exception, KeyError)


def test_a_detached_weave_without_on_done_runs(env: FakeEnv) -> None:
    ran: list[int] = []
    with weave(background=True, env=ENV) as w:

        @w.do
        def work() -> None:
            ran.append(1)

    assert w.remote_id == env.remote_id
    assert finishes_within(20, env.detached[0].run) == 0
    assert ran == [1]


def test_a_failing_on_done_makes_the_detached_run_return_1(env: FakeEnv) -> None:
    def on_done(result: WoveResult) -> None:
        raise RuntimeError("on_done failed")

    with weave(background=True, env=ENV, on_done=on_done) as w:

        @w.do
        def work() -> int:
            return 1

    assert finishes_within(20, env.detached[0].run) == 1


def test_a_detached_weave_cannot_be_observed_here(env: FakeEnv) -> None:
    env.remote_id = "abc-123"
    with weave(background=True, env=ENV) as w:

        @w.do
        def work() -> int:
            return 1

    assert w.remote_id == "abc-123"
    for read in (lambda: w.result, lambda: w.done, lambda: w.wait(), lambda: w.wait(0.1)):
        with pytest.raises(WeaveStateError, match="remote environment 'fake'") as caught:
            read()
        assert "abc-123" in str(caught.value)


def test_a_detached_weave_that_cannot_be_planned_raises_and_is_not_sent(
    env: FakeEnv,
) -> None:
    with pytest.raises(UnresolvedNameError, match="nothing"), weave(background=True, env=ENV) as w:

        @w.do
        def needs(nothing: int) -> int:
            return nothing

    assert env.detached == []
    assert w.remote_id is None


def test_a_detached_weave_to_an_unknown_env_raises_and_is_not_sent(env: FakeEnv) -> None:
    with (
        pytest.raises(InvalidOptionError, match="'elsewhere'"),
        weave(background=True, env="elsewhere") as w,
    ):

        @w.do
        def work() -> int:
            return 1

    assert env.detached == []
    assert w.remote_id is None


def test_a_background_weave_with_task_envs_only_runs_here_routing_its_tasks(
    env: FakeEnv,
) -> None:
    # background=True without weave(env=...): a local background weave, whose task with
    # env= still goes to the env.
    with weave(background=True) as w:

        @w.do(env=ENV)
        def there() -> int:
            return 7

    assert w.wait(20)
    assert w.remote_id is None
    assert w.result.there == 7
    assert env.tasks_called() == ["there"]
    assert env.detached == []


# --- errors and the public API ---------------------------------------------------------


def test_remote_task_error_carries_what_the_worker_saw() -> None:
    error = RemoteTaskError("fetch", "ZeroDivisionError", "division by zero", "Traceback: ...")
    assert isinstance(error, wove.WoveError)
    assert isinstance(error, RuntimeError)
    assert error.task == "fetch"
    assert error.remote_type == "ZeroDivisionError"
    assert error.remote_message == "division by zero"
    assert error.remote_traceback == "Traceback: ..."
    assert str(error) == "task 'fetch' failed remotely: ZeroDivisionError: division by zero"
    assert RemoteTaskError("t", "E", "m", None).remote_traceback is None


def test_the_public_api_exports_the_environment_names() -> None:
    for name in ("register_env", "RemoteEnv", "RemoteCall", "DetachedWeave", "RemoteTaskError"):
        assert name in wove.__all__
    assert wove.register_env is register_env
    assert wove.RemoteCall is RemoteCall
    assert wove.DetachedWeave is DetachedWeave
    assert isinstance(FakeEnv(), wove.RemoteEnv)
    assert not isinstance(object(), wove.RemoteEnv)


def test_a_thread_sensitive_task_is_not_sent_by_the_weave_env(env: FakeEnv) -> None:
    with (
        pytest.raises(InvalidOptionError, match="give it env=None to keep it here"),
        weave(env=ENV) as w,
    ):

        @w.do(thread_sensitive=True)
        def on_my_thread() -> str:
            return threading.current_thread().name

    assert env.calls == []
    with weave(env=ENV) as w:

        @w.do(thread_sensitive=True, env=None)
        def kept_here() -> str:
            return threading.current_thread().name

    assert w.result.kept_here == threading.current_thread().name
    assert env.calls == []


class Unlucky:
    """An env whose calls end with ``error`` ``times`` times, then run."""

    def __init__(self, error: Exception, times: int) -> None:
        self.error = error
        self.times = times
        self.calls = 0

    async def run(self, call: RemoteCall) -> Any:
        self.calls += 1
        if self.calls <= self.times:
            raise self.error
        return call.function(**call.kwargs)

    def detach(self, weave: DetachedWeave) -> str:
        raise AssertionError("not used")


def _run_with_retries(error: Exception, **options: Any) -> tuple[Unlucky, Any]:
    """A task with retries=2 on an env failing twice: (the env, the value or error)."""
    unlucky = Unlucky(error, times=2)
    remove = register_env("unlucky", unlucky)
    try:
        with weave() as w:

            @w.do(env="unlucky", retries=2, **options)
            def work() -> str:
                return "done"

        return unlucky, w.result.work
    except Exception as raised:
        return unlucky, raised
    finally:
        remove()


LOST = wove.RemoteWorkerLost("work", "WorkerLost", "the worker was lost", None)
RESULT_LOST = wove.RemoteResultLost("work", "ResultLost", "the reply was lost", None)
NEVER_RAN = wove.RemoteNeverRan("work", "EnvelopeError", "refused", None)


@pytest.mark.parametrize("error", [LOST, RESULT_LOST], ids=["worker-lost", "result-lost"])
def test_retries_do_not_resend_a_call_that_may_have_run(error: Exception) -> None:
    unlucky, outcome = _run_with_retries(error)
    assert outcome is error
    assert unlucky.calls == 1


@pytest.mark.parametrize("error", [LOST, RESULT_LOST], ids=["worker-lost", "result-lost"])
def test_retries_resend_a_call_that_may_have_run_when_the_task_is_idempotent(
    error: Exception,
) -> None:
    unlucky, outcome = _run_with_retries(error, idempotent=True)
    assert outcome == "done"
    assert unlucky.calls == 3


def test_retries_resend_a_call_that_never_ran() -> None:
    unlucky, outcome = _run_with_retries(NEVER_RAN)
    assert outcome == "done"
    assert unlucky.calls == 3


def test_retries_do_not_resend_a_remote_call_whose_function_raised() -> None:
    # It ran: resending could run non-idempotent work twice (a local task is retried).
    own = ValueError("the function's own")
    unlucky, outcome = _run_with_retries(own)
    assert outcome is own
    assert unlucky.calls == 1
    unlucky, outcome = _run_with_retries(ValueError("again"), idempotent=True)
    assert outcome == "done"
    assert unlucky.calls == 3


def test_a_worker_lost_before_the_call_started_is_resent() -> None:
    early = wove.RemoteWorkerLost("work", "WorkerLost", "lost", None, may_have_started=False)
    unlucky, outcome = _run_with_retries(early)
    assert outcome == "done"
    assert unlucky.calls == 3


def test_idempotent_must_be_a_bool() -> None:
    with (
        pytest.raises(InvalidOptionError, match="idempotent must be True or False"),
        weave() as w,
    ):

        @w.do(idempotent="yes")  # type: ignore[arg-type]
        def work() -> None:
            pass
