"""A mapped task's items and their progress, and what a worker runs next."""

from __future__ import annotations

import time
from typing import Any

from ..task_spec import TaskSpec


class Mapped:
    """A mapped task's items and their progress (guarded by the run's lock)."""

    __slots__ = (
        "claimed",
        "first_start",
        "item_param",
        "items",
        "kwargs",
        "last_end",
        "left",
        "name",
        "results",
        "spacing",
        "spec",
        "started_at",
    )

    def __init__(
        self, spec: TaskSpec, item_param: str, kwargs: dict[str, Any], items: list[Any]
    ) -> None:
        self.name = spec.name
        self.spec = spec
        self.item_param = item_param
        self.kwargs = kwargs
        self.items = items
        self.results: list[Any] = [None] * len(items)
        self.left = len(items)
        self.claimed = 0
        self.first_start = float("inf")
        self.last_end = 0.0
        self.started_at = time.monotonic()
        limit = spec.limit_per_minute
        self.spacing = 60.0 / limit if limit else 0.0

    def worker_count(self) -> int:
        workers = self.spec.workers
        return min(workers, len(self.items)) if workers else len(self.items)

    def start_delay(self, index: int) -> float:
        """Seconds item ``index`` must still wait under ``limit_per_minute``."""
        if not self.spacing or not index:
            return 0.0
        return self.started_at + index * self.spacing - time.monotonic()


#: What a worker runs next: an unmapped task (its name) or a mapped task's items.
Work = str | Mapped
