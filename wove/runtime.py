"""Process-wide runtime settings: ``wove.configure(...)`` (also reachable through
``wove.config(...)``, which sets task defaults as well: see :mod:`.process_defaults`)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

from . import detach, lanes
from .errors import InvalidOptionError
from .task_spec import UNSET, _Unset


@dataclass(frozen=True, slots=True)
class Settings:
    #: The most threads the shared pool runs at once (sync tasks of all weaves).
    max_threads: int = 256
    #: With ``debug=True``, tasks still running after this many seconds are reported.
    stuck_after: float = 5.0
    #: File that detached children's stdout and stderr are appended to; None: /dev/null.
    detached_output: str | None = None
    #: Seconds a forked detached child has to start its work before it is killed and
    #: reported; None: never killed for that.
    fork_start_timeout: float | None = 5.0
    #: Whether sync tasks that do not choose run on the caller's thread: a bool, or a
    #: function called on the caller's thread when a weave starts (an integration's
    #: policy, e.g. "inside a database transaction").
    thread_sensitive: bool | Callable[[], bool] = False

    def thread_sensitive_now(self) -> bool:
        policy = self.thread_sensitive
        return bool(policy()) if callable(policy) else policy


_settings = Settings()
_lock = threading.Lock()


def settings() -> Settings:
    return _settings


def configure(
    *,
    max_threads: int | None = None,
    stuck_after: float | None = None,
    detached_output: str | _Unset | None = UNSET,
    thread_sensitive: bool | Callable[[], bool] | None = None,
    fork_start_timeout: float | _Unset | None = UNSET,
) -> Settings:
    """Change process-wide settings; arguments left ``None`` keep their value.

    ``max_threads`` bounds the shared thread pool that runs sync tasks (default 256, so
    a weave mapping 200 blocking calls runs them all at once; lower it to bound database
    connections). ``stuck_after`` is the delay after which ``debug=True`` weaves report
    the tasks still running, by name. ``detached_output`` is a file path that detached
    children (``background=True, fork=True``) append their stdout and stderr to (default
    ``None``: ``/dev/null``). ``thread_sensitive`` is the default for sync tasks and
    weaves that do not choose: ``True`` runs them on the caller's thread, or a function
    deciding per weave (the Django integration installs one). ``fork_start_timeout``
    (default 5 s) is how long a forked detached child (``fork=True``) has to start its
    work: one still stuck past it (a lock another thread held at the fork, say) is
    killed, logged, and its ``on_done`` called in this process with a failed result
    (:class:`DetachError`); ``None`` never kills it.
    """
    global _settings
    if max_threads is not None and (type(max_threads) is not int or max_threads < 1):
        raise InvalidOptionError(f"max_threads must be an int >= 1, got {max_threads!r}")
    if stuck_after is not None and (
        not isinstance(stuck_after, int | float)
        or isinstance(stuck_after, bool)
        or stuck_after <= 0
    ):
        raise InvalidOptionError(
            f"stuck_after must be a number of seconds > 0, got {stuck_after!r}"
        )
    if thread_sensitive is not None and not (
        isinstance(thread_sensitive, bool) or callable(thread_sensitive)
    ):
        raise InvalidOptionError(
            f"thread_sensitive must be a bool or a function returning one, got {thread_sensitive!r}"
        )
    if fork_start_timeout is not UNSET and fork_start_timeout is not None:
        if (
            not isinstance(fork_start_timeout, int | float)
            or isinstance(fork_start_timeout, bool)
            or not fork_start_timeout > 0
        ):
            raise InvalidOptionError(
                f"fork_start_timeout must be a number of seconds > 0, or None for no "
                f"limit, got {fork_start_timeout!r}"
            )
        fork_start_timeout = float(fork_start_timeout)
    with _lock:
        _settings = replace(
            _settings,
            max_threads=_settings.max_threads if max_threads is None else max_threads,
            stuck_after=_settings.stuck_after if stuck_after is None else float(stuck_after),
            detached_output=(
                _settings.detached_output if detached_output is UNSET else detached_output
            ),
            thread_sensitive=(
                _settings.thread_sensitive if thread_sensitive is None else thread_sensitive
            ),
            fork_start_timeout=(
                _settings.fork_start_timeout
                if isinstance(fork_start_timeout, _Unset)
                else fork_start_timeout
            ),
        )
        lanes.set_max_threads(_settings.max_threads)
        detach.set_output(_settings.detached_output)
    return _settings
