"""``ProcessEnv``: the remote environment that runs tasks in worker processes of this
machine, for CPU-bound work that threads cannot run in parallel (the GIL).

A call travels by value (cloudpickle: closures, lambdas and functions defined in
``__main__`` included) down a private pipe to one worker process of the pool, and its
reply comes back the same way: no broker, no signing (only this process and its workers
hold the pipes). The function's own exception is rebuilt here; a call cancelled (the
weave failed, or its ``timeout=`` passed) has its process stopped and replaced; a worker
process that dies under a call fails it with :class:`~wove.RemoteWorkerLost` at once.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import multiprocessing
import os
import uuid
import weakref
from typing import Any, Final

from wove import InvalidOptionError, RemoteNeverRan, RemoteWorkerLost, annotate
from wove.contrib.remote import capture, replies
from wove.contrib.remote.tracing import trace_context
from wove.lowlevel import DetachedWeave, RemoteCall

from .pool import Job, Pool
from .worker import CALL, WEAVE

logger: Final = logging.getLogger("wove")

_open_pools: weakref.WeakSet[Pool] = weakref.WeakSet()


class ProcessEnv:
    """A pool of ``workers`` processes of this machine; register it with
    :func:`wove.register_env`, e.g. ``register_env("process", ProcessEnv(workers=4))``.

    ``workers``: how many calls run at once (None: one per CPU). Further calls wait,
    first come first served (a waiting call is not lost: it waits, or its ``timeout=``
    passes). ``start_method``: how worker processes start, ``"forkserver"`` (the
    default where available), ``"spawn"`` or ``"fork"`` (see :mod:`multiprocessing`;
    ``"fork"`` copies this process's threads' locks in whatever state they are).

    The processes start on the first call (or :meth:`start`), and are stopped by
    :meth:`close` or when this process exits. Only the process that makes the calls
    registers the environment: workers need no configuration.
    """

    def __init__(self, workers: int | None = None, *, start_method: str | None = None) -> None:
        if workers is None:
            workers = os.cpu_count() or 1
        if type(workers) is not int or workers < 1:
            raise InvalidOptionError(
                f"ProcessEnv's workers must be a number of processes >= 1 (or None for one "
                f"per CPU), got {workers!r}"
            )
        methods = multiprocessing.get_all_start_methods()
        if start_method is None:
            start_method = "forkserver" if "forkserver" in methods else "spawn"
        elif start_method not in methods:
            raise InvalidOptionError(
                f"ProcessEnv's start_method must be one of {', '.join(methods)} on this "
                f"platform (or None for the default), got {start_method!r}"
            )
        self.pool = Pool(workers, start_method, "process")
        _open_pools.add(self.pool)

    def __repr__(self) -> str:
        return f"ProcessEnv(workers={self.pool.workers}, start_method={self.pool.start_method!r})"

    @property
    def pids(self) -> list[int]:
        """The process ids of the running worker processes (empty before the first call)."""
        return self.pool.pids

    def start(self) -> None:
        """Start the worker processes now rather than on the first call."""
        self.pool.start()

    def close(self) -> None:
        """Stop the worker processes; a call still running fails with
        :class:`~wove.RemoteWorkerLost`, one still queued with :class:`~wove.RemoteNeverRan`.
        The next call starts the pool again."""
        self.pool.close()

    async def run(self, call: RemoteCall) -> Any:
        payload = capture.dumps(
            (CALL, call.function, dict(call.kwargs), call.task, call.origin, trace_context()),
            limit=None,
            what=f"the call of task {call.task!r}",
            parts=lambda: capture.function_parts(call.function, call.kwargs),
        )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[bytes | None, str | None, bool]] = loop.create_future()

        def deliver(reply: bytes | None, lost: str | None, started: bool) -> None:
            if _running_loop() is loop:  # the reply was read on this loop
                _settle(future, (reply, lost, started))
                return
            try:  # from a helper thread (a lost worker, a close)
                loop.call_soon_threadsafe(_settle, future, (reply, lost, started))
            except RuntimeError:  # the loop closed: nobody waits any more
                pass

        job = Job(payload, deliver, loop)
        self.pool.submit(job)
        try:
            reply, lost, started = await future
        except asyncio.CancelledError:  # the weave failed, or the task timed out
            self.pool.cancel(job)
            raise
        if reply is None:
            raise _lost(call.task, lost or "", started)
        value, info = replies.outcome(call.task, "process pool", reply)
        annotate(worker=info.get("worker"))
        return value

    def detach(self, weave: DetachedWeave) -> str:
        payload = capture.dumps(
            (WEAVE, weave.run, weave.origin, trace_context()),
            limit=None,
            what=f"the weave at {weave.origin}",
            parts=lambda: [(f"keyword {name!r}", value) for name, value in weave.data.items()],
        )
        weave_id = f"process-{uuid.uuid4().hex}"

        def deliver(reply: bytes | None, lost: str | None, started: bool) -> None:
            if reply is None:
                logger.error("wove: the detached weave at %s was lost: %s", weave.origin, lost)

        self.pool.submit(Job(payload, deliver))
        return weave_id


def _lost(task: str, why: str, started: bool) -> RemoteWorkerLost | RemoteNeverRan:
    if not started:
        return RemoteNeverRan(task, "PoolClosed", why, None)
    return RemoteWorkerLost(task, "WorkerLost", why, None, may_have_started=True)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _settle(future: asyncio.Future[Any], outcome: Any) -> None:
    if not future.done():
        future.set_result(outcome)


@atexit.register
def _close_pools() -> None:
    # Before multiprocessing's own exit handler (registered earlier, so run later), which
    # would wait for the worker processes forever: their pipes are still open.
    for pool in list(_open_pools):
        pool.close()
