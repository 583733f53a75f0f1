"""``wove.config(...)``: process-wide defaults of task and weave options, as in the
published package; ``max_pending=`` and ``error_mode=`` on ``weave()``."""

import asyncio
import dataclasses
import sys
import threading

import pytest

import wove
from wove import Weave, weave


@pytest.fixture(autouse=True)
def restore_defaults():
    before = wove.defaults()
    yield
    wove.config(**dataclasses.asdict(before))


# --- wove.config ------------------------------------------------------------------------


def test_config_is_the_function_and_returns_the_defaults():
    assert callable(wove.config)
    settled = wove.config(retries=2, timeout=10)
    assert isinstance(settled, wove.Defaults)
    assert (settled.retries, settled.timeout) == (2, 10)
    assert wove.defaults() == settled
    assert wove.config().retries == 2  # not passed: kept


def test_default_retries_apply_to_a_task_that_does_not_say():
    wove.config(retries=2)
    attempts = []
    with weave() as w:

        @w.do
        def flaky():
            attempts.append(1)
            if len(attempts) < 3:
                raise ConnectionError("try again")
            return "ok"

    assert w.result.flaky == "ok"
    assert len(attempts) == 3


def test_a_task_s_own_option_wins_over_the_default():
    wove.config(retries=5)
    attempts = []
    with pytest.raises(ConnectionError), weave() as w:

        @w.do(retries=0)
        def once():
            attempts.append(1)
            raise ConnectionError("no")

    assert len(attempts) == 1


def test_a_weave_class_task_s_own_option_wins_too():
    wove.config(retries=5)
    attempts = []

    class Once(Weave):
        @Weave.do(retries=1)
        def call(self):
            attempts.append(1)
            raise ConnectionError("no")

    with pytest.raises(ConnectionError), weave(Once):
        pass
    assert len(attempts) == 2


@pytest.mark.timeout(20)
def test_default_timeout_applies():
    wove.config(timeout=0.05)
    release = threading.Event()
    with pytest.raises(wove.TaskTimeout) as info, weave() as w:

        @w.do
        def slow():
            release.wait(5)

    release.set()
    assert info.value.seconds == 0.05
    assert w.result.exception is info.value


def test_default_workers_bound_a_mapped_task_and_leave_an_unmapped_one_alone():
    wove.config(workers=2)
    lock = threading.Lock()
    running, peak = [0], [0]
    arrived = threading.Barrier(2, timeout=5)

    def track():
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])

    with weave() as w:

        @w.do(range(6))
        def each(item):
            track()
            try:
                arrived.wait()  # two at a time meet here; a third would never be needed
            except threading.BrokenBarrierError:
                pass
            with lock:
                running[0] -= 1
            return item

        @w.do
        def single():  # `workers` only applies to mapped tasks: no error here
            return 1

    assert w.result.each == list(range(6))
    assert peak[0] == 2
    assert w.execution_plan["tasks"]["each"]["workers"] == 2
    assert w.execution_plan["tasks"]["single"]["workers"] is None


def test_default_limit_per_minute_applies_to_mapped_tasks():
    wove.config(limit_per_minute=6000)
    with weave() as w:

        @w.do([1, 2, 3])
        def each(item):
            return item

    assert w.execution_plan["tasks"]["each"]["limit_per_minute"] == 6000
    assert w.result.each == [1, 2, 3]


def test_default_max_workers_and_the_weave_s_own_value_wins():
    wove.config(max_workers=1)
    lock = threading.Lock()
    running, peak = [0], [0]

    def body():
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        threading.Event().wait(0.01)
        with lock:
            running[0] -= 1

    with weave() as w:

        @w.do(range(4))
        def each(item):
            body()

    assert peak[0] == 1
    peak[0] = 0
    both = threading.Barrier(2, timeout=5)
    with weave(max_workers=2) as w:

        @w.do(range(2))
        def pair(item):
            both.wait()  # needs two at once: only possible if the weave's 2 wins
            return item

    assert w.result.pair == [0, 1]


def test_none_removes_a_default():
    wove.config(timeout=5, max_pending=3)
    settled = wove.config(timeout=None, max_pending=None)
    assert settled.timeout is None
    assert settled.max_pending is None


def test_none_removes_the_retries_and_error_mode_defaults_too():
    wove.config(retries=3, error_mode="return")
    settled = wove.config(retries=None, error_mode=None)
    assert (settled.retries, settled.error_mode) == (0, "raise")
    assert settled == wove.Defaults()
    with pytest.raises(ZeroDivisionError), weave() as w:  # "raise" is in force again

        @w.do
        def fails():
            return 1 / 0


@pytest.mark.timeout(60)
def test_threads_configuring_different_keys_at_once_keep_every_update():
    # Regression test: config() once built the new defaults outside its lock, so one
    # thread's update could overwrite another's. A race, so it need not fail on every
    # run of the old code; a tiny switch interval and many rounds make it likely.
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for round_ in range(150):
            wove.config(**dataclasses.asdict(wove.Defaults()))
            updates = {
                "retries": 1 + round_ % 3,
                "timeout": 10.0 + round_,
                "workers": 2,
                "limit_per_minute": 60.0,
                "max_workers": 3,
                "max_pending": 100 + round_,
                "error_mode": "return",
            }
            start = threading.Barrier(len(updates))

            def set_one(key, value, start=start):
                start.wait()
                wove.config(**{key: value})

            threads = [threading.Thread(target=set_one, args=item) for item in updates.items()]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert dataclasses.asdict(wove.defaults()) == updates, round_
    finally:
        sys.setswitchinterval(previous)


def test_unknown_option_is_a_clear_error_with_a_suggestion():
    with pytest.raises(wove.InvalidOptionError, match="did you mean 'retries'") as info:
        wove.config(retires=2)
    assert isinstance(info.value, ValueError)
    assert "'retires'" in str(info.value)
    assert wove.defaults().retries == 0  # nothing changed


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("retries", -1),
        ("timeout", 0),
        ("workers", 0),
        ("limit_per_minute", -5),
        ("max_workers", 0),
        ("max_pending", "3"),
        ("error_mode", "ignore"),
    ],
)
def test_bad_default_values_are_refused_and_change_nothing(option, value):
    before = wove.defaults()
    with pytest.raises(wove.InvalidOptionError, match=option):
        wove.config(**{option: value})
    assert wove.defaults() == before


def test_config_passes_runtime_settings_to_configure():
    before = wove.settings().stuck_after
    try:
        wove.config(stuck_after=7.5, retries=1)
        assert wove.settings().stuck_after == 7.5
        assert wove.defaults().retries == 1
    finally:
        wove.configure(stuck_after=before)


# --- max_pending ------------------------------------------------------------------------


def test_max_pending_fails_a_mapped_task_with_too_many_items_before_any_starts():
    started = []
    with (
        pytest.raises(RuntimeError, match="exceeds max_pending=2") as info,
        weave(max_pending=2) as w,
    ):

        @w.do([1, 2, 3])
        def too_many(item):
            started.append(item)

    assert isinstance(info.value, wove.MaxPendingError)
    assert started == []
    assert "too_many" in str(info.value)


def test_max_pending_counts_items_of_a_source_computed_at_run_time():
    started = []
    with (
        pytest.raises(wove.MaxPendingError, match="exceeds max_pending=3"),
        weave(max_pending=3) as w,
    ):

        @w.do
        def numbers():
            return list(range(10))

        @w.do("numbers")
        def each(item):
            started.append(item)

    assert started == []


def test_max_pending_allows_up_to_the_limit_and_comes_from_the_defaults():
    wove.config(max_pending=3)
    with weave() as w:

        @w.do([1, 2, 3])
        def fits(item):
            return item

    assert w.result.fits == [1, 2, 3]
    with pytest.raises(wove.MaxPendingError, match="exceeds max_pending=3"), weave() as w:

        @w.do(range(4))
        def over(item):
            return item

    with weave(max_pending=10) as w:  # the weave's own value wins

        @w.do(range(4))
        def under(item):
            return item

    assert w.result.under == [0, 1, 2, 3]


@pytest.mark.parametrize("value", [0, -1, 2.5, "3"])
def test_bad_max_pending(value):
    with pytest.raises(wove.InvalidOptionError, match="max_pending"):
        weave(max_pending=value)


@pytest.mark.parametrize("name", ["max_workers", "max_pending"])
@pytest.mark.parametrize("value", [0, True, 2.5])
def test_weave_and_config_refuse_a_bad_limit_with_the_same_message(name, value):
    with pytest.raises(wove.InvalidOptionError) as from_weave:
        weave(**{name: value})
    with pytest.raises(wove.InvalidOptionError) as from_config:
        wove.config(**{name: value})
    for where, caught in (("weave()", from_weave), ("wove.config()", from_config)):
        message = str(caught.value)
        assert message.startswith(f"{where} got {name}={value!r}; {name} must be an int >= 1 (")
        assert message.endswith(f": pass e.g. {name}=8, or leave it out")
    assert str(from_weave.value).split("; ", 1)[1] == str(from_config.value).split("; ", 1)[1]


# --- error_mode -------------------------------------------------------------------------


def test_error_mode_return_does_not_raise_and_reading_the_failed_task_gives_its_exception():
    with weave(error_mode="return") as w:

        @w.do
        def profile():
            return {"name": "Ada"}

        @w.do
        def fails():
            raise ValueError("bad")

    value = w.result.fails
    assert isinstance(value, ValueError)
    assert str(value) == "bad"
    assert w.result.exception is value
    assert w.result["fails"] is value


def test_error_mode_return_dependents_of_a_failed_task_do_not_run():
    ran = []
    with weave(error_mode="return") as w:

        @w.do
        def fails():
            raise ValueError("bad")

        @w.do
        def after(fails):
            ran.append(fails)

    assert ran == []
    assert "after" in w.result.cancelled
    with pytest.raises(wove.TaskCancelled):
        _ = w.result.after


def test_error_mode_return_keeps_the_first_failure():
    first_failed = threading.Event()
    with weave(error_mode="return") as w:

        @w.do
        def first():
            first_failed.set()
            raise KeyError("first")

        @w.do
        def second():
            first_failed.wait(5)
            raise OSError("second")

    assert isinstance(w.result.exception, KeyError)
    assert w.result.first is w.result.exception


def test_error_mode_return_from_the_defaults_and_the_weave_s_own_value_wins():
    wove.config(error_mode="return")
    with weave() as w:

        @w.do
        def fails():
            raise ValueError("bad")

    assert isinstance(w.result.fails, ValueError)
    with pytest.raises(ValueError, match="bad"), weave(error_mode="raise") as w:

        @w.do
        def fails_again():
            raise ValueError("bad")


def test_error_mode_return_in_an_async_block():
    async def main():
        async with weave(error_mode="return") as w:

            @w.do
            async def fails():
                raise ValueError("bad")

        return w

    w = asyncio.run(main())
    assert isinstance(w.result.fails, ValueError)


def test_error_mode_return_still_raises_a_weave_that_cannot_run():
    with pytest.raises(wove.CircularDependencyError), weave(error_mode="return") as w:

        @w.do
        def a(b):
            return 1

        @w.do
        def b(a):
            return 1


@pytest.mark.parametrize("value", ["ignore", "RAISE", True, 1])
def test_bad_error_mode_names_the_option_and_the_allowed_values(value):
    with pytest.raises(ValueError, match="error_mode") as info:
        weave(error_mode=value)
    assert isinstance(info.value, wove.InvalidOptionError)
    assert "'raise'" in str(info.value)
    assert "'return'" in str(info.value)


# --- defaults and merge() ---------------------------------------------------------------


@pytest.mark.timeout(30)
def test_default_retries_apply_to_merged_calls_in_async_and_sync_tasks():
    wove.config(retries=1)
    attempts = []

    def flaky(tag):
        attempts.append(tag)
        if attempts.count(tag) == 1:
            raise ConnectionError("once")
        return tag

    with weave() as w:

        @w.do
        async def in_async():
            return await wove.merge(flaky, ["a"])

        @w.do
        def in_sync():
            return wove.merge(flaky, ["s"])

    assert (w.result.in_async, w.result.in_sync) == (["a"], ["s"])
    assert sorted(attempts) == ["a", "a", "s", "s"]


@pytest.mark.timeout(30)
def test_merge_raises_even_when_the_default_error_mode_is_return():
    wove.config(error_mode="return")
    with weave() as w:

        @w.do
        def caught():
            try:
                wove.merge(lambda: 1 / 0)
            except ZeroDivisionError:
                return "raised"
            return "swallowed"

    assert w.result.caught == "raised"


@pytest.mark.timeout(30)
def test_default_max_pending_bounds_the_items_of_one_merge():
    wove.config(max_pending=2)
    with pytest.raises(wove.MaxPendingError, match="exceeds max_pending=2"), weave() as w:

        @w.do
        async def merged():
            return await wove.merge(lambda n: n, [1, 2, 3])


def test_config_accepts_every_runtime_setting_of_configure() -> None:
    # A setting added to configure() must be accepted by config() too, which passes it on.
    import inspect

    before = wove.settings()
    for name in inspect.signature(wove.configure).parameters:
        wove.config(**{name: getattr(before, name)})
    assert wove.settings() == before
