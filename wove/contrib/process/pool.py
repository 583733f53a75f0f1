"""Worker processes of this machine, each kept by a thread of the pool's process.

:class:`Pool` starts ``workers`` processes (on first use) and one keeper thread per
process. Calls wait in one queue, first come first served; a keeper takes the next,
sends it down its process's pipe and waits for the reply, so no event loop ever waits
for a process. A call cancelled while it runs has its process stopped (SIGTERM, then
SIGKILL) and replaced; a process that dies under a call fails that call at once (its
pipe reaches end-of-file when it exits) and is replaced too.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import queue
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Final

from .worker import serve

logger: Final = logging.getLogger("wove")

#: Seconds a stopped process has to exit after SIGTERM before it gets SIGKILL.
STOP_GRACE: Final = 2.0

#: What a keeper hands back: ``(reply bytes, None, True)``; or ``(None, why, started)``
#: when the call has no reply: its process died under it (``started`` True), or the pool
#: closed before it started (False).
Deliver = Callable[[bytes | None, str | None, bool], None]


class Job:
    """One call in the pool: queued, then running on a process, then done.

    Its state changes under the pool's lock, so a cancel and a keeper never both act.
    """

    __slots__ = ("cancelled", "deliver", "done", "payload", "process", "stopped")

    def __init__(self, payload: bytes, deliver: Deliver) -> None:
        self.payload = payload
        self.deliver = deliver
        self.process: BaseProcess | None = None  # while it runs
        self.cancelled = False
        self.stopped = False  # its process was stopped by the cancel
        self.done = False


class Pool:
    """``workers`` worker processes started with ``start_method``; see the module."""

    def __init__(self, workers: int, start_method: str, name: str) -> None:
        self.workers = workers
        self.start_method = start_method
        self.name = name
        self._context: BaseContext = multiprocessing.get_context(start_method)
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._keepers: list[threading.Thread] = []
        self._processes: set[BaseProcess] = set()
        self._numbers = itertools.count(1)
        self._closing = False

    @property
    def pids(self) -> list[int]:
        """The process ids of the worker processes running now."""
        with self._lock:
            return sorted(p.pid for p in self._processes if p.pid is not None and p.is_alive())

    def start(self) -> None:
        """Start the keepers (each starts its process) if they are not running."""
        with self._lock:
            if self._keepers:
                return
            for number in range(self.workers):
                keeper = threading.Thread(
                    target=self._keep, name=f"wove-{self.name}-{number}", daemon=True
                )
                self._keepers.append(keeper)
                keeper.start()

    def submit(self, job: Job) -> None:
        """Queue ``job``; a keeper runs it when its process is free."""
        self.start()
        self._jobs.put(job)

    def cancel(self, job: Job) -> None:
        """Drop ``job`` if it is still queued; stop its process if it runs."""
        with self._lock:
            if job.done or job.cancelled:
                return
            job.cancelled = True
            process = job.process
            if process is not None:
                job.stopped = True
        if process is not None:
            process.terminate()  # its keeper sees the pipe close, and replaces it

    def close(self) -> None:
        """Stop every worker process (a call still running gets
        :class:`~wove.RemoteWorkerLost`) and every keeper; calls still queued are never
        run (cancel them first). The pool starts again on the next :meth:`submit`."""
        with self._lock:
            keepers, self._keepers = self._keepers, []
            self._closing = True
            processes = list(self._processes)
        for _ in keepers:
            self._jobs.put(None)
        for process in processes:
            _terminate(process)
        for keeper in keepers:
            keeper.join()
        while True:  # what no keeper took: queued calls, the sentinels of lost keepers
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None and not job.cancelled:
                job.deliver(None, "the process pool was closed before the call started", False)
        with self._lock:
            self._closing = False

    # --- a keeper thread -------------------------------------------------------------

    def _keep(self) -> None:
        worker: tuple[BaseProcess, Connection] | None = self._spawn()
        try:
            while worker is not None:
                job = self._jobs.get()
                if job is None:
                    return
                with self._lock:
                    if job.cancelled:
                        continue
                    job.process = worker[0]
                worker = self._exchange(job, *worker)
        finally:
            if worker is not None:
                worker[1].close()  # the worker reads end-of-file and exits
                self._retire(worker[0], STOP_GRACE)

    def _exchange(
        self, job: Job, process: BaseProcess, connection: Connection
    ) -> tuple[BaseProcess, Connection] | None:
        """Run ``job`` on ``process`` and deliver its outcome; the worker to go on with
        (a new one when this one was lost or stopped; None when the pool closes)."""
        reply: bytes | None = None
        sent = False
        try:
            connection.send_bytes(job.payload)
            sent = True
            reply = connection.recv_bytes()
        except (EOFError, OSError):
            pass
        with self._lock:
            job.done = True
            job.process = None
            cancelled, stopped = job.cancelled, job.stopped
        if reply is not None and not stopped:
            if not cancelled:
                job.deliver(reply, None, True)
            return process, connection
        # The process exited (killed, out of memory, os._exit) or was stopped by a cancel.
        connection.close()
        pid = process.pid
        code = self._retire(process, 0.0)
        if not cancelled:
            if sent:
                job.deliver(None, f"the worker process (pid {pid}) {_ended(code)}", True)
            else:  # it died before the call reached it: the call never started
                with self._lock:
                    job.done = False
                self._jobs.put(job)
        with self._lock:
            if self._closing:
                return None
        return self._spawn()

    def _spawn(self) -> tuple[BaseProcess, Connection]:
        mine, theirs = self._context.Pipe(duplex=True)
        process = self._context.Process(  # type: ignore[attr-defined]
            target=serve,
            args=(theirs,),
            name=f"wove-{self.name}-worker-{next(self._numbers)}",
        )
        process.start()
        theirs.close()  # only the worker holds its end: its exit is our end-of-file
        with self._lock:
            self._processes.add(process)
        return process, mine

    def _retire(self, process: BaseProcess, grace: float) -> int | None:
        """Wait up to ``grace`` seconds for ``process`` to exit, then stop it; its exit
        code."""
        process.join(grace)
        _terminate(process)
        code = process.exitcode
        with self._lock:
            self._processes.discard(process)
        process.close()
        return code


def _terminate(process: BaseProcess) -> None:
    """Stop ``process`` if it still runs: SIGTERM, then SIGKILL after the grace."""
    try:
        if process.exitcode is None:
            process.terminate()
            process.join(STOP_GRACE)
        if process.exitcode is None:
            process.kill()
            process.join()
    except ValueError:  # its keeper retired (closed) it meanwhile
        pass


def _ended(code: int | None) -> str:
    if code is None:
        return "stopped answering"
    if code < 0:
        return f"was killed by signal {-code}"
    return f"exited with status {code}"
