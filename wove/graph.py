"""Task specs + the weave's keywords -> :class:`Graph`.

Pure: nothing runs here. Every mistake a user can make in the shape of a weave (a name
that resolves to nothing, a cycle, a mapped function without exactly one item parameter,
a non-iterable map source known ahead of time) is refused here, before any task starts.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Hashable, Iterable, Mapping
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
class TaskNode:
    """One task's place in a graph, independent of the function objects of a run."""

    name: str
    position: int  # definition order
    inputs: tuple[str, ...]  # parameters injected by name (tasks, keywords, `data`)
    item_param: str | None  # the parameter receiving each item of a mapped task
    dependencies: frozenset[str]  # tasks that must finish first
    dependents: tuple[str, ...]  # tasks waiting for this one, in definition order


@dataclass(frozen=True, slots=True)
class Shape:
    """The resolved structure of a weave: the same for every run of the same block."""

    nodes: Mapping[str, TaskNode]  # in definition order
    order: tuple[str, ...]  # a topological order
    tiers: tuple[tuple[str, ...], ...]  # dependency levels, for reading only
    roots: tuple[str, ...]  # tasks with no task dependencies, in definition order
    waiting: Mapping[str, int]  # name -> number of dependencies, to copy per run


@dataclass(frozen=True, slots=True)
class TaskPlan:
    """A task's spec with its place in the graph."""

    spec: TaskSpec
    node: TaskNode

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def inputs(self) -> tuple[str, ...]:
        return self.node.inputs

    @property
    def item_param(self) -> str | None:
        return self.node.item_param

    @property
    def dependencies(self) -> frozenset[str]:
        return self.node.dependencies

    @property
    def dependents(self) -> tuple[str, ...]:
        return self.node.dependents


@dataclass(frozen=True, slots=True)
class Graph:
    shape: Shape
    specs: Mapping[str, TaskSpec]  # in definition order

    @property
    def tasks(self) -> Mapping[str, TaskPlan]:
        return MappingProxyType(
            {name: TaskPlan(spec, self.shape.nodes[name]) for name, spec in self.specs.items()}
        )

    @property
    def order(self) -> tuple[str, ...]:
        return self.shape.order

    @property
    def tiers(self) -> tuple[tuple[str, ...], ...]:
        return self.shape.tiers

    @property
    def roots(self) -> tuple[str, ...]:
        return self.shape.roots

    @property
    def final(self) -> str | None:
        """The task whose value is ``result.final``: the last one defined."""
        return next(reversed(tuple(self.specs)), None)

    @property
    def has_async(self) -> bool:
        return any(spec.is_async for spec in self.specs.values())


def check_data_names(names: Iterable[str]) -> None:
    """Refuse weave keywords that would shadow Wove's own names."""
    for name in names:
        if name == DATA:
            raise ReservedNameError(
                "'data' is a reserved name: tasks receive the dict of all keywords through "
                "a parameter named `data`; pass your value to weave() under another name"
            )
        if name in RESERVED_NAMES:
            raise ReservedNameError(
                f"the keyword {name!r} conflicts with a built-in attribute of the weave "
                f"result (w.result.{name}); pass it under another name"
            )


_SHAPES: dict[Hashable, Shape] = {}
_SHAPE_CACHE_SIZE = 1024


def build_graph(specs: Mapping[str, TaskSpec], data: Mapping[str, object]) -> Graph:
    """Resolve every name, place every task, and refuse what cannot run.

    The structure depends only on names, signatures and map sources, so it is resolved
    once per shape of block and reused by every later run of it.
    """
    key = (
        tuple(
            (name, spec.signature, spec.map_source is not None and spec.map_source.name)
            for name, spec in specs.items()
        ),
        frozenset(data),
    )
    shape = _SHAPES.get(key)
    if shape is None:
        shape = _build_shape(specs, data)
        if len(_SHAPES) >= _SHAPE_CACHE_SIZE:
            _SHAPES.clear()
        _SHAPES[key] = shape
    for spec in specs.values():  # values can change from run to run: checked every time
        source = spec.map_source
        if source is None:
            continue
        if source.name is None:
            check_iterable(spec.name, None, source.iterable)
        elif source.name in data:
            check_iterable(spec.name, source.name, data[source.name])
    return Graph(shape=shape, specs=specs)


def _build_shape(specs: Mapping[str, TaskSpec], data: Mapping[str, object]) -> Shape:
    data_names = frozenset(data)
    for name in specs:
        if name == DATA:
            raise ReservedNameError(
                "'data' is a reserved name: task name 'data' conflicts with a built-in "
                "attribute of the weave, the `data` parameter that receives the dict of all "
                "keywords; rename the function"
            )
        if name in RESERVED_NAMES:
            raise ReservedNameError(
                f"task name {name!r} conflicts with a built-in attribute of the weave result "
                f"(w.result.{name}); rename the function"
            )
        if name in data_names:
            raise ReservedNameError(
                f"task {name!r} has the same name as a keyword passed to weave(); "
                f"rename the task or the keyword"
            )
    placed = {spec.name: _resolve(spec, specs, data) for spec in specs.values()}
    dependents: dict[str, list[str]] = {name: [] for name in specs}
    for name, (_, _, deps) in placed.items():
        for dep in deps:
            dependents[dep].append(name)
    order, tiers = _topological(specs, {n: p[2] for n, p in placed.items()}, dependents)
    nodes = {
        name: TaskNode(
            name=name,
            position=position,
            inputs=placed[name][0],
            item_param=placed[name][1],
            dependencies=placed[name][2],
            dependents=tuple(dependents[name]),  # appended in definition order
        )
        for position, name in enumerate(specs)
    }
    return Shape(
        nodes=MappingProxyType(nodes),
        order=order,
        tiers=tiers,
        roots=tuple(name for name, node in nodes.items() if not node.dependencies),
        waiting=MappingProxyType({name: len(node.dependencies) for name, node in nodes.items()}),
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
            elif source.name not in data:
                raise UnresolvedNameError(
                    f"mapped task {spec.name!r} depends on {source.name!r}, the name it maps "
                    f"over, which is neither a task nor a keyword of this weave "
                    f"({_available(source.name, spec.name, specs, data)})"
                )
        item_param = _item_param(spec, inputs, free)
    elif free:
        param = free[0]
        raise UnresolvedNameError(
            f"task {spec.name!r} has parameter {param!r}, which names no task or keyword "
            f"of this weave ({_available(param, spec.name, specs, data)}); define a task "
            f"named {param!r}, pass {param}=... to weave(), or give the parameter a default"
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
            f"mapped task {spec.name!r} must have exactly one parameter that is not a "
            f"dependency, to receive each item, but every parameter without a default "
            f"names a task or keyword ({named}); add a parameter for the item, e.g. "
            f"`def {spec.name}(item, ...)`"
        )
    raise DefinitionError(
        f"mapped task {spec.name!r} must have exactly one parameter that is not a "
        f"dependency, to receive each item, but {', '.join(map(repr, free))} name no task "
        f"or keyword; keep one for the item and rename the others after tasks or "
        f"keywords, or give them defaults"
    )


def check_iterable(task: str, name: str | None, value: object) -> None:
    if isinstance(value, Iterable | Collection) or hasattr(value, "__getitem__"):
        return
    source = f"{name!r}, whose value is" if name is not None else "a"
    raise MappingError(
        f"task {task!r} maps over {source} {type(value).__name__} ({value!r:.60}), which is "
        f"not iterable; map over a list, tuple, set, range, dict or generator"
    )


def _available(
    name: str, asking: str, specs: Mapping[str, TaskSpec], data: Mapping[str, object]
) -> str:
    names = sorted({*specs, *data, DATA} - {asking})
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
