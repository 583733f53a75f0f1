"""``Weave`` classes: reusable templates of tasks, loaded by ``weave(MyWeave)``."""

from __future__ import annotations

from collections.abc import Mapping
from types import FunctionType, MappingProxyType
from typing import Any, ClassVar

from .decorator import Do
from .errors import DefinitionError
from .task_spec import NO_OPTIONS, TaskSpec, make_spec

_SPEC_ATTRIBUTE = "__wove_spec__"


def _mark(spec: TaskSpec, function: Any) -> Any:
    setattr(function, _SPEC_ATTRIBUTE, spec)
    return function


class Weave:
    """Base class of weave templates.

    Tasks are methods decorated with ``@Weave.do``; they take ``self`` first, and
    ``self`` is not a dependency. Subclasses inherit and override tasks like methods; an
    override keeps the position of the task it replaces and inherits the options it does
    not give. Pass the class to ``weave()``; it is never instantiated by you.
    """

    #: The class's tasks, base classes first, in definition order.
    wove_tasks: ClassVar[Mapping[str, TaskSpec]] = MappingProxyType({})

    do: ClassVar[Do] = Do(_mark, takes_self=True)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        tasks: dict[str, TaskSpec] = {}
        for base in reversed(cls.__mro__[1:]):
            if issubclass(base, Weave):
                for name, spec in base.wove_tasks.items():
                    tasks[name] = spec.overriding(tasks[name]) if name in tasks else spec
        for attribute, value in vars(cls).items():
            marked = getattr(value, _SPEC_ATTRIBUTE, None)
            replaced = tasks.get(attribute)
            if not isinstance(marked, TaskSpec):
                if replaced is None or not isinstance(value, FunctionType):
                    continue
                # A plain method overrides a task as methods override: same task (its
                # mapping and options kept), new body.
                marked = make_spec(value, None, NO_OPTIONS, takes_self=True)._replace(
                    map_source=replaced.map_source
                )
            if marked.name != attribute:
                raise DefinitionError(
                    f"{cls.__name__}.{attribute} is task {marked.name!r}; a Weave task's "
                    f"function must be defined under its own name"
                )
            tasks[attribute] = marked.overriding(replaced) if replaced else marked
        cls.wove_tasks = MappingProxyType(tasks)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise DefinitionError(
            f"{type(self).__name__} is a Weave class and cannot be instantiated directly; "
            f"Instead, pass the class to weave(): `with weave({type(self).__name__}) as w:`"
        )

    @classmethod
    def wove_bound_tasks(cls) -> dict[str, TaskSpec]:
        """The class's tasks with ``self`` bound to a fresh instance (one per run)."""
        instance = object.__new__(cls)
        return {name: spec.bound_to(instance) for name, spec in cls.wove_tasks.items()}
