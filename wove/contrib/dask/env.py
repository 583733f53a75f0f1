"""``DaskEnv``: the remote environment that runs tasks on a Dask ``distributed`` cluster.

The caller's side. The environment owns one event loop thread with one asynchronous
``distributed.Client`` (``Client(address, asynchronous=True)``), so every weave, whatever
loop or thread it runs on, shares one connection to the scheduler. A call is submitted
there (``client.submit``, its own key, ``pure=False``) and its Dask future awaited; the
caller's coroutine awaits that through :func:`asyncio.wrap_future`. Cancelling the call
cancels the Dask future.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import uuid
from collections.abc import Coroutine
from typing import Any, Final, TypeVar

from distributed import Client
from distributed.client import FutureCancelledError

from wove import InvalidOptionError, RemoteNeverRan, RemoteWorkerLost, annotate
from wove.contrib.remote import capture, replies
from wove.contrib.remote.tracing import trace_context
from wove.lowlevel import DetachedWeave, RemoteCall

from .worker import run_call, run_weave

logger: Final = logging.getLogger("wove")

T = TypeVar("T")


class DaskEnv:
    """A remote environment on a Dask cluster; register it with
    :func:`wove.register_env` in the processes that run weaves (the workers need only
    Wove installed).

    ``address``: the scheduler's address (``"tcp://127.0.0.1:8786"``) or a cluster
    object with one (a ``LocalCluster``). ``max_payload``: the most bytes a result's
    pickled reply may take (None: no limit). ``connect_timeout``: seconds the first call
    waits for the scheduler. Further keyword arguments go to ``distributed.Client``
    (``security=`` for TLS, for example).
    """

    def __init__(
        self,
        address: str | Any,
        *,
        max_payload: int | None = None,
        connect_timeout: float = 30.0,
        **client_options: Any,
    ) -> None:
        scheduler = getattr(address, "scheduler_address", address)
        if not (isinstance(scheduler, str) and scheduler):
            raise InvalidOptionError(
                f"DaskEnv's address must be a scheduler address ('tcp://127.0.0.1:8786') or "
                f"a cluster with one, got {type(address).__name__}"
            )
        if max_payload is not None and (type(max_payload) is not int or max_payload < 1):
            raise InvalidOptionError(
                f"max_payload must be a number of bytes >= 1, or None for no limit, "
                f"got {max_payload!r}"
            )
        self.address = scheduler
        self.max_payload = max_payload
        self.connect_timeout = connect_timeout
        self._options = client_options
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Client | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"DaskEnv(address={self.address!r})"

    # --- the environment's own loop and client ----------------------------------------

    def _on_loop(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        with self._lock:
            if self._loop is None:
                ready = threading.Event()
                self._thread = threading.Thread(
                    target=self._serve, args=(ready,), name="wove-dask-client", daemon=True
                )
                self._thread.start()
                ready.wait()
            assert self._loop is not None
            return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        ready.set()
        loop.run_forever()

    async def _connected(self) -> Client:
        if self._client is None:
            self._client = await Client(  # type: ignore[no-untyped-call]
                self.address,
                asynchronous=True,
                timeout=self.connect_timeout,
                set_as_default=False,
                **self._options,
            )
        return self._client

    def close(self) -> None:
        """Close the client and stop its loop thread; the next call connects again."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return

        async def close() -> None:
            if self._client is not None:
                client, self._client = self._client, None
                await client.close()  # type: ignore[no-untyped-call]

        asyncio.run_coroutine_threadsafe(close(), loop).result(self.connect_timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()

    # --- calls --------------------------------------------------------------------------

    async def run(self, call: RemoteCall) -> Any:
        key = f"wove-{call.task}-{uuid.uuid4().hex}"
        carrier = trace_context()
        future: Any = None

        async def submit() -> Any:
            nonlocal future
            client = await self._connected()
            future = client.submit(
                run_call,
                call.function,
                dict(call.kwargs),
                call.task,
                call.origin,
                carrier,
                key,
                self.max_payload,
                key=key,
                pure=False,
            )
            return await future

        try:
            reply = await asyncio.wrap_future(self._on_loop(submit()))
        except asyncio.CancelledError:  # the weave failed, or the task timed out
            self._cancel(key, lambda: future)
            raise
        except FutureCancelledError as error:
            raise RemoteNeverRan(call.task, "FutureCancelledError", str(error), None) from error
        except Exception as error:
            if type(error).__name__ == "KilledWorker":
                raise RemoteWorkerLost(
                    call.task,
                    "KilledWorker",
                    f"Dask lost the workers that ran call {key} more often than "
                    f"distributed.scheduler.allowed-failures allows: {error}",
                    None,
                    may_have_started=True,
                ) from error
            if isinstance(error, OSError | TimeoutError) and future is None:
                raise RemoteNeverRan(
                    call.task,
                    type(error).__name__,
                    f"could not reach the Dask scheduler at {self.address}: {error}",
                    None,
                ) from error
            raise
        value, info = replies.outcome(call.task, f"Dask task {key}", reply)
        annotate(dask_key=key, worker=info.get("worker"))
        return value

    def _cancel(self, key: str, future: Any) -> None:
        async def cancel() -> None:
            submitted = future()
            if submitted is not None:
                await submitted.cancel(reason="the Wove task was cancelled")

        def report(done: concurrent.futures.Future[None]) -> None:
            if not done.cancelled() and done.exception() is not None:
                logger.warning("wove: could not cancel Dask task %s: %s", key, done.exception())

        self._on_loop(cancel()).add_done_callback(report)

    def detach(self, weave: DetachedWeave) -> str:
        key = f"wove-weave-{uuid.uuid4().hex}"
        carrier = trace_context()
        capture.dumps(  # a clear error now, naming what cannot travel, rather than later
            (weave.run, weave.origin),
            limit=None,
            what=f"the weave at {weave.origin}",
            parts=lambda: [(f"keyword {name!r}", value) for name, value in weave.data.items()],
        )

        async def submit() -> None:
            client = await self._connected()
            future = client.submit(run_weave, weave.run, weave.origin, carrier, key=key)
            # Fire and forget: the scheduler keeps the task although nobody holds it.
            from distributed import fire_and_forget

            fire_and_forget(future)  # type: ignore[no-untyped-call]

        self._on_loop(submit()).result(self.connect_timeout)
        return key
