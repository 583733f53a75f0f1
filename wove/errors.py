"""Every error Wove raises for misuse or for a task's fate.

Each class derives from :class:`WoveError` and from the built-in class a user would
already catch, so ``except NameError`` and ``except wove.WoveError`` both work.
"""

from __future__ import annotations

from typing import Any


class WoveError(Exception):
    """Base class of every error raised by Wove itself."""


class DefinitionError(WoveError, TypeError):
    """A task, or a ``Weave`` class, is defined in a way Wove cannot run."""


class InvalidOptionError(WoveError, ValueError):
    """A task or weave option has a value outside its range."""


class UnresolvedNameError(WoveError, NameError):
    """A task parameter or map source names nothing the weave provides."""


class ReservedNameError(WoveError, NameError):
    """A task or keyword uses a name Wove keeps for itself."""


class MappingError(WoveError, TypeError):
    """A mapped task's source value cannot be iterated."""


class CircularDependencyError(WoveError, RuntimeError):
    """The tasks depend on each other in a loop; nothing was run."""

    def __init__(self, message: str, cycle: tuple[str, ...]) -> None:
        super().__init__(message)
        self.cycle = cycle

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuilt(self, str(self), self.cycle)


class MissingDependencyError(WoveError, ImportError):
    """An optional dependency a feature needs is not installed; the message names the
    ``pip install`` line."""


class DetachError(WoveError, OSError):
    """A detached child process could not be started."""


class UnknownNameError(WoveError, KeyError, AttributeError):
    """``w.result["name"]`` or ``w.result.name`` for a name that is no task or keyword
    of the weave (a ``KeyError`` and an ``AttributeError``, so ``getattr`` defaults and
    ``hasattr`` work)."""

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0]) if self.args else ""


class WeaveStateError(WoveError, RuntimeError):
    """A weave (or ``merge``) was used at a point of its lifecycle where it cannot be."""


class TaskTimeout(WoveError, TimeoutError):
    """A task (or one item of a mapped task) ran past its ``timeout``.

    ``merged`` names the function when the task is a ``merge()`` call's (whose
    ``timeout=`` is given on that call): the message then names the call, not the task.
    """

    def __init__(
        self, task: str, seconds: float, index: int | None = None, merged: str | None = None
    ) -> None:
        what = f"task {task!r}" if merged is None else f"merge({merged})"
        where = what if index is None else f"item {index} of {what}"
        given_on = "@w.do" if merged is None else "the merge() call"
        super().__init__(
            f"{where} did not finish within its timeout of {seconds:g} s; "
            f"raise `timeout=` on {given_on} if the work is legitimately slower"
        )
        self.task = task
        self.seconds = seconds
        self.index = index
        self.merged = merged

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuilt(self, self.task, self.seconds, self.index, self.merged)


class MaxPendingError(WoveError, RuntimeError):
    """A mapped task has more items than ``max_pending`` allows; none of them started."""

    def __init__(self, task: str, items: int, max_pending: int) -> None:
        super().__init__(
            f"mapped task {task!r} has {items} items, which exceeds max_pending="
            f"{max_pending}; none of them started: map over fewer items, or raise the "
            f"limit with weave(max_pending=...) or wove.config(max_pending=...)"
        )
        self.task = task
        self.items = items
        self.max_pending = max_pending

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuilt(self, self.task, self.items, self.max_pending)


class TaskCancelled(WoveError, RuntimeError):
    """Reading the result of a task that was cancelled because another task failed."""

    def __init__(self, task: str, cause: BaseException | None) -> None:
        because = f" because {type(cause).__name__}: {cause}" if cause is not None else ""
        super().__init__(f"task {task!r} was cancelled{because}; it has no result")
        self.task = task
        self.cause = cause

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuilt(self, self.task, self.cause)


class RemoteTaskError(WoveError, RuntimeError):
    """A task run in a remote environment failed, and its exception could not be rebuilt
    here (its class is not importable, or it cannot be unpickled); or the remote engine
    itself failed it (the worker was lost, the task was revoked or refused).

    ``remote_type`` is the exception's type name as the worker saw it, ``remote_message``
    its message and ``remote_traceback`` the worker's formatted traceback (also attached
    to the exception as a note, so it is printed with it).
    """

    def __init__(
        self, task: str, remote_type: str, remote_message: str, remote_traceback: str | None
    ) -> None:
        super().__init__(f"task {task!r} failed remotely: {remote_type}: {remote_message}")
        self.task = task
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback

    def __reduce__(self) -> tuple[Any, ...]:
        # The instance's own attributes (may_have_started of a RemoteWorkerLost, notes)
        # travel as its state.
        return _rebuilt(
            self, self.task, self.remote_type, self.remote_message, self.remote_traceback
        )

    #: Whether the function may have started on the worker: a caller may resend a call
    #: that certainly never started; one that may have started could run twice.
    may_have_started: bool = True


class RemoteNeverRan(RemoteTaskError):
    """The function never ran: the call was refused (a bad signature, an unknown
    environment, a replay), expired while queued, or was never delivered. Resending it
    is safe, and ``retries=`` does."""

    may_have_started = False


class RemoteResultLost(RemoteTaskError):
    """The function ran (it may have finished) but its result or error never reached the
    caller: the result backend failed while it was stored or read. Resending could run
    non-idempotent work twice, so ``retries=`` does not, unless the task is declared
    idempotent."""


class RemoteWorkerLost(RemoteTaskError):
    """The worker holding the call was lost (killed, out of memory, its machine gone)
    and its liveness signal stopped. ``may_have_started`` says whether the function may
    have started before (a call claimed by a worker may have)."""

    def __init__(
        self,
        task: str,
        remote_type: str,
        remote_message: str,
        remote_traceback: str | None,
        *,
        may_have_started: bool = True,
    ) -> None:
        super().__init__(task, remote_type, remote_message, remote_traceback)
        self.may_have_started = may_have_started


def _rebuilt(error: BaseException, *arguments: Any) -> tuple[Any, ...]:
    """What pickles an error whose ``__init__`` takes other arguments than its message
    (the default rebuilds it from ``args``, the message alone, and fails): the class, the
    arguments of its ``__init__``, and its attributes, notes included. An error of a task
    can cross a process (a detached or remote weave's ``on_done``, a worker's reply)."""
    return (type(error), arguments, dict(error.__dict__))
