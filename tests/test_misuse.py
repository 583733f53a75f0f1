"""Misuse is refused with a clear error before any task runs; and a few shapes that look
like misuse but have a documented meaning."""

from __future__ import annotations

import asyncio
import functools
import gc
import inspect
import os
import subprocess
import sys
import warnings

import pytest

import wove
from wove import weave

# --- registrations that must be refused --------------------------------------------------


def _generator(w, ran):
    @w.do
    def numbers():
        ran.append("numbers")
        yield 1


def _async_generator(w, ran):
    @w.do
    async def numbers():
        ran.append("numbers")
        yield 1


def _two_partials(w, ran):
    def price(sku):
        ran.append("price")
        return sku

    def stock(sku):
        ran.append("stock")
        return sku

    # Both would be named "partial": the second would silently replace the first.
    w.do(functools.partial(price, 1))
    w.do(functools.partial(stock, 2))


def _lambda(w, ran):
    w.do(lambda: ran.append("lambda"))


class _DashedName:
    __name__ = "my-task"

    def __init__(self, ran):
        self.ran = ran

    def __call__(self):
        self.ran.append("my-task")


def _dashed_name(w, ran):
    w.do(_DashedName(ran))


def _nothing_more(w, ran):
    pass


def _huge_timeout(w, ran):
    # async: on an engine that accepts it, a sync task would hand the value to the
    # process-wide timer thread and kill it for the rest of the session.
    @w.do(timeout=1e300)
    async def capped():
        ran.append("capped")


def _tiny_rate(w, ran):
    @w.do([1], limit_per_minute=1e-300)
    def paced(x):
        ran.append("paced")


def _nan_timeout(w, ran):
    @w.do(timeout=float("nan"))
    def capped():
        ran.append("capped")


def _negative_timeout(w, ran):
    @w.do(timeout=-1)
    def capped():
        ran.append("capped")


DEFINITION = (wove.DefinitionError, TypeError)
OPTION = (wove.InvalidOptionError, ValueError)

# where: "weave()" (the call itself), "decoration" (the @w.do line) or "by block end".
MISUSE = [
    pytest.param({}, _generator, *DEFINITION, "generator", "by block end", id="generator"),
    pytest.param(
        {}, _async_generator, *DEFINITION, "generator", "by block end", id="async-generator"
    ),
    pytest.param({}, _two_partials, *DEFINITION, "partial", "by block end", id="two-partials"),
    pytest.param({}, _lambda, *DEFINITION, "identifier", "by block end", id="lambda"),
    pytest.param(
        {}, _dashed_name, *DEFINITION, "identifier", "by block end", id="name-not-identifier"
    ),
    pytest.param({"debug": "yes"}, _nothing_more, *OPTION, "debug", "weave()", id="debug-str"),
    pytest.param(
        {"background": 1}, _nothing_more, *OPTION, "background", "weave()", id="background-int"
    ),
    pytest.param({}, _huge_timeout, *OPTION, "timeout", "decoration", id="timeout-1e300"),
    pytest.param(
        {}, _tiny_rate, *OPTION, "limit_per_minute", "decoration", id="limit-per-minute-1e-300"
    ),
    pytest.param({}, _nan_timeout, *OPTION, "timeout", "decoration", id="timeout-nan"),
    pytest.param({}, _negative_timeout, *OPTION, "timeout", "decoration", id="timeout-negative"),
]


@pytest.mark.timeout(20)
@pytest.mark.parametrize(("options", "register", "error", "builtin", "phrase", "where"), MISUSE)
def test_misuse_is_refused_before_any_task_runs(options, register, error, builtin, phrase, where):
    ran: list[str] = []
    stage = "weave()"
    try:
        with pytest.raises(error) as info, weave(**options) as w:
            stage = "decoration"

            @w.do
            def canary():
                ran.append("canary")

            register(w, ran)
            stage = "block end"
    finally:
        # An engine that accepts background=1 runs the weave in a thread: let it end here.
        wove.wait_for_background(5)
    assert isinstance(info.value, wove.WoveError)
    assert isinstance(info.value, builtin)
    assert phrase in str(info.value).lower()
    assert ran == [], f"tasks ran before the error: {ran}"
    if where == "by block end":
        assert stage in ("decoration", "block end")
    else:
        assert stage == where, f"raised at {stage}, expected at {where}"


# --- documented behaviour that looks like misuse --------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(40)
def test_infinite_timeout_means_no_timeout():
    # A fresh interpreter: on an engine that mishandles it, the timer thread dies.
    code = """
import asyncio, time
import wove
from wove import weave
with weave() as w:
    @w.do(timeout=float("inf"))
    def sync_value():
        time.sleep(0.05)
        return 1
    @w.do(timeout=float("inf"))
    async def async_value():
        await asyncio.sleep(0.05)
        return 2
print(w.result.sync_value, w.result.async_value)
try:
    with weave() as w:
        @w.do(timeout=0.1)
        def slow():
            time.sleep(2)
except wove.TaskTimeout:
    print("timeouts still fire")
"""
    root = os.path.dirname(os.path.dirname(wove.__file__))
    proc = subprocess.run(
        [sys.executable, "-P", "-c", code],  # -P: not the checkout in the working dir
        capture_output=True,
        text=True,
        timeout=20,
        env={**os.environ, "PYTHONPATH": root},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["1 2", "timeouts still fire"], (
        f"stdout: {proc.stdout!r}\nstderr:\n{proc.stderr}"
    )


def _awaiting(function):
    """A decorator whose wrapper is a plain `def` returning the coroutine."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        return function(*args, **kwargs)

    return wrapper


@pytest.mark.timeout(10)
def test_sync_wrapper_around_async_def_runs_as_async_task():
    with weave(base=5) as w:

        @w.do
        @_awaiting
        async def total(base):
            await asyncio.sleep(0)
            return base + 2

    value = w.result.total
    if inspect.iscoroutine(value):
        value.close()  # keep the "never awaited" warning out of later tests
    assert value == 7


async def _answer():
    return 42


class _ReturnsCoroutine:
    def __call__(self):
        return _answer()


@pytest.mark.timeout(10)
@pytest.mark.parametrize("caller", ["with", "with inside a running loop"])
def test_a_coroutine_returned_by_a_sync_task_is_awaited(caller):
    # Documented behaviour (docs/errors.md): awaited on one of Wove's loop threads, so it
    # works even where the task's thread already runs a loop, and never warns.
    def run():
        with weave() as w:
            w.do(_ReturnsCoroutine())
        return w.result.final

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if caller == "with":
            value = run()
        else:

            async def main():
                return run()

            value = asyncio.run(main())
        gc.collect()
    assert value == 42
    never_awaited = [str(c.message) for c in caught if "never awaited" in str(c.message)]
    assert never_awaited == []


@pytest.mark.timeout(10)
@pytest.mark.parametrize("caller", ["with", "async with"])
def test_cancelled_error_raised_by_a_task_is_its_failure(caller):
    error = asyncio.CancelledError()

    def register(w):
        @w.do
        async def refusing():
            raise error

    blocks = []
    with pytest.raises(asyncio.CancelledError) as info:
        if caller == "with":
            with weave() as w:
                blocks.append(w)
                register(w)
        else:

            async def main():
                async with weave() as w:
                    blocks.append(w)
                    register(w)

            asyncio.run(main())
    assert info.value is error
    result = blocks[0].result
    assert result.exception is error
    assert "refusing" not in result.cancelled
