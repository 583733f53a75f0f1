"""A fork server: detached children forked from a process that never had a second thread.

Forking a threaded server copies whatever locks its other threads held at that instant
(the import machinery's module locks, stdout's, a driver's) into a child with no thread
to release them; measured under load (``python -m bench.forks``), a large share of such
children hang. :func:`start_fork_server`, called while this process still has one
thread (a WSGI module after the application is built, gunicorn's ``post_fork`` hook),
forks a server process that stays single-threaded. From then on every forked detached
weave (``fork=True``, and the web adapters' ``mode="fork"``) is sent to it, serialized
with cloudpickle (``pip install "wove[spawn]"``), and it forks the child: a copy of a
process in which no other thread held anything.

The server and each child it forks release the descriptors they inherited (sockets,
pipes) as detached children do, so neither holds the web server's listening socket or a
client connection. The server exits when this process closes its end of the socket
(it exits, or calls :func:`stop_fork_server`). A process forked from this one (a
gunicorn worker forked from a master that started a server) has no server: it starts
its own.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import socket
import struct
import threading
from collections.abc import Callable
from typing import Final, NoReturn

from . import detach
from .errors import DetachError, WeaveStateError

logger: Final = logging.getLogger("wove")

_HEADER = struct.Struct("!Q")
_SIGNALS = ("SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGCHLD", "SIGWINCH")


class ForkServer:
    """This process's end of a running fork server."""

    def __init__(self, pid: int, connection: socket.socket) -> None:
        self.pid = pid
        self._connection = connection
        self._lock = threading.Lock()
        self._exited = False

    def submit(self, body: Callable[[], int]) -> int:
        """Run ``body`` (picklable by cloudpickle; it returns the exit status) in a
        detached child of the server; the child's pid."""
        payload = detach.dumps(body)
        with self._lock:
            try:
                self._connection.sendall(_HEADER.pack(len(payload)) + payload)
                reply = _receive(self._connection).decode()
            except (OSError, EOFError) as error:
                self.exited()  # reaped now: no zombie left until stop_fork_server()
                raise DetachError(
                    f"the fork server (pid {self.pid}) is gone ({error}); nothing ran. "
                    "Start it again with wove.start_fork_server() while the process has "
                    "one thread, or call wove.stop_fork_server() to detach without it"
                ) from error
        if not reply.isdigit():
            raise DetachError(f"the fork server could not start the detached child: {reply}")
        return int(reply)

    def exited(self) -> bool:
        """Whether the server process has ended (reaped here when it has)."""
        if not self._exited:
            try:
                self._exited = os.waitpid(self.pid, os.WNOHANG)[0] != 0
            except ChildProcessError:  # reaped by someone else
                self._exited = True
        return self._exited

    def close(self) -> None:
        """Close this end: the server exits."""
        with self._lock:
            self._connection.close()

    def close_copy(self) -> None:
        """In a process forked from the one that started the server: close the copy of
        its end, so the server still exits with that process. No lock: the child has
        no other thread, and the parent's holder of the lock is not here."""
        self._connection.close()


_server: ForkServer | None = None
_server_lock = threading.Lock()


def start_fork_server() -> int:
    """Start this process's fork server (see the module's text); its pid.

    Call it while this process has only its main thread, after the application is
    loaded (so the children need not import it again): in a WSGI module after
    ``get_wsgi_application()``, or in gunicorn's ``post_fork`` hook with ``--preload``.
    Raises :class:`WeaveStateError` if another thread runs, or a server already does.
    """
    global _server
    detach.dumps(None)  # needs cloudpickle: say so now, not at the first detach
    if not detach.fork_available():
        raise DetachError("a fork server needs os.fork (POSIX); use fork='spawn'")
    with _server_lock:
        if _server is not None:
            if not _server.exited():
                raise WeaveStateError(f"a fork server already runs (pid {_server.pid})")
            _server.close()  # it died (killed, say): replaced by the one started now
        others = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
        if others or threading.current_thread() is not threading.main_thread():
            raise WeaveStateError(
                "start_fork_server() must run while the process has only its main thread, "
                "so the server copies no lock another thread holds; threads running: "
                f"{others or ['(called from a thread other than the main one)']}. Call it "
                "earlier: in the WSGI module after the application is built, or in "
                "gunicorn's post_fork hook"
            )
        ours, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:
            ours.close()
            _serve(theirs)
        theirs.close()
        _server = ForkServer(pid, ours)
        return pid


def running_fork_server() -> ForkServer | None:
    """This process's fork server, or None when none was started here."""
    return _server


def stop_fork_server() -> None:
    """Stop this process's fork server, if any (children it started run on)."""
    global _server
    with _server_lock:
        server, _server = _server, None
    if server is not None:
        server.close()
        if not server.exited():
            try:
                os.waitpid(server.pid, 0)  # it exits on the closed socket: reap it
            except ChildProcessError:
                pass


def _serve(connection: socket.socket) -> NoReturn:
    """The server's loop, in the forked server process: one request at a time."""
    status = 0
    try:
        for name in _SIGNALS:  # not the web server's handlers: the default actions
            number = getattr(signal, name, None)
            if number is not None:
                signal.signal(number, signal.SIG_DFL)
        # ^C in a terminal is for the web server; this ends when that one does.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        detach.release_inherited_descriptors(keep=connection.fileno())
        while True:
            try:
                payload = _receive(connection)
            except EOFError:
                break  # the process that started it closed its end, or exited
            try:
                pid = detach.fork_detached(functools.partial(_run, payload))
                reply = str(pid)
            except Exception as error:
                reply = f"{type(error).__name__}: {error}"
            connection.sendall(_HEADER.pack(len(reply)) + reply.encode())
    except BaseException:
        logger.exception("wove: the fork server failed")
        status = 1
    finally:
        os._exit(status)


def _run(payload: bytes) -> int:
    """In a child of the server: the body sent, unpickled here."""
    import cloudpickle

    body = cloudpickle.loads(payload)
    return int(body())


def _receive(connection: socket.socket) -> bytes:
    (size,) = _HEADER.unpack(_exactly(connection, _HEADER.size))
    return _exactly(connection, size)


def _exactly(connection: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = connection.recv(min(left, 1 << 20))
        if not chunk:
            raise EOFError("the other end closed the connection")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _forget_in_child() -> None:
    global _server, _server_lock
    if _server is not None:  # the parent's: a child (a worker forked later) starts its own
        _server.close_copy()
    _server = None
    _server_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
