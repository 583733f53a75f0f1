"""``DaskEnv``: the remote environment that runs tasks on a Dask ``distributed`` cluster.

The caller's side. The environment owns one event loop thread with one asynchronous
``distributed.Client`` (``Client(address, asynchronous=True)``), so every weave, whatever
loop or thread it runs on, shares one connection to the scheduler. A call is submitted
there (its own key, ``pure=False``) and its Dask future awaited; the
caller's coroutine awaits that through :func:`asyncio.wrap_future`. Calls handed over
together (the items of a mapped task) are submitted in one message (``client.map``), and
the replies of calls finished together are fetched in one request per worker.
Cancelling the call cancels the Dask future.
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


class _Submission:
    """One call on its way to the scheduler: batched, then its Dask future."""

    __slots__ = ("call", "carrier", "future", "key", "placed")

    def __init__(self, call: RemoteCall, key: str, carrier: dict[str, str] | None) -> None:
        self.call = call
        self.key = key
        self.carrier = carrier
        self.placed: asyncio.Future[Any]  # set on the client's loop
        self.future: Any = None  # the Dask future, once submitted


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
        self._connecting = asyncio.Lock()  # created here: bound to this loop on 3.11
        self._batch: list[_Submission] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._finished: list[tuple[Any, asyncio.Future[bytes]]] = []
        ready.set()
        loop.run_forever()

    async def _connected(self) -> Client:
        async with self._connecting:  # one connection, however many first calls
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
        item = _Submission(call, key, trace_context())
        try:
            # Cancelling this await cancels the coroutine on the client's loop, which
            # cancels the Dask future (see _submitted).
            reply = await asyncio.wrap_future(self._on_loop(self._submitted(item)))
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
            if isinstance(error, OSError | TimeoutError) and item.future is None:
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

    async def _submitted(self, item: _Submission) -> bytes:
        """On the client's loop: ``item`` submitted with the others of its batch, and
        its reply awaited; cancelled, its Dask future is cancelled."""
        loop = asyncio.get_running_loop()
        item.placed = loop.create_future()
        self._batch.append(item)
        if len(self._batch) == 1:  # after the calls already handed to this loop
            self._spawn(self._flush())
        try:
            future = await item.placed
            await future._state.wait()  # done, here: nothing fetched yet
            if future.status != "finished":
                reply: bytes = await future  # raises its error (KilledWorker, cancelled)
                return reply
            # Fetched with the others finished by now, in one request per worker (a
            # fetch each would cost a round trip each).
            fetched: asyncio.Future[bytes] = loop.create_future()
            self._finished.append((future, fetched))
            if len(self._finished) == 1:
                self._spawn(self._fetch())
            return await fetched
        except asyncio.CancelledError:
            if item.future is not None:
                self._spawn(self._cancelled(item.future, item.key))
            raise

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run ``coroutine`` on the client's loop, kept referenced until it ends."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush(self) -> None:
        """Submit the calls batched so far in one message to the scheduler (a call
        each would cost the scheduler one graph update each)."""
        batch, self._batch = self._batch, []
        try:
            client = await self._connected()
        except Exception as error:
            for item in batch:
                if not item.placed.done():
                    item.placed.set_exception(error)
            return
        batch = [item for item in batch if not item.placed.done()]  # cancelled meanwhile
        if not batch:
            return
        futures = client.map(
            run_call,
            [item.call.function for item in batch],
            [dict(item.call.kwargs) for item in batch],
            [item.call.task for item in batch],
            [item.call.origin for item in batch],
            [item.carrier for item in batch],
            [item.key for item in batch],
            [self.max_payload] * len(batch),
            key=[item.key for item in batch],
            pure=False,
        )
        for item, future in zip(batch, futures, strict=True):
            item.future = future
            item.placed.set_result(future)

    async def _fetch(self) -> None:
        """Hand over the replies of the calls finished so far, fetched together."""
        await asyncio.sleep(0)  # let the calls finishing at the same moment join
        batch, self._finished = self._finished, []
        batch = [(future, fetched) for future, fetched in batch if not fetched.done()]
        if not batch:
            return
        client = await self._connected()
        try:
            replies = await client.gather(  # type: ignore[no-untyped-call]
                [future for future, _ in batch]
            )
        except Exception:  # one of them is gone (released, lost): each on its own
            for future, fetched in batch:
                self._spawn(self._fetch_one(future, fetched))
            return
        for (_, fetched), reply in zip(batch, replies, strict=True):
            if not fetched.done():
                fetched.set_result(reply)

    async def _fetch_one(self, future: Any, fetched: asyncio.Future[bytes]) -> None:
        try:
            reply: bytes = await future
        except BaseException as error:
            if not fetched.done():
                fetched.set_exception(error)
            return
        if not fetched.done():
            fetched.set_result(reply)

    async def _cancelled(self, future: Any, key: str) -> None:
        try:
            await future.cancel(reason="the Wove task was cancelled")
        except Exception as error:
            logger.warning("wove: could not cancel Dask task %s: %s", key, error)

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
