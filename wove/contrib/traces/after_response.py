"""The bookkeeping of ``detach()``, shared by the Django and Starlette adapters.

Each request gets a :class:`PendingWork`: ``detach()`` adds to it, and the adapter
takes its items once, to start them (Django: in ``response.close()``; ASGI: after the
last body message), or drops them (the view raised). Adding and taking hold one lock,
so a ``detach()`` racing with the start (from a thread or task the view started) is
either taken with the rest or refused with ``WeaveStateError``: never appended to a
list nobody will read again. An adapter keeps only its glue: when it takes the work,
where the default mode and the recorder come from, and any mode of its own (Django's
``"tasks"``), given to :class:`Detacher` and :func:`start_all`.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
import threading
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from wove import InvalidOptionError, WeaveStateError

from .detached import is_template, run_forked, run_here, start_background
from .forked import Followed, capture_followed
from .request import DETACHED, ActiveRequest, RequestRecorder, describe

logger = logging.getLogger("wove")

BACKGROUND = "background"  # in this process: the name of weave(background=True)
FORK = "fork"  # a detached child process that reports back
CORE_MODES = (BACKGROUND, FORK)


# Frames in these files are the adapters' and this core's, never the user's call site.
_CONTRIB_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def call_site() -> str:
    """``file:line`` of the nearest caller outside ``wove/contrib``: the user's
    ``detach()`` call (or the ``@detach`` line above the decorated function)."""
    frame = sys._getframe(1)
    while frame.f_back is not None and _in_contrib(frame.f_code.co_filename):
        frame = frame.f_back
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


def _in_contrib(filename: str) -> bool:
    if not os.path.isabs(filename):
        filename = os.path.abspath(filename)
    return filename.startswith(_CONTRIB_DIR)


@dataclass(frozen=True, slots=True)
class DetachedWork:
    function: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    mode: str
    #: ``file:line`` of the user's ``detach()``: the origin of the weave that runs it, so
    #: traces and logs point there rather than into wove/contrib.
    origin: str = ""
    #: For modes ``"fork"`` and ``"background"``: what the fork followers (the
    #: OpenTelemetry instrumentation) captured at ``detach()``, in the request's context
    #: (its current span).
    followed: Followed = ()

    @property
    def name(self) -> str:
        target = getattr(self.function, "func", self.function)  # a Django task, a partial
        return getattr(target, "__qualname__", None) or repr(target)


#: Starts one item, given its label and its DETACH trace (None: recording is off).
Starter = Callable[[DetachedWork, str, ActiveRequest | None], None]


class PendingWork:
    """What one request's views registered; its adapter starts or drops it, once."""

    def __init__(
        self,
        method: str,
        path: str,
        *,
        recorder: Callable[[], RequestRecorder | None],
        default_mode: Callable[[], str],
    ) -> None:
        self.method = method
        self.path = path
        self.recorder = recorder  # read when an item starts: None, not recorded
        self.default_mode = default_mode  # read at each detach() (Django's settings)
        self.items: list[DetachedWork] = []
        self.dropped_because: str | None = None  # set by an adapter seeing the view fail
        self.over = False  # taken or dropped: a detach() now would never run
        self._lock = threading.Lock()

    def add(self, item: DetachedWork) -> None:
        with self._lock:
            if self.over:
                raise WeaveStateError(
                    f"detach() was called after the response of {self.method} {self.path} "
                    "was sent (by work that outlived the request, such as a background weave "
                    "or a task the view started), so nothing would start it; run the work "
                    "there directly, or use `with weave(background=True)`"
                )
            self.items.append(item)

    def close(self) -> None:
        """Refuse any later ``detach()``; what is registered stays, for :meth:`take`."""
        with self._lock:
            self.over = True

    def close_if_empty(self) -> bool:
        """Close if nothing is registered (then there is nothing to start): whether it did."""
        with self._lock:
            if not self.items:
                self.over = True
            return self.over

    def take(self) -> list[DetachedWork]:
        """Close, and hand over what was registered (once: a second call gets nothing)."""
        with self._lock:
            self.over = True
            items, self.items = self.items, []
        return items

    def drop(self, reason: str) -> None:
        """The view raised: drop its work (it may rely on what failed), with a warning."""
        self.dropped_because = reason
        self.log_dropped(self.take(), reason)

    def label(self, item: DetachedWork) -> str:
        return f"{item.name} after {self.method} {self.path}"

    def begin(self, label: str) -> ActiveRequest | None:
        """The item's own trace, method DETACH, or None when recording is off."""
        recorder = self.recorder()
        return None if recorder is None else recorder.begin(DETACHED, label, sample=False)

    def log_dropped(self, items: list[DetachedWork], reason: str) -> None:
        for item in items:
            logger.warning(
                "wove: detached work %s of %s %s was not started: %s",
                item.name,
                self.method,
                self.path,
                reason,
            )


class Detacher:
    """An adapter's ``detach()``: where its requests' :class:`PendingWork` is (a
    contextvar, seen from threads and tasks that copy the request's context), its modes
    and their checks."""

    def __init__(
        self,
        name: str,
        *,
        modes: tuple[str, ...],
        missing: str,
        renamed: Mapping[str, str] | None = None,
        check: Callable[[Any, str], None] | None = None,
    ) -> None:
        self.modes = modes
        self.missing = missing  # the error of a detach() outside a request: what to add
        self.renamed = dict(renamed or {})  # old mode name -> new, accepted with a warning
        self.check = check  # the adapter's own refusals, given the function and the mode
        self._pending: contextvars.ContextVar[PendingWork | None] = contextvars.ContextVar(
            f"wove_{name}_detach_pending", default=None
        )

    def enter(self, pending: PendingWork) -> contextvars.Token[PendingWork | None]:
        return self._pending.set(pending)

    def exit(self, token: contextvars.Token[PendingWork | None]) -> None:
        self._pending.reset(token)

    def current(self) -> PendingWork | None:
        """The request's pending work, while the adapter handles a request."""
        return self._pending.get()

    def detach(
        self, function: Any, args: tuple[Any, ...], kwargs: dict[str, Any], mode: Any
    ) -> Any:
        """The body of the adapter's ``detach()``, which must call it directly: a renamed
        mode's warning points two frames up, at the user's call."""
        if isinstance(mode, str) and mode in self.renamed:
            new = self.renamed[mode]
            warnings.warn(
                f'detach(mode="{mode}") is deprecated: the mode is now named "{new}" '
                f'(as in weave(background=True)); use mode="{new}"',
                DeprecationWarning,
                stacklevel=3,
            )
            mode = new
        if function is None:
            if args or kwargs:
                raise InvalidOptionError(
                    "detach() got arguments but no function; call detach(function, *args) "
                    "or use @detach / @detach(mode=...) as a decorator"
                )
            return lambda decorated: self._register(decorated, (), {}, mode)
        return self._register(function, args, kwargs, mode)

    def _register(
        self, function: Any, args: tuple[Any, ...], kwargs: dict[str, Any], mode: str | None
    ) -> Any:
        pending = self._pending.get()
        if pending is None:
            raise WeaveStateError(self.missing)
        chosen = pending.default_mode() if mode is None else mode
        if chosen not in self.modes:
            raise InvalidOptionError(
                f"detach mode must be one of {', '.join(map(repr, self.modes))}, got {chosen!r}"
            )
        if self.check is not None:
            self.check(function, chosen)
        if chosen in CORE_MODES and not callable(function):
            raise InvalidOptionError(f"detach() needs a function to call, got {function!r}")
        if is_template(function) and args:
            raise InvalidOptionError(
                f"detach({function.__name__}, ...) runs a Weave class with keyword data "
                "only; pass its inputs as keywords"
            )
        # Background work may start after the request's context is gone (Django starts
        # it when the response is closed): the followers keep what they need of it now.
        followed = capture_followed() if chosen in (FORK, BACKGROUND) else ()
        pending.add(DetachedWork(function, args, kwargs, chosen, call_site(), followed))
        return function


def start_all(pending: PendingWork, starters: Mapping[str, Starter] | None = None) -> None:
    """Start everything ``pending`` holds without waiting for it (in-process work as
    background weaves), for an adapter on the server's thread; ``starters``: the
    adapter's own modes. One item failing to start does not stop the next."""
    for item in pending.take():
        start = (starters or {}).get(item.mode) or _STARTERS[item.mode]
        _start_one(pending, item, start)


async def run_all(pending: PendingWork) -> None:
    """Run (in-process, in the calling task, one after another) or start (forked)
    everything ``pending`` holds, for an adapter that may hold the request's task. If
    that task is cancelled, the work not yet run is dropped with a warning."""
    items = pending.take()
    for position, item in enumerate(items):
        try:
            if item.mode == BACKGROUND:
                label = pending.label(item)
                active = pending.begin(label)
                await run_here(
                    item.function, item.args, item.kwargs, label, active, item.origin, item.followed
                )
            else:
                _start_one(pending, item, _STARTERS[item.mode])
        except Exception:  # pending.begin() failed: nothing was started
            logger.exception("wove: detached work %s could not be started", item.name)
        except BaseException as exc:  # cancelled: say what will not run
            reason = f"the request's task was stopped ({type(exc).__name__})"
            pending.dropped_because = reason
            pending.log_dropped(items[position + 1 :], reason)
            raise


def _start_one(pending: PendingWork, item: DetachedWork, start: Starter) -> None:
    label = pending.label(item)
    active: ActiveRequest | None = None
    try:
        active = pending.begin(label)
        start(item, label, active)
    except Exception as exc:
        logger.exception("wove: detached work %s could not be started", label)
        if active is not None and not active.finished:
            active.finish(None, error=describe(exc))


def _start_background(item: DetachedWork, label: str, active: ActiveRequest | None) -> None:
    start_background(
        item.function, item.args, item.kwargs, label, active, item.origin, item.followed
    )


def _start_fork(item: DetachedWork, label: str, active: ActiveRequest | None) -> None:
    run_forked(item.function, item.args, item.kwargs, label, active, item.origin, item.followed)


_STARTERS: dict[str, Starter] = {BACKGROUND: _start_background, FORK: _start_fork}
