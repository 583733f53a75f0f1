"""Worker processes of this machine, lent one call at a time to the callers' event loops.

:class:`Pool` starts ``workers`` processes (on first use). A call takes an idle process
(or waits, first come first served) and its event loop writes the call down the
process's pipe and reads the reply when the pipe becomes readable (``add_reader``): no
thread sits between the loop and the process, and none is held while a call runs. A
call without an event loop (a detached weave) is carried by a short-lived thread.

A call cancelled while it runs has its process stopped (SIGTERM, then SIGKILL) and
replaced; a process that dies under a call fails that call at once (its pipe reaches
end-of-file when it exits) and is replaced too. Stopping, waiting for and starting
processes happens on helper threads, never on a caller's loop.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Final

from .worker import serve

logger: Final = logging.getLogger("wove")

#: Seconds a stopped process has to exit after SIGTERM before it gets SIGKILL.
STOP_GRACE: Final = 2.0

#: What a call hands back: ``(reply bytes, None, True)``; or ``(None, why, started)``
#: when the call has no reply: its process died under it (``started`` True), or the pool
#: closed before it started (False). Called on the call's loop when it has one and the
#: reply came there, else on a helper thread.
Deliver = Callable[[bytes | None, str | None, bool], None]


class Worker:
    """One worker process, the pool's end of its pipe, and the pool generation that
    started it (a worker of an earlier generation, before a :meth:`Pool.close`, is only
    stopped, never lent again)."""

    __slots__ = ("connection", "generation", "process")

    def __init__(self, process: BaseProcess, connection: Connection, generation: int) -> None:
        self.process = process
        self.connection = connection
        self.generation = generation


class Job:
    """One call in the pool: waiting, then lent a worker, then sent, then done.

    Its state changes under the pool's lock, so a cancel, a close and the call's own
    progress never both act. ``loop``: the event loop that does its pipe I/O (None: a
    helper thread does).
    """

    __slots__ = ("cancelled", "deliver", "done", "loop", "payload", "sent", "worker")

    def __init__(
        self, payload: bytes, deliver: Deliver, loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        self.payload = payload
        self.deliver = deliver
        self.loop = loop
        self.worker: Worker | None = None  # while lent one
        self.sent = False
        self.cancelled = False
        self.done = False


class Pool:
    """``workers`` worker processes started with ``start_method``; see the module."""

    def __init__(self, workers: int, start_method: str, name: str) -> None:
        self.workers = workers
        self.start_method = start_method
        self.name = name
        self._context: BaseContext = multiprocessing.get_context(start_method)
        self._lock = threading.Lock()
        self._idle: list[Worker] = []
        self._waiting: deque[Job] = deque()
        self._processes: set[BaseProcess] = set()
        self._numbers = itertools.count(1)
        self._generation = 0
        self._started = False
        self._spawning = 0  # processes being started now
        self._pid = os.getpid()

    @property
    def pids(self) -> list[int]:
        """The process ids of the worker processes running now."""
        with self._lock:
            processes = list(self._processes)
        return sorted(p.pid for p in processes if p.pid is not None and _alive(p))

    def start(self) -> None:
        """Start the worker processes (on helper threads) if they are not running."""
        self._forget_if_forked()
        with self._lock:
            if self._started:
                return
            self._started = True
            self._spawning += self.workers
            generation = self._generation
        for _ in range(self.workers):
            _in_thread(lambda: self._add_worker(generation), f"wove-{self.name}-start")

    def submit(self, job: Job) -> None:
        """Lend ``job`` an idle worker, or queue it until one is free."""
        self._forget_if_forked()
        with self._lock:
            lent = bool(self._idle)
            if lent:
                job.worker = self._idle.pop()
            else:  # queued before the pool starts: a start that fails finds it, fails it
                self._waiting.append(job)
        self.start()
        if lent:
            self._begin(job)

    def cancel(self, job: Job) -> None:
        """Drop ``job`` if it is still queued; stop its process if it runs. Called on the
        job's loop."""
        with self._lock:
            if job.done or job.cancelled:
                return
            job.cancelled = True
            worker = job.worker
            if worker is None:
                try:
                    self._waiting.remove(job)
                except ValueError:
                    pass
                return
            if not job.sent:  # lent but not sent yet: _send sees the cancel, gives it back
                return
            job.done = True
            job.worker = None
        if job.loop is not None:
            try:
                job.loop.remove_reader(worker.connection.fileno())
            except NotImplementedError:  # a thread reads instead; it sees the pipe close
                pass
        worker.process.terminate()
        self._replace(worker, None)

    def close(self) -> None:
        """Stop every worker process (a call still running gets
        :class:`~wove.RemoteWorkerLost`); calls still queued are never run (each gets
        ``(None, why, False)``). The pool starts again on the next :meth:`submit`."""
        self._forget_if_forked()
        with self._lock:
            self._generation += 1
            self._started = False
            self._spawning = 0
            idle, self._idle = self._idle, []
            waiting, self._waiting = list(self._waiting), deque()
            processes = list(self._processes)
            self._processes.clear()
            for job in waiting:
                job.done = True
        for job in waiting:
            if not job.cancelled:
                job.deliver(None, "the process pool was closed before the call started", False)
        for worker in idle:
            worker.connection.close()  # the worker reads end-of-file and exits
        for process in processes:
            _terminate(process)
        for worker in idle:
            _close(worker.process)

    # --- lending a worker ------------------------------------------------------------

    def _release(self, worker: Worker) -> None:
        """``worker`` is free: lend it to the first waiting call, or keep it idle."""
        with self._lock:
            stale = worker.generation != self._generation
            job = None
            while not stale and self._waiting:
                job = self._waiting.popleft()
                if not job.cancelled:
                    job.worker = worker
                    break
                job = None
            if job is None and not stale:
                self._idle.append(worker)
                return
        if stale:
            worker.connection.close()
            _in_thread(lambda: self._retire(worker.process, STOP_GRACE), f"wove-{self.name}-stop")
        elif job is not None:
            self._begin(job)

    def _begin(self, job: Job) -> None:
        """Have ``job``'s loop (or a helper thread) send it down its lent worker's pipe."""
        loop = job.loop
        if loop is None:
            _in_thread(lambda: self._exchange(job), f"wove-{self.name}-call")
            return
        if _running_loop() is loop:
            self._send(job)
            return
        try:
            loop.call_soon_threadsafe(self._send, job)
        except RuntimeError:  # its loop closed: nobody waits for the call any more
            self._give_back(job)

    def _give_back(self, job: Job) -> None:
        with self._lock:
            worker, job.worker = job.worker, None
            job.done = True
        if worker is not None:
            self._release(worker)

    def _send(self, job: Job) -> None:
        """On ``job``'s loop: write the call, then read the reply when it comes."""
        worker = job.worker
        assert worker is not None
        assert job.loop is not None
        if job.cancelled:
            self._give_back(job)
            return
        try:
            worker.connection.send_bytes(job.payload)
        except OSError:  # it died before the call reached it: the call never started
            self._unsent(job, worker)
            return
        job.sent = True
        try:
            job.loop.add_reader(worker.connection.fileno(), self._receive, job)
        except NotImplementedError:  # a loop without add_reader: a thread reads instead
            _in_thread(lambda: self._finish(job, _read(worker.connection)), "wove-read")

    def _receive(self, job: Job) -> None:
        """On ``job``'s loop, when its worker's pipe is readable: the reply, or EOF."""
        worker = job.worker
        assert worker is not None
        assert job.loop is not None
        job.loop.remove_reader(worker.connection.fileno())
        self._finish(job, _read(worker.connection))

    def _exchange(self, job: Job) -> None:
        """On a helper thread: send ``job`` and wait for its reply."""
        worker = job.worker
        assert worker is not None
        try:
            worker.connection.send_bytes(job.payload)
        except OSError:
            self._unsent(job, worker)
            return
        job.sent = True
        self._finish(job, _read(worker.connection))

    def _finish(self, job: Job, reply: bytes | None) -> None:
        with self._lock:
            worker = job.worker
            if worker is None:  # cancelled meanwhile: the cancel stops the worker
                return
            job.done = True
            job.worker = None
            cancelled = job.cancelled
        if reply is not None:
            if not cancelled:
                job.deliver(reply, None, True)
            self._release(worker)
            return
        # The process exited (killed, out of memory, os._exit) or was stopped by close.
        self._replace(worker, None if cancelled else job)

    def _unsent(self, job: Job, worker: Worker) -> None:
        """``job`` never reached ``worker`` (its process is gone): queue it again first
        in line, or fail it as never run when the pool closed meanwhile."""
        with self._lock:
            job.worker = None
            closed = worker.generation != self._generation
            if not closed and not job.cancelled:
                self._waiting.appendleft(job)
            else:
                job.done = True
        if closed and not job.cancelled:
            job.deliver(None, "the process pool was closed before the call started", False)
        self._replace(worker, None)

    # --- processes -------------------------------------------------------------------

    def _replace(self, worker: Worker, lost: Job | None) -> None:
        """On a helper thread: stop ``worker``'s process, tell ``lost`` how it ended, and
        start its replacement (unless the pool closed since it started)."""

        def replace() -> None:
            worker.connection.close()
            pid = worker.process.pid
            code = self._retire(worker.process, 0.0)
            if lost is not None:
                lost.deliver(None, f"the worker process (pid {pid}) {_ended(code)}", True)
            with self._lock:
                if worker.generation != self._generation:
                    return
                self._spawning += 1
            self._add_worker(worker.generation)

        _in_thread(replace, f"wove-{self.name}-replace")

    def _add_worker(self, generation: int) -> None:
        """On a helper thread: start a worker process and lend it out. If none can start
        and no other runs or is starting, the waiting calls fail as never run (rather
        than wait forever) and the next call tries again."""
        try:
            worker = self._spawn(generation)
        except Exception as error:
            logger.error(
                "wove: could not start a worker process of the %s pool: %r", self.name, error
            )
            with self._lock:
                self._spawning -= 1
                if self._processes or self._spawning or generation != self._generation:
                    return
                waiting, self._waiting = list(self._waiting), deque()
                self._started = False
                for job in waiting:
                    job.done = True
            for job in waiting:
                if not job.cancelled:
                    job.deliver(None, f"no worker process could start ({error!r})", False)
            return
        with self._lock:
            self._spawning -= 1
        self._release(worker)

    def _spawn(self, generation: int) -> Worker:
        mine, theirs = self._context.Pipe(duplex=True)
        process = self._context.Process(  # type: ignore[attr-defined]
            target=serve,
            args=(theirs,),
            name=f"wove-{self.name}-worker-{next(self._numbers)}",
        )
        process.start()
        theirs.close()  # only the worker holds its end: its exit is our end-of-file
        with self._lock:
            if generation == self._generation:
                self._processes.add(process)
        return Worker(process, mine, generation)

    def _retire(self, process: BaseProcess, grace: float) -> int | None:
        """Wait up to ``grace`` seconds for ``process`` to exit, then stop it; its exit
        code."""
        try:
            process.join(grace)
        except ValueError:  # already closed
            return None
        _terminate(process)
        code = process.exitcode
        with self._lock:
            self._processes.discard(process)
        _close(process)
        return code

    def _forget_if_forked(self) -> None:
        """In a child forked from a process that used this pool: the workers, pipes and
        lock are the parent's; start afresh (a new lock: the copied one may be held)."""
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._idle, self._waiting, self._processes = [], deque(), set()
        self._generation += 1
        self._started = False
        self._spawning = 0


def _read(connection: Connection) -> bytes | None:
    try:
        return connection.recv_bytes()
    except (EOFError, OSError):
        return None


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _in_thread(target: Callable[[], object], name: str) -> None:
    threading.Thread(target=target, name=name, daemon=True).start()


def _alive(process: BaseProcess) -> bool:
    try:
        return process.is_alive()
    except ValueError:  # closed meanwhile
        return False


def _close(process: BaseProcess) -> None:
    try:
        process.close()
    except ValueError:  # still running: whoever stopped it closes it after its exit
        pass


def _terminate(process: BaseProcess) -> None:
    """Stop ``process`` if it still runs: SIGTERM, then SIGKILL after the grace."""
    try:
        if process.exitcode is None:
            process.terminate()
            process.join(STOP_GRACE)
        if process.exitcode is None:
            process.kill()
            process.join()
    except ValueError:  # retired (closed) meanwhile
        pass


def _ended(code: int | None) -> str:
    if code is None:
        return "stopped answering"
    if code < 0:
        return f"was killed by signal {-code}"
    return f"exited with status {code}"
