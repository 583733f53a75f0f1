"""Graph -> the execution plan: ``w.execution_plan`` and the ``debug=True`` report.

Read-only views of a graph. Nothing here changes what runs.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

from .graph import DATA, Graph
from .task_spec import TaskSpec

logger = logging.getLogger("wove")

#: The first line of the ``debug=True`` report, as the published wove prints it.
HEADING = "--- Wove Debug Report ---"


def execution_plan(graph: Graph) -> dict[str, Any]:
    """A fresh dict describing the graph (mutating it cannot affect the weave)."""
    tasks = graph.tasks  # built on each access: read it once
    # `data` is listed as the published wove lists it: a source that depends on nothing,
    # feeding the tasks that take a `data` parameter.
    return {
        "dependencies": {DATA: set(), **{n: set(p.dependencies) for n, p in tasks.items()}},
        "dependents": {
            DATA: {n for n, p in tasks.items() if DATA in p.inputs},
            **{n: set(p.dependents) for n, p in tasks.items()},
        },
        "tiers": [list(tier) for tier in graph.tiers],
        "sorted_tasks": list(graph.order),
        "tasks": {
            name: {
                "kind": "async" if plan.spec.is_async else "sync",
                "mapped_over": _source(plan.spec),
                "inputs": list(plan.inputs),
                "retries": plan.spec.retries,
                "timeout": plan.spec.timeout,
                "workers": plan.spec.workers,
                "limit_per_minute": plan.spec.limit_per_minute,
            }
            for name, plan in tasks.items()
        },
    }


def _source(spec: TaskSpec) -> str | None:
    source = spec.map_source
    return None if source is None else source.describe()


def describe(graph: Graph, data: Mapping[str, Any], origin: str) -> str:
    """The plan as text a person can read top to bottom."""
    tasks = graph.tasks
    lines = [HEADING, f"Execution Plan: the weave at {origin}"]
    if data:
        lines.append(f"  keywords: {', '.join(data)}")
    for level, tier in enumerate(graph.tiers):
        lines.append(f"  tier {level}:")
        for name in tier:
            plan = tasks[name]
            spec = plan.spec
            kind = "async" if spec.is_async else "sync"
            source = spec.map_source
            if source is not None:
                count = _count(source.iterable if source.name is None else data.get(source.name))
                kind += f", mapped over {source.describe()}" + (
                    f" ({count} items)" if count is not None else ""
                )
            options = [
                f"{key}={value}"
                for key, value in (
                    ("retries", spec.retries or None),
                    ("timeout", spec.timeout),
                    ("workers", spec.workers),
                    ("limit_per_minute", spec.limit_per_minute),
                )
                if value is not None
            ]
            if options:
                kind += ", " + ", ".join(options)
            needs = ", ".join(sorted(plan.dependencies)) or "nothing"
            feeds = ", ".join(plan.dependents) or "nothing"
            lines.append(f"    {name} [{kind}] needs: {needs}; feeds: {feeds}")
    lines.append(f"  order: {' -> '.join(graph.order) or 'no tasks'}")
    return "\n".join(lines) + "\n"


def _count(value: object) -> int | None:
    try:
        return len(value)  # type: ignore[arg-type]
    except TypeError:
        return None


def report(text: str) -> None:
    """To stdout, where a user of the published wove looks for it, and to the `wove`
    logger at level INFO (for logs, when logging is set up for it)."""
    sys.stdout.write(text)
    sys.stdout.flush()
    if logger.isEnabledFor(logging.INFO):
        logger.info("%s", text.rstrip("\n"))
