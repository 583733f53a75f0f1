"""Wove's loop threads (``wove-loop-0``, ...): event loops for the async tasks of weaves
whose caller does not run a loop for them (sync ``with`` blocks, background weaves).

Each loop runs forever under :func:`~wove.lanes.services.keep_serving`: an exception
escaping ``run_forever`` (asyncio lets ``KeyboardInterrupt`` and ``SystemExit`` out of a
task) is logged and the loop runs again, so one bad task never takes the loop, and with
it every later weave of the process, down. The engine itself never lets a task's
exception reach the loop: this is the second line of defence.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from . import dedicated
from .services import keep_serving


class LoopThread(dedicated.Dedicated):
    """An event loop running forever in a daemon thread, for sync callers' async tasks."""

    def __init__(self, index: int) -> None:
        self.blocked = 0
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        self.thread = threading.Thread(
            target=self._run, args=(started,), name=f"wove-loop-{index}", daemon=True
        )
        self.thread.start()
        started.wait()
        assert self.thread.ident is not None
        dedicated.register(self, self.thread.ident)

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(started.set)
        keep_serving(self._serve, self.thread.name)

    def _serve(self) -> bool:
        self.loop.run_forever()
        return False  # run_forever returns only when stopped: serve again


def call_on_loop(
    loop: asyncio.AbstractEventLoop, loop_thread: int, callback: Callable[[], None]
) -> None:
    """Run ``callback`` on ``loop``'s thread: now if already there, else soon."""
    if threading.get_ident() == loop_thread:
        callback()
    else:
        loop.call_soon_threadsafe(callback)


_lock = threading.Lock()
_loops: list[LoopThread] = []


def loop_for_sync_caller() -> LoopThread:
    """A loop thread for a sync caller's async tasks that no waiting weave blocks.

    A sync caller blocks its thread until its weave is done. When that thread is one of
    Wove's loop threads (a sync weave inside an async task of a sync weave), that loop is
    marked blocked meanwhile, and async work of any weave goes to the next loop, so no
    loop ever waits on itself, directly or through a nested weave on another thread.
    """
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    with _lock:
        for loop_thread in _loops:
            if dedicated.is_free(loop_thread) and loop_thread.loop is not running:
                return loop_thread
        _loops.append(LoopThread(len(_loops)))
        return _loops[-1]


def run_coroutine(coroutine: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
    """Run a coroutine on a free Wove loop thread from any thread that is not it."""
    return asyncio.run_coroutine_threadsafe(coroutine, loop_for_sync_caller().loop)


def _forget_in_child() -> None:
    global _lock
    _lock = threading.Lock()
    _loops.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
