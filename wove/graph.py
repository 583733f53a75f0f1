"""Task specs + the weave's keywords -> :class:`Graph`.

Pure: nothing runs here. Every mistake a user can make in the shape of a weave (a name
that resolves to nothing, a cycle, a mapped function without exactly one item parameter,
a non-iterable map source known ahead of time) is refused here, before any task starts.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from .errors import (
    CircularDependencyError,
    DefinitionError,
    MappingError,
    ReservedNameError,
    UnresolvedNameError,
)
from .result import RESERVED_NAMES
from .task_spec import TaskSpec

#: The parameter name that receives the dict of all the weave's keywords.
DATA = "data"


@dataclass(frozen=True, slots=True)
class TaskPlan:
    """One task placed in its graph."""

    spec: TaskSpec
    position: int  # definition order
    inputs: tuple[str, ...]  # parameters injected by name (tasks, keywords, `data`)
    item_param: str | None  # the parameter receiving each item of a mapped task
    dependencies: frozenset[str]  # tasks that must finish first
    dependents: tuple[str, ...]  # tasks waiting for this one, in definition order

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True, slots=True)
class Graph:
    tasks: Mapping[str, TaskPlan]  # in definition order
    order: tuple[str, ...]  # a topological order
    tiers: tuple[tuple[str, ...], ...]  # dependency levels, for reading only
    roots: tuple[str, ...]  # tasks with no task dependencies, in definition order
    data_names: frozenset[str]

    @property
    def final(self) -> str | None:
        """The task whose value is ``result.final``: the last one defined."""
        return next(reversed(tuple(self.tasks)), None)

    @property
    def has_async(self) -> bool:
        return any(plan.spec.is_async for plan in self.tasks.values())


def check_data_names(names: Iterable[str]) -> None:
    """Refuse weave keywords that would shadow Wove's own names."""
    for name in names:
        if name == DATA:
            raise ReservedNameError(
                "the keyword 'data' is reserved: tasks receive the dict of all keywords "
                "through a parameter named `data`; pass your value under another name"
            )
        if name in RESERVED_NAMES:
            raise ReservedNameError(
                f"the keyword {name!r} conflicts with a built-in attribute of the weave "
                f"result (w.result.{name}); pass it under another name"
            )


def build_graph(specs: Mapping[str, TaskSpec], data: Mapping[str, object]) -> Graph:
    """Resolve every name, place every task, and refuse what cannot run."""
    data_names = frozenset(data)
    for name in specs:
        if name == DATA or name in RESERVED_NAMES:
            raise ReservedNameError(
                f"task name {name!r} conflicts with a built-in attribute of the weave result "
                f"(w.result.{name}) or the `data` parameter; rename the function"
            )
        if name in data_names:
            raise ReservedNameError(
                f"task {name!r} has the same name as a keyword passed to weave(); "
                f"rename the task or the keyword"
            )
    placed: dict[str, tuple[tuple[str, ...], str | None, frozenset[str]]] = {}
    for spec in specs.values():
        placed[spec.name] = _resolve(spec, specs, data)
    dependents: dict[str, list[str]] = {name: [] for name in specs}
    for name, (_, _, deps) in placed.items():
        for dep in deps:
            dependents[dep].append(name)
    order, tiers = _topological(specs, {n: p[2] for n, p in placed.items()}, dependents)
    tasks = {
        spec.name: TaskPlan(
            spec=spec,
            position=position,
            inputs=placed[spec.name][0],
            item_param=placed[spec.name][1],
            dependencies=placed[spec.name][2],
            dependents=tuple(dependents[spec.name]),
        )
        for position, spec in enumerate(specs.values())
    }
    return Graph(
        tasks=MappingProxyType(tasks),
        order=order,
        tiers=tiers,
        roots=tuple(name for name, plan in tasks.items() if not plan.dependencies),
        data_names=data_names,
    )


def _resolve(
    spec: TaskSpec, specs: Mapping[str, TaskSpec], data: Mapping[str, object]
) -> tuple[tuple[str, ...], str | None, frozenset[str]]:
    """(injected inputs, item parameter, task dependencies) of one task."""
    inputs: list[str] = []
    free: list[str] = []
    for param in spec.params:
        if param in specs or param in data or param == DATA:
            inputs.append(param)
        elif param not in spec.signature.with_default:
            free.append(param)
    deps = {param for param in inputs if param in specs}
    item_param = None
    source = spec.map_source
    if source is not None:
        if source.name is not None:
            if source.name in specs:
                deps.add(source.name)
            elif source.name in data:
                check_iterable(spec.name, source.name, data[source.name])
            else:
                raise UnresolvedNameError(
                    f"task {spec.name!r} maps over {source.name!r}, which is neither a task "
                    f"nor a keyword of this weave; {_available(source.name, specs, data)}"
                )
        else:
            check_iterable(spec.name, None, source.iterable)
        item_param = _item_param(spec, inputs, free)
    elif free:
        param = free[0]
        raise UnresolvedNameError(
            f"task {spec.name!r} has parameter {param!r}, which names no task or keyword "
            f"of this weave; {_available(param, specs, data)}. Define a task named "
            f"{param!r}, pass {param}=... to weave(), or give the parameter a default"
        )
    if spec.name in deps:
        raise CircularDependencyError(
            f"Circular dependency detected: task {spec.name!r} depends on itself",
            (spec.name, spec.name),
        )
    return tuple(inputs), item_param, frozenset(deps)


def _item_param(spec: TaskSpec, inputs: list[str], free: list[str]) -> str:
    if len(free) == 1:
        return free[0]
    if not free:
        named = ", ".join(inputs) or "none"
        raise DefinitionError(
            f"mapped task {spec.name!r} needs exactly one parameter to receive each item, "
            f"but every parameter without a default names a task or keyword ({named}); "
            f"add a parameter for the item, e.g. `def {spec.name}(item, ...)`"
        )
    raise DefinitionError(
        f"mapped task {spec.name!r} needs exactly one parameter to receive each item, but "
        f"{', '.join(map(repr, free))} name no task or keyword; keep one for the item and "
        f"rename the others after tasks or keywords, or give them defaults"
    )


def check_iterable(task: str, name: str | None, value: object) -> None:
    if isinstance(value, Iterable | Collection) or hasattr(value, "__getitem__"):
        return
    source = f"{name!r}, whose value is" if name is not None else "a"
    raise MappingError(
        f"task {task!r} maps over {source} {type(value).__name__} ({value!r:.60}), which is "
        f"not iterable; map over a list, tuple, set, range, dict or generator"
    )


def _available(name: str, specs: Mapping[str, TaskSpec], data: Mapping[str, object]) -> str:
    names = sorted({*specs, *data, DATA})
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"available names: {', '.join(names)}{hint}"


def _topological(
    specs: Mapping[str, TaskSpec],
    deps: Mapping[str, frozenset[str]],
    dependents: Mapping[str, list[str]],
) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    """Kahn's algorithm; tasks left over with unmet dependencies lie on or behind a cycle."""
    waiting = {name: len(d) for name, d in deps.items()}
    level = dict.fromkeys((name for name, count in waiting.items() if not count), 0)
    order = list(level)
    for name in order:  # grows while it is walked
        for dependent in dependents[name]:
            level[dependent] = max(level.get(dependent, 0), level[name] + 1)
            waiting[dependent] -= 1
            if not waiting[dependent]:
                order.append(dependent)
    if len(order) < len(specs):
        cycle = _find_cycle({n: d for n, d in deps.items() if waiting[n]})
        raise CircularDependencyError(
            f"Circular dependency detected: {' -> '.join(cycle)}; "
            f"break the loop by removing one of these parameters",
            cycle,
        )
    tiers: list[list[str]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for name in specs:
        tiers[level[name]].append(name)
    return tuple(order), tuple(tuple(t) for t in tiers)


def _find_cycle(remaining: Mapping[str, frozenset[str]]) -> tuple[str, ...]:
    # Every leftover task has a leftover dependency, so walking them must revisit one.
    path: list[str] = []
    seen: dict[str, int] = {}
    node = next(iter(remaining))
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = next(d for d in sorted(remaining[node]) if d in remaining)
    return (*path[seen[node] :], node)
