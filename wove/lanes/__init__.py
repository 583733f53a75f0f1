"""Where a call runs: the only package that creates threads or drives event loops.

Each thread service is a small module with its own lock, its own process-wide instance
(created lazily, forgotten in a forked child) and its own fork reset:

* :mod:`~wove.lanes.pool`: the thread pool for sync work (a hard cap that counts
  abandoned threads) and the per-weave :class:`~wove.lanes.pool.Limiter`;
* :mod:`~wove.lanes.timer`: one timer thread for sync timeouts, rate-limited starts and
  stuck-task reports;
* :mod:`~wove.lanes.loops`: Wove's loop threads, for async tasks of sync callers;
* :mod:`~wove.lanes.caller`: the caller's lane (thread-sensitive tasks) and how a sync
  caller waits;
* :mod:`~wove.lanes.dedicated`: which of Wove's threads a waiting weave blocks;
* :mod:`~wove.lanes.hooks`: the thread-call and async-call wrappers integrations
  register;
* :mod:`~wove.lanes.task_thread`: the thread of one async task call's thread-sensitive
  work;
* :mod:`~wove.lanes.services`: what they share: the logger, jobs that never raise, and
  the loop that keeps a service alive through an unexpected error.
"""

from .caller import CallerWaiter, SensitiveLane, SerialThread, serial_thread
from .hooks import (
    add_async_call_wrapper,
    add_thread_call_wrapper,
    async_call_wrappers,
    caller_thread_wrappers,
    thread_call_wrappers,
)
from .loops import LoopThread, call_on_loop, loop_for_sync_caller, run_coroutine
from .pool import Limiter, ThreadPool, set_max_threads, thread_pool
from .services import Job, logger, reap, start_service, where_is
from .task_thread import TaskThread
from .timer import Deadline, DeadlineWatcher, deadlines

__all__ = [
    "CallerWaiter",
    "Deadline",
    "DeadlineWatcher",
    "Job",
    "Limiter",
    "LoopThread",
    "SensitiveLane",
    "SerialThread",
    "TaskThread",
    "ThreadPool",
    "add_async_call_wrapper",
    "add_thread_call_wrapper",
    "async_call_wrappers",
    "call_on_loop",
    "caller_thread_wrappers",
    "deadlines",
    "logger",
    "loop_for_sync_caller",
    "reap",
    "run_coroutine",
    "serial_thread",
    "set_max_threads",
    "start_service",
    "thread_call_wrappers",
    "thread_pool",
    "where_is",
]
