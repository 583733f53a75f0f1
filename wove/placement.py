"""Specs + weave options + policy -> a :class:`Placement`: where each task runs, decided
once, when the run is planned, as a frozen value.

Lanes:

* ``"loop"``: async tasks, on the event loop (the caller's, or one of Wove's loop
  threads for a sync caller);
* ``"thread"``: sync tasks, on the shared thread pool;
* ``"caller"``: thread-sensitive sync tasks, on the caller's thread (they share its
  database connection and transaction);
* ``"remote"``: tasks routed to a remote environment, awaited on the loop.

A worker continues only with tasks of its own lane, so a chain of sync tasks stays on
one pool thread and a chain of async tasks in one asyncio task.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

from .graph import Graph

Lane = Literal["loop", "thread", "caller", "remote"]
LOOP: Final = "loop"
THREAD: Final = "thread"
CALLER: Final = "caller"
REMOTE: Final = "remote"


@dataclass(frozen=True, slots=True)
class Placement:
    """Each task's lane, and whether async tasks' thread-sensitive work stays with the
    caller (what the thread-sensitive default says, e.g. inside a transaction)."""

    lanes: Mapping[str, Lane]
    async_sensitive: bool = False


def place(
    graph: Graph,
    *,
    thread_sensitive: bool | None,
    policy: Callable[[], bool],
    ask_async: bool = False,
) -> Placement:
    """Each task's lane: async tasks on the loop (``"remote"`` when routed to an env),
    sync tasks on the caller's thread when thread-sensitive (the task's own choice, else
    the weave's ``thread_sensitive``, else ``policy()``, asked once on the caller's
    thread), else on the pool. With ``ask_async`` (someone wraps async calls), the same
    default tells whether the thread-sensitive work of local async tasks stays with the
    caller."""
    lanes: dict[str, Lane] = {}
    asked: list[bool] = []

    def default() -> bool:
        if thread_sensitive is not None:
            return thread_sensitive
        if not asked:
            asked.append(bool(policy()))
        return asked[0]

    async_sensitive = False
    for name, spec in graph.specs.items():
        if spec.is_async:
            lanes[name] = REMOTE if spec.env else LOOP
            async_sensitive = async_sensitive or (ask_async and not spec.env and default())
            continue
        choice = spec.thread_sensitive
        lanes[name] = CALLER if (default() if choice is None else choice) else THREAD
    return Placement(MappingProxyType(lanes), async_sensitive)
