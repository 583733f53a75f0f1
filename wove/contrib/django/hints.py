"""The advice added to Django's ``SynchronousOnlyOperation`` when an async task hits it."""

from __future__ import annotations

from django.core.exceptions import SynchronousOnlyOperation


def orm_lane_hint(error: BaseException, task: str) -> str | None:
    """Name the lanes that can run the query, for an error a weave re-raises."""
    if not isinstance(error, SynchronousOnlyOperation):
        return None
    return (
        f"wove: task {task!r} called the Django ORM from the event loop, where Django "
        "refuses sync database calls. Pick a lane: make it a sync task (`def`, not "
        "`async def`) to run it in parallel on Wove's thread pool, with its own connection; "
        f"use @w.do(thread_sensitive=True) on that sync task to share the request's "
        "connection and transaction (one at a time); or keep it async and use the async "
        "ORM (`await Model.objects.aget(...)`, `async for`)."
    )
