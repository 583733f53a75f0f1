"""w.result: access, order, final, timings, exception and cancelled tasks."""

import asyncio

import pytest

import wove
from wove import weave


def run_three():
    with weave(user_id=7) as w:

        @w.do
        def total(a, b):  # defined first, runs last
            return a + b

        @w.do
        def a(user_id):
            return user_id * 10

        @w.do
        def b():
            return 1

    return w.result


def test_attribute_and_item_access():
    result = run_three()
    assert (result.a, result["a"]) == (70, 70)
    assert (result.total, result["total"]) == (71, 71)


def test_keyword_values_are_readable():
    result = run_three()
    assert result.user_id == 7
    assert result["user_id"] == 7


def test_iteration_and_unpacking_follow_definition_order():
    result = run_three()
    assert list(result) == [71, 70, 1]
    total, a, b = result
    assert (total, a, b) == (71, 70, 1)


def test_final_is_the_last_defined_task_not_the_last_to_run():
    assert run_three().final == 1


def test_final_is_none_without_tasks():
    with weave(user_id=1) as w:
        pass
    assert w.result.final is None
    assert list(w.result) == []
    assert w.result.exception is None


def test_timings_has_one_entry_per_task():
    result = run_three()
    assert set(result.timings) == {"total", "a", "b"}
    assert all(isinstance(seconds, float) for seconds in result.timings.values())
    assert all(0 <= seconds < 5 for seconds in result.timings.values())


def test_timings_measure_the_time_a_task_ran():
    async def main():
        async with weave() as w:

            @w.do
            async def slow():
                await asyncio.sleep(0.1)

            @w.do
            def quick():
                return 1

        return w.result.timings

    timings = asyncio.run(main())
    assert 0.09 <= timings["slow"] < 5
    assert timings["quick"] < timings["slow"]


def test_exception_is_none_and_nothing_cancelled_on_success():
    result = run_three()
    assert result.exception is None
    assert set(result.cancelled) == set()


class Boom(Exception):
    pass


def failed_run():
    """`boom` fails at once; `slow` is running and gets cancelled; `after` never starts."""
    error = Boom("boom")

    async def main():
        w = weave()
        try:
            async with w:

                @w.do
                def done():
                    return "done"

                @w.do
                async def slow():
                    await asyncio.Event().wait()  # ends only by being cancelled
                    return "slow"

                @w.do
                async def boom(done):
                    raise error

                @w.do
                def after(boom):
                    return "after"

        except Boom as caught:
            return w.result, caught
        raise AssertionError("the weave did not raise")

    result, caught = asyncio.run(main())
    assert caught is error  # re-raised unchanged from the block
    return result, error


def test_exception_is_the_first_error_raised():
    result, error = failed_run()
    assert result.exception is error


def test_finished_results_stay_readable():
    result, _ = failed_run()
    assert result.done == "done"


def test_reading_a_failed_task_raises_its_exception():
    result, error = failed_run()
    with pytest.raises(Boom) as info:
        _ = result.boom
    assert info.value is error
    with pytest.raises(Boom):
        _ = result["boom"]


def test_reading_a_cancelled_task_raises_task_cancelled():
    result, error = failed_run()
    assert set(result.cancelled) == {"slow", "after"}
    for name in ("slow", "after"):
        with pytest.raises(wove.TaskCancelled) as info:
            _ = result[name]
        assert info.value.task == name
        assert info.value.cause is error
        assert isinstance(info.value, RuntimeError)
    with pytest.raises(wove.TaskCancelled):
        _ = result.after


def test_iterating_a_failed_result_raises_at_the_failed_task():
    result, _ = failed_run()
    values = iter(result)
    assert next(values) == "done"
    with pytest.raises(wove.TaskCancelled):
        next(values)


def test_unknown_name():
    result = run_three()
    with pytest.raises(AttributeError, match="nope"):
        _ = result.nope
    with pytest.raises(KeyError, match="nope"):
        _ = result["nope"]
    assert not hasattr(result, "nope")
