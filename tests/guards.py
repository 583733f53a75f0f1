"""Shared by the tests: run something that might deadlock without hanging the suite."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

#: Every guard thread started, so a fixture can wait for what a failed test left stuck.
started: list[threading.Thread] = []


def finishes_within(seconds: float, function: Callable[[], Any]) -> Any:
    """Run ``function`` in a daemon thread; fail (instead of hanging) if it never ends,
    else return its value or raise its exception."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = function()
        except BaseException as error:
            outcome["error"] = error

    thread = threading.Thread(target=target, name="test-hang-guard", daemon=True)
    started.append(thread)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"did not finish within {seconds} s (a deadlock?)"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
