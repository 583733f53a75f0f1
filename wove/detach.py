"""Detached processes: a weave that outlives the request and the process that ran it.

``fork`` (POSIX): double fork with ``setsid`` in between, the intermediate child reaped at
once, so no zombie is left under a parent that never calls ``wait`` (a gunicorn worker).
In the detached child every inherited descriptor above the standard streams that is not a
regular file or directory is replaced by ``/dev/null``: the child holds no client
connection, listening socket or database socket of the parent's, and a stale object that
later closes or writes "its" socket cannot touch a file the child opened since. Regular
files stay (log files, and SQLite's kept database descriptors). Hooks registered with
:func:`at_detached_child` run first, so integrations can drop inherited resources (such
as database connections) without closing them for the parent.

``spawn``: a fresh interpreter (``python -m wove.spawn_child``) receives the weave
serialized by ``cloudpickle`` on its standard input. For platforms without ``fork``, or
when selected with ``fork="spawn"``.
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import warnings
from collections.abc import Callable
from typing import Any, Final

from . import lanes
from .errors import DetachError, MissingDependencyError
from .fork_start import NotStarted, start_watcher

logger: Final = logging.getLogger("wove")

_child_hooks: list[Callable[[], None]] = []
_output: str | None = None


def at_detached_child(hook: Callable[[], None]) -> Callable[[], None]:
    """Register ``hook`` to run first thing in every detached (forked) child.

    Use it to discard inherited resources that must not be used or closed in the child,
    e.g. database connections shared with the parent. Hooks run after the inherited
    sockets and pipes were replaced by ``/dev/null`` and the standard streams redirected, so
    closing or writing an inherited connection there cannot reach the parent's peer.
    Usable as a decorator.
    """
    _child_hooks.append(hook)
    return hook


def set_output(path: str | None) -> None:
    """Where a detached child's stdout and stderr go (appended); None: /dev/null."""
    global _output
    _output = path


def fork_available() -> bool:
    return hasattr(os, "fork") and hasattr(os, "setsid")


def fork_detached(
    body: Callable[[], int],
    *,
    start_timeout: float | None = None,
    not_started: NotStarted | None = None,
) -> int:
    """Run ``body`` in a fully detached child and return the child's pid at once.

    ``body`` returns the exit status; the child ends with ``os._exit`` so the parent's
    ``atexit`` handlers and finalizers never run in it. ``start_timeout``: seconds the
    child has to reach ``body`` (its inherited descriptors released and the
    :func:`at_detached_child` hooks run); past them it is killed and ``not_started`` is
    called in this process with the :class:`DetachError` saying so (logged when None),
    as it is if the child dies before. None: no watch.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    read_end, write_end = os.pipe()
    started_read, started_write = os.pipe() if start_timeout is not None else (-1, -1)
    with warnings.catch_warnings():
        # 3.12+ warns that forking a multi-threaded process may deadlock the child. The
        # child below only uses state that is re-created after fork (Wove's pools,
        # logging's locks) and runs no inherited thread's work; the start watch kills
        # one that deadlocks anyway.
        warnings.simplefilter("ignore", DeprecationWarning)
        intermediate = os.fork()
        if intermediate == 0:
            _in_intermediate(read_end, write_end, started_read, started_write, body)
    os.close(write_end)
    if started_write != -1:
        os.close(started_write)
    try:
        _, status = os.waitpid(intermediate, 0)  # exits at once: reaped, never a zombie
        data = b""
        while chunk := os.read(read_end, 64):
            data += chunk
    finally:
        os.close(read_end)
    reply = data.decode()
    if not reply.isdigit():
        if started_read != -1:
            os.close(started_read)
        raise DetachError(
            f"the detached child could not be started ({reply or f'exit status {status}'}); "
            f"nothing ran. Check the process limits (ulimit -u) and memory"
        )
    pid = int(reply)
    if start_timeout is not None:
        start_watcher().watch(pid, started_read, start_timeout, not_started)
    return pid


def _in_intermediate(
    read_end: int, write_end: int, started_read: int, started_write: int, body: Callable[[], int]
) -> None:
    status = 1
    try:
        os.close(read_end)
        if started_read != -1:
            os.close(started_read)
        os.setsid()  # a new session: no controlling terminal, not in the server's group
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:
            os.close(write_end)
            os._exit(_in_detached_child(body, started_write))
        os.write(write_end, str(pid).encode())
        status = 0
    except BaseException as error:  # tell the parent why, instead of a bare pid 0
        os.write(write_end, f"{type(error).__name__}: {error}".encode()[:512])
    finally:
        os._exit(status)


def _in_detached_child(body: Callable[[], int], started: int = -1) -> int:
    try:
        # Descriptors first: an inherited connection a hook discards (or that is garbage
        # collected later) then writes to /dev/null, never to the parent's peer.
        release_inherited_descriptors(keep=started)
        _redirect_standard_streams()
        for hook in _child_hooks:
            hook()
        if started != -1:  # the start watch in the parent: the work begins now
            os.write(started, b"s")
            os.close(started)
        return body()
    except BaseException:
        logger.exception("wove: detached child failed")
        return 1


def release_inherited_descriptors(keep: int = -1) -> None:
    """Point every inherited descriptor above 2 that is not a regular file or directory
    (sockets, pipes, terminals, event fds) at /dev/null; ``keep``: one to leave alone
    (the start watch's pipe).

    Regular files stay: they connect to no peer, log handlers keep writing to their
    files, and SQLite keeps (and reuses) descriptors of its database files, so pointing
    those at /dev/null would make the child's own new connection read an empty database.
    """
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in _open_descriptors():
        if fd > 2 and fd != devnull and fd != keep and not _is_file(fd):
            try:
                os.dup2(devnull, fd, inheritable=False)
            except OSError:
                pass
    os.close(devnull)


def _is_file(fd: int) -> bool:
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode) or stat.S_ISDIR(mode)


def _open_descriptors() -> list[int]:
    for listing in ("/proc/self/fd", "/dev/fd"):
        try:
            return sorted(int(name) for name in os.listdir(listing))
        except OSError:
            continue
    try:
        import resource

        limit = min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 65536)
    except (ImportError, ValueError, OSError):
        limit = 1024
    return list(range(3, limit))


def _redirect_standard_streams() -> None:
    stdin = os.open(os.devnull, os.O_RDONLY)
    os.dup2(stdin, 0)
    os.close(stdin)
    if _output is None:
        out = os.open(os.devnull, os.O_WRONLY)
    else:
        out = os.open(_output, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)


# --- spawn -----------------------------------------------------------------------------

SPAWN_EXTRA: Final = 'pip install "wove[spawn]"'


def dumps(payload: Any) -> bytes:
    try:
        import cloudpickle
    except ImportError:
        raise MissingDependencyError(
            f"a detached weave started by spawning a new interpreter needs cloudpickle to "
            f"send its inline functions there; install it with: {SPAWN_EXTRA}"
        ) from None
    return cloudpickle.dumps(payload)  # type: ignore[no-any-return]


def spawn_detached(payload: bytes) -> int:
    """Start ``python -m wove.spawn_child`` in a new session, feed it the payload, and
    return its pid. A reaper thread waits for it, so it never stays a zombie."""
    output = (
        subprocess.DEVNULL
        if _output is None
        else os.open(_output, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    )
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "wove.spawn_child"],
            stdin=subprocess.PIPE,
            stdout=output,
            stderr=subprocess.STDOUT,
            close_fds=True,
            start_new_session=True,
        )
    finally:
        if output != subprocess.DEVNULL:
            os.close(output)
    assert process.stdin is not None
    process.stdin.write(payload)
    process.stdin.close()
    lanes.reap(process)
    return process.pid
