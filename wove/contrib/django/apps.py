"""``'wove.contrib.django'`` in ``INSTALLED_APPS``: install Wove's Django rules at startup."""

from __future__ import annotations

import threading
from collections.abc import Callable

from django.apps import AppConfig
from django.db import connections as django_connections
from django.db.backends.signals import connection_created

import wove
from wove.lowlevel import add_async_call_wrapper

from . import cancel, conf, connections, hints, queries, task_threads

_lock = threading.Lock()
_removers: list[Callable[[], None]] = []
_forked_hook_added = False
_max_threads_set: tuple[int, int] | None = None  # (the bound before, the one the app set)
_DISPATCH_UID = "wove.contrib.django.queries"
_CANCEL_DISPATCH_UID = "wove.contrib.django.cancel"


def _stop_installing() -> None:
    connection_created.disconnect(dispatch_uid=_DISPATCH_UID)


def _stop_cancelling() -> None:
    connection_created.disconnect(dispatch_uid=_CANCEL_DISPATCH_UID)


class WoveConfig(AppConfig):
    name = "wove.contrib.django"
    label = "wove"
    verbose_name = "Wove"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)

        install()
        conf.on_reload(install)


def install() -> None:
    """Apply the ``WOVE`` settings to the core; again whenever they change.

    Registers the connection hygiene, query counting and query cancelling thread-call
    wrappers, the transaction rule for thread-sensitive defaults, a thread of its own
    for each async task's async ORM calls, the ORM advice on async tasks, the remote
    environments of ``ENVIRONMENTS``, and the forked-child hook that forgets inherited
    connections.
    """
    global _forked_hook_added, _max_threads_set
    with _lock:
        for remove in _removers:
            remove()
        _removers.clear()
        try:
            options = conf.wove_settings()
        except conf.WoveSettingsError:
            return  # the system check reports it, with the same message
        if options.connection_hygiene:
            _removers.append(
                wove.add_thread_call_wrapper(
                    connections.hygiene, at_thread_exit=connections.close_thread_connections
                )
            )
        if options.count_queries:
            queries.configure(options.max_sql_statements, options.sql_params)
            _removers.append(
                wove.add_thread_call_wrapper(queries.count_queries, caller_thread=True)
            )
            connection_created.connect(queries.install_on, dispatch_uid=_DISPATCH_UID)
            _removers.append(_stop_installing)
            for connection in django_connections.all(initialized_only=True):
                queries.install_on(None, connection)  # opened before the app was ready
        # Registered after hygiene, so inside it: a cancel in flight is waited for before
        # hygiene closes or returns the connection. On the caller's thread too: an
        # abandoned thread-sensitive call holds the thread the request's sync code needs.
        _removers.append(wove.add_thread_call_wrapper(cancel.guard, caller_thread=True))
        connection_created.connect(cancel.install_on, dispatch_uid=_CANCEL_DISPATCH_UID)
        _removers.append(_stop_cancelling)
        for connection in django_connections.all(initialized_only=True):
            cancel.install_on(None, connection)
        # Each async task's async ORM calls on a thread of its own (in parallel), inside
        # the hygiene above; inside a transaction, on the caller's thread.
        if options.async_task_threads:
            _removers.append(add_async_call_wrapper(task_threads.own_thread))
        _removers.append(wove.add_error_hint(hints.orm_lane_hint))
        for name, env in options.environments.items():
            _removers.append(wove.register_env(name, env))
        current = wove.settings().thread_sensitive
        if options.atomic == "thread_sensitive":
            wove.configure(thread_sensitive=connections.in_transaction)
        elif current is connections.in_transaction:
            wove.configure(thread_sensitive=False)
        if options.max_threads is not None:
            before = wove.settings().max_threads
            if _max_threads_set is not None:
                before = _max_threads_set[0]
            wove.configure(max_threads=options.max_threads)
            _max_threads_set = (before, options.max_threads)
        elif _max_threads_set is not None:
            before, applied = _max_threads_set
            _max_threads_set = None
            if wove.settings().max_threads == applied:  # not changed by the project since
                wove.configure(max_threads=before)
        # detach(mode="fork") children: how long one may take to start before it is killed.
        wove.configure(fork_start_timeout=options.fork_start_timeout)
        if not _forked_hook_added:
            wove.at_detached_child(connections.forget_inherited_connections)
            _forked_hook_added = True
