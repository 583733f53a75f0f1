"""Followers of a weave detached into its own process (``weave(background=True,
fork=...)``): what an integration needs to see that weave's work from the parent.

A detached child reports nothing back by itself: its result stays there. A follower
(the OpenTelemetry instrumentation is one) is asked in the parent, in the caller's
context, when the block ends; what it returns, a :class:`DetachedChild`, goes to the
child (inherited by a forked one, pickled with the weave for a spawned one) and runs
the child's whole work there, so it can observe it and send what it saw back.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal, Protocol

from .lanes import services
from .registry import Registry

ChildMode = Literal["fork", "spawn"]
"""How the child is started: ``"fork"`` (it inherits the parent's memory, the
:class:`DetachedChild` included) or ``"spawn"`` (a new interpreter, which gets the
:class:`DetachedChild` pickled with the weave)."""


class DetachedChild(Protocol):
    """Made in the parent by a :data:`DetachFollower`; called in the detached child."""

    def __call__(self, body: Callable[[], int]) -> int:
        """Run ``body`` (the weave, then its ``on_done``) once and return what it
        returns (the child's exit status); observe it meanwhile. For a spawned child
        this object must be picklable by ``cloudpickle``."""


DetachFollower = Callable[[str, ChildMode], "DetachedChild | None"]
"""``follower(origin, mode)``: called in the parent, in the context of the code that ends
a ``weave(background=True, fork=...)`` block at ``origin`` (``file:line``), just before
the child is started (``mode``: ``"fork"`` or ``"spawn"``); None to not follow it."""

_followers: Registry[DetachFollower] = Registry()


def follow_detached(follower: DetachFollower) -> Callable[[], None]:
    """Ask ``follower`` about every weave detached into its own process from now on;
    returns a function that stops it."""
    return _followers.add(follower)


def children(origin: str, mode: ChildMode) -> tuple[DetachedChild, ...]:
    """What each follower sends along with the weave at ``origin`` (in the parent)."""
    found: list[DetachedChild] = []
    for follower in _followers.items:
        try:
            child = follower(origin, mode)
        except Exception:  # a broken follower must not stop the weave from starting
            services.logger.exception("wove: detach follower %r failed", follower)
            continue
        if child is not None:
            found.append(child)
    return tuple(found)


def run_followed(followed: tuple[DetachedChild, ...], body: Callable[[], int]) -> int:
    """In the child: ``body`` inside every follower's :class:`DetachedChild`."""
    for child in reversed(followed):
        body = functools.partial(child, body)
    return body()
