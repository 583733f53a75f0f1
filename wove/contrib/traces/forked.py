"""Traces of work run in a detached (forked) child, sent back to the parent's store.

A forked child cannot add to the parent's in-memory store, and its own logging may go
nowhere. So the parent opens a Unix socket (lazily, once per process, in a private
temporary directory) and waits for each child it starts to connect and send one JSON
report: its trace records and its error. The parent logs the error under its own
logging configuration and files the trace as usual. A child killed before it reports
leaves nothing to file; the parent drops the wait after ``patience`` seconds with a
warning, so nothing waits forever.

A :class:`ForkFollower` (registered with :func:`follow_forks`: the OpenTelemetry
instrumentation, when Wove is instrumented) follows each piece of work there and back:
what it captures at ``detach()`` stays in the parent, its :class:`ChildScope` is current
in the context the child inherits, its ``report()`` rides in the child's report, and the
parent hands both to ``received``. Nothing here knows what a follower records.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, ExitStack
from types import TracebackType
from typing import Any, Protocol

from wove import TraceRecord

from .request import ActiveRequest

logger = logging.getLogger("wove")

_REPORT_LIMIT = 8 * 1024 * 1024  # bytes; a report is records, not payloads
_BODY_KEYS = frozenset(("id", "pid", "records", "error", "traceback"))


class ChildScope(Protocol):
    """A follower's side of one forked piece of work: entered in the parent around the
    fork (what it sets in the context, the child inherits), or, sent through a fork
    server, pickled and entered in the child; read in the child."""

    def __enter__(self) -> object: ...

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...

    def report(self) -> object:
        """In the child, its work done: JSON-able data for :meth:`ForkFollower.received`."""


class ForkFollower(Protocol):
    """Follows detached work into its forked child and back (see the module's text)."""

    #: The field of the child's report that carries this follower's data.
    key: str

    def capture(self) -> object:
        """At ``detach()``, in the parent (the request's context): what to keep for
        this piece of work, given back to :meth:`child_scope` and :meth:`received`."""

    def child_scope(self, captured: object) -> ChildScope:
        """Just before the fork, in the parent: the scope the child runs in."""

    def received(self, captured: object, data: object) -> None:
        """In the parent, on the report's thread: the child's ``report()`` (None when
        the report has no such field)."""

    def resumed(self, captured: object) -> AbstractContextManager[object]:
        """In this process, around work detached in mode ``"background"`` as it starts
        (perhaps after the request's context is gone): make what was captured at
        ``detach()`` current again."""


#: Each follower with what it captured for one piece of work.
Followed = tuple[tuple[ForkFollower, object], ...]

_followers: tuple[ForkFollower, ...] = ()
_followers_lock = threading.Lock()


def follow_forks(follower: ForkFollower) -> Callable[[], None]:
    """Register ``follower`` for every piece of detached work from now on; returns a
    function that unregisters it."""
    global _followers
    with _followers_lock:
        _followers = (*_followers, follower)

    def remove() -> None:
        global _followers
        with _followers_lock:
            _followers = tuple(f for f in _followers if f is not follower)

    return remove


def capture_followed() -> Followed:
    """What each registered follower keeps of the current context (at ``detach()``);
    ``()`` and no cost when none is registered. A follower that fails is left out."""
    followed: list[tuple[ForkFollower, object]] = []
    for follower in _followers:
        try:
            followed.append((follower, follower.capture()))
        except Exception:
            logger.exception("wove: %r could not follow detached work", follower)
    return tuple(followed)


def resume_followed(stack: ExitStack, followed: Followed) -> None:
    """Enter each follower's :meth:`~ForkFollower.resumed` scope on ``stack``; a
    follower that fails is left out."""
    for follower, captured in followed:
        try:
            stack.enter_context(follower.resumed(captured))
        except Exception:
            logger.exception("wove: %r could not follow detached work", follower)


class ForkReports:
    """The parent side: one listening socket and the children it is waiting for."""

    def __init__(self, patience: float = 3600.0) -> None:
        self.patience = patience
        self._lock = threading.Lock()
        self._waiting: dict[str, tuple[OnReport, float]] = {}
        self._path: str | None = None
        self._server: socket.socket | None = None

    def expect(self, active: ActiveRequest, followed: Followed = ()) -> str:
        """Wait for the report of the child about to run ``active``'s work; returns the
        address the child sends it to (give it to :func:`send_report`). ``followed``
        get the report too."""
        return self.expect_report(active.id, functools.partial(_file_trace, active, followed))

    def expect_report(self, report_id: str, on_report: OnReport) -> str:
        """Wait for the report with id ``report_id`` (see :func:`send`); ``on_report``
        gets it on the listener's thread, or None if it does not come within
        ``patience`` seconds. Returns the address the child sends it to."""
        with self._lock:
            if self._server is None:
                self._listen()
            self._waiting[report_id] = (on_report, time.monotonic() + self.patience)
            assert self._path is not None
            return self._path

    def abandon(self, active: ActiveRequest, error: str) -> None:
        """The child never started: finish the trace with ``error`` now."""
        self.forget(active.id)
        active.finish(None, error=error)

    def forget(self, report_id: str) -> None:
        """The child never started: stop waiting for its report."""
        with self._lock:
            self._waiting.pop(report_id, None)

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    def _listen(self) -> None:
        directory = tempfile.mkdtemp(prefix="wove-reports-")
        # The serving thread is a daemon, so its cleanup never runs at exit: this does.
        atexit.register(_remove_directory, directory, os.getpid())
        self._path = os.path.join(directory, "reports.sock")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(self._path)
        server.listen(64)
        server.settimeout(1.0)
        self._server = server
        threading.Thread(
            target=self._serve, args=(server, directory), name="wove-fork-reports", daemon=True
        ).start()

    def _serve(self, server: socket.socket, directory: str) -> None:
        try:
            while True:
                try:
                    connection, _ = server.accept()
                except TimeoutError:
                    self._expire()
                    continue
                except OSError:
                    return  # closed
                with connection:
                    connection.settimeout(10.0)
                    try:
                        self._file(_receive(connection))
                    except Exception:
                        logger.exception("wove: a detached child sent an unreadable report")
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def _file(self, report: dict[str, Any]) -> None:
        with self._lock:
            entry = self._waiting.pop(str(report.get("id")), None)
        if entry is not None:  # else expired, or not ours
            entry[0](report)

    def _expire(self) -> None:
        now = time.monotonic()
        with self._lock:
            late = [key for key, (_, deadline) in self._waiting.items() if deadline < now]
            expired = [self._waiting.pop(key)[0] for key in late]
        for on_report in expired:
            try:
                on_report(None)
            except Exception:
                logger.exception("wove: a detached child's missing report could not be filed")


OnReport = Callable[[dict[str, Any] | None], None]
"""Gets a child's report (None: it did not come in time), on the listener's thread."""


def _file_trace(active: ActiveRequest, followed: Followed, report: dict[str, Any] | None) -> None:
    """A :func:`send_report` report: the followers' fields, then the trace."""
    if report is None:
        logger.warning("wove: detached work %s never reported back", active.path)
        active.finish(None, error="no report from the detached child")
        return
    for follower, captured in followed:
        try:
            follower.received(captured, report.get(follower.key))
        except Exception:
            logger.exception("wove: %r could not file a detached child's report", follower)
    for fields in report.get("records", ()):
        active.collect(TraceRecord(**fields))
    error = report.get("error")
    if error:
        logger.error(
            "wove: detached work %s (pid %s) failed: %s\n%s",
            active.path,
            report.get("pid"),
            error,
            report.get("traceback", ""),
        )
    active.finish(None, error=error)


def _remove_directory(directory: str, owner: int) -> None:
    """At exit of the process that listened (not of a child of it that exits normally)."""
    if os.getpid() == owner:
        shutil.rmtree(directory, ignore_errors=True)


def send_report(
    address: str,
    active: ActiveRequest,
    error: str | None,
    traceback: str = "",
    extra: Mapping[str, object] | None = None,
) -> None:
    """The child side: send ``active``'s records and the error (if any) to the parent;
    ``extra``: the followers' fields (see :class:`ForkFollower`)."""
    records = [_record_fields(r) for r in active.snapshot().records]
    body: dict[str, object] = {
        key: value for key, value in (extra or {}).items() if key not in _BODY_KEYS
    }
    body |= {
        "id": active.id,
        "pid": os.getpid(),
        "records": records,
        "error": error,
        "traceback": traceback,
    }
    send(address, body)


def send(address: str, body: Mapping[str, object]) -> None:
    """The child side: send ``body`` (JSON-able; its ``"id"`` says whose report it is)
    to the parent listening at ``address``."""
    data = json.dumps(body, default=repr).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(10.0)
        connection.connect(address)
        connection.sendall(data)


def _record_fields(record: TraceRecord) -> dict[str, Any]:
    return {**record._asdict(), "extra": dict(record.extra)}


def _receive(connection: socket.socket) -> dict[str, Any]:
    chunks: list[bytes] = []
    size = 0
    while chunk := connection.recv(65536):
        size += len(chunk)
        if size > _REPORT_LIMIT:
            raise ValueError(f"report larger than {_REPORT_LIMIT} bytes")
        chunks.append(chunk)
    report = json.loads(b"".join(chunks))
    if not isinstance(report, dict):
        raise ValueError("a report is a JSON object")
    return report


_reports: ForkReports | None = None
_reports_lock = threading.Lock()


def fork_reports() -> ForkReports:
    """This process's report listener (a forked worker gets its own)."""
    global _reports
    with _reports_lock:
        if _reports is None:
            _reports = ForkReports()
        return _reports


def _forget_in_child() -> None:
    global _reports, _reports_lock
    _reports = None
    _reports_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
