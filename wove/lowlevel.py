"""What ``wove.contrib`` (and any integration) may use of the core beyond ``wove.__all__``.

The framework adapters and remote environments are built on the public API plus the
names here, and nothing else of the core: a test checks that no module under
``wove/contrib`` imports any other core module. These names are documented, typed and
kept stable within a minor version; everything else in the core may change at any time.

Tracing
    :func:`annotating` tells whether the current task call is traced (so an integration
    need not even measure what nobody records). :func:`add_instrument` registers a
    process-wide :class:`Instrument` that opens a scope for every weave run
    (:class:`WeaveScope`) and every task attempt (:class:`AttemptScope`), each in the
    context it runs in, on whichever lane: what the OpenTelemetry instrumentation is
    built on. :func:`collecting_raw` is :func:`wove.collecting` for a collector that
    keeps few of the attempts it sees (the adapters' sampled request traces): it gets
    each as a plain :data:`RawRecord` tuple and makes the :class:`~wove.TraceRecord` of
    the ones it keeps with :func:`build_record`.
Async task calls
    :func:`add_async_call_wrapper` wraps every async task call, and hands it the thread
    its thread-sensitive sync work belongs on (its own, from Wove's pool; or the
    caller's, inside a transaction): the Django adapter runs each async task's ORM
    queries there.
Sync calls under a timeout
    :func:`on_abandon` and :func:`call_abandoned`: database integrations cancel the
    running query of a call abandoned at its timeout, and start no new one.
Threads
    :func:`start_service` starts a process-wide service thread that logs and survives an
    unexpected error; :data:`logger` is the ``wove`` logger.
Remote environments
    :class:`RemoteCall`, :class:`DetachedWeave` and :func:`get_env`.
Detached processes
    :func:`running_fork_server` is this process's fork server (None without one):
    an adapter that forks its detached work sends it there instead
    (:meth:`ForkServer.submit`), see :func:`wove.start_fork_server`.
    :func:`follow_detached` registers a :data:`DetachFollower`, asked in the parent
    about each ``weave(background=True, fork=...)``; its :class:`DetachedChild` runs
    the child's work there (the OpenTelemetry spans of a detached child come back so).
Weaves
    :func:`weave_at` is ``weave`` naming its weave after a given ``file:line`` (an
    integration starting a weave for its user's call).
Tasks
    :func:`is_async_callable` says whether Wove runs a callable as an async task;
    :data:`RESERVED_NAMES` are the names a task or keyword cannot take.
"""

from __future__ import annotations

from .detached_followers import ChildMode, DetachedChild, DetachFollower, follow_detached
from .engine.timed import call_abandoned, on_abandon
from .environments import DetachedWeave, RemoteCall, get_env
from .fork_server import ForkServer, running_fork_server
from .lanes.hooks import add_async_call_wrapper
from .lanes.services import logger, start_service
from .result import RESERVED_NAMES
from .task_spec import is_async_callable
from .tracing import (
    AttemptScope,
    Instrument,
    RawRecord,
    WeaveScope,
    add_instrument,
    annotating,
    build_record,
    collecting_raw,
)
from .weave import weave_at

__all__ = [
    "RESERVED_NAMES",
    "AttemptScope",
    "ChildMode",
    "DetachFollower",
    "DetachedChild",
    "DetachedWeave",
    "ForkServer",
    "Instrument",
    "RawRecord",
    "RemoteCall",
    "WeaveScope",
    "add_async_call_wrapper",
    "add_instrument",
    "annotating",
    "build_record",
    "call_abandoned",
    "collecting_raw",
    "follow_detached",
    "get_env",
    "is_async_callable",
    "logger",
    "on_abandon",
    "running_fork_server",
    "start_service",
    "weave_at",
]
