"""Workloads 3 and 4: a 100-task dependent chain, each task naming the previous one.

The weave side is written as a user would write it, tasks defined inside the block; a
code generator produces that source once (outside timing), since 100 distinct task names
and parameters cannot be written by a loop.

Async: against the same 100 awaits in sequence in one ``asyncio.run``. Sync: against
the same 100 calls, each submitted to a warm ``ThreadPoolExecutor`` and awaited.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import wove

from .harness import Row, Workload, check, compare

LENGTH = 100


def chain_source(*, is_async: bool) -> str:
    """``[async] def chain_weave():`` running a weave of ``LENGTH`` chained tasks."""
    prefix = "async " if is_async else ""
    lines = [
        f"{prefix}def chain_weave():",
        f"    {prefix}with weave() as w:",
        "",
        "        @w.do",
        f"        {prefix}def t0():",
        "            return 1",
    ]
    for n in range(1, LENGTH):
        lines += [
            "",
            "        @w.do",
            f"        {prefix}def t{n}(t{n - 1}):",
            f"            return t{n - 1} + 1",
        ]
    lines += ["", "    return w.result.final", ""]
    return "\n".join(lines)


def compile_chain(*, is_async: bool) -> Callable[[], Any]:
    namespace: dict[str, Any] = {"weave": wove.weave}
    code = compile(chain_source(is_async=is_async), f"<bench chain, async={is_async}>", "exec")
    exec(code, namespace)
    return cast(Callable[[], Any], namespace["chain_weave"])


async def _step_async(value: int) -> int:
    return value + 1


def _step_sync(value: int) -> int:
    return value + 1


async def _awaits_in_sequence() -> int:
    value = 0
    for _ in range(LENGTH):
        value = await _step_async(value)
    return value


def _measure_async(runs: int) -> list[Row]:
    chain_weave = compile_chain(is_async=True)
    expected = LENGTH
    check([asyncio.run(chain_weave()), asyncio.run(_awaits_in_sequence())], expected, "chain-async")
    return [
        compare(
            "chain-async",
            wove=lambda: asyncio.run(chain_weave()),
            baseline=lambda: asyncio.run(_awaits_in_sequence()),
            target=2.0,
            runs=runs,
            inner=100,
        )
    ]


def _measure_sync(runs: int) -> list[Row]:
    chain_weave = compile_chain(is_async=False)
    expected = LENGTH
    with ThreadPoolExecutor() as pool:

        def submitted_in_sequence() -> int:
            value = 0
            for _ in range(LENGTH):
                value = pool.submit(_step_sync, value).result()
            return value

        check([chain_weave(), submitted_in_sequence()], expected, "chain-sync")
        return [
            compare(
                "chain-sync",
                wove=chain_weave,
                baseline=submitted_in_sequence,
                target=1.2,
                runs=runs,
                inner=100,
            )
        ]


WORKLOADS = [
    Workload(
        "chain-async",
        "100-task dependent async chain / 100 sequential awaits in one asyncio.run",
        _measure_async,
    ),
    Workload(
        "chain-sync",
        "100-task dependent sync chain / 100 pool.submit(f, x).result() in sequence",
        _measure_sync,
    ),
]
