"""The async ORM in parallel: each async task's thread-sensitive calls on a thread of its own.

Django's async ORM (``aget``, ``acount``, ``async for``) runs each query through
asgiref's ``sync_to_async(thread_sensitive=True)``, which under ASGI sends every call of
a request to one thread: five async tasks of a weave would query one after another. The
async-call wrapper here gives each async task call a ``ThreadSensitiveContext`` of its
own, backed by the thread Wove hands it (``wove.lowlevel.add_async_call_wrapper``): a
thread of Wove's pool, so bounded by ``MAX_THREADS``, whose session is inside the
connection hygiene (the thread's connection is closed, or returned to Django's pool,
when the task call ends). The calls of one task stay on its one thread, in order.

Inside a transaction (the rule of ``WOVE["ATOMIC"]``), Wove hands the caller's thread
instead, so the async ORM runs in the transaction. A sync thread waiting for this loop
through ``async_to_sync`` (an async test, an async view under WSGI) takes precedence in
asgiref: there the calls still go to that thread, as before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any

from asgiref.sync import SyncToAsync, ThreadSensitiveContext


async def own_thread(call: Callable[[], Awaitable[Any]], thread: Executor | None) -> Any:
    """The async-call wrapper: ``call``'s thread-sensitive work goes to ``thread``."""
    if thread is None:
        return await call()
    # Set directly rather than entered (``async with``): an outer context (the request's)
    # would win over a new one without an executor, and only recent asgiref takes ``executor=``.
    context = ThreadSensitiveContext()
    SyncToAsync.context_to_thread_executor[context] = thread
    token = SyncToAsync.thread_sensitive_context.set(context)
    try:
        return await call()
    finally:
        SyncToAsync.thread_sensitive_context.reset(token)
        SyncToAsync.context_to_thread_executor.pop(context, None)
