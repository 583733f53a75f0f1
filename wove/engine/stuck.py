"""The debug stuck-task report: with ``debug=True``, tasks still running after
``configure(stuck_after=...)`` seconds are logged by name, again every interval."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from ..lanes import services, timer

if TYPE_CHECKING:
    from .run import Run


class StuckReport:
    __slots__ = ("_interval", "_lock", "_run", "_started")

    def __init__(self, run: Run, interval: float) -> None:
        self._run = run
        self._interval = interval
        self._lock = threading.Lock()
        self._started: dict[str, float] = {}

    def started(self, name: str) -> None:
        with self._lock:
            self._started.setdefault(name, time.monotonic())

    def arm(self) -> None:
        timer.deadlines().arm(time.monotonic() + self._interval, self._report)

    def _report(self) -> None:
        run = self._run
        if run.finished:
            return
        now, interval = time.monotonic(), self._interval
        unfinished = set(run.unfinished_tasks())
        with self._lock:
            stuck = [
                f"{name} ({now - started:.1f} s)"
                for name, started in self._started.items()
                if name in unfinished and now - started >= interval
            ]
        if stuck:
            services.logger.warning(
                "wove: weave at %s has tasks still running after %.1f s: %s",
                run.origin,
                interval,
                ", ".join(stuck),
            )
        self.arm()
