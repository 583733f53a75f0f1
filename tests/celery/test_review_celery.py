"""Review: defects of the Celery integration, each shown by a test that fails now."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery.result import AsyncResult

import wove
from wove import RemoteNeverRan, RemoteTaskError, TaskTimeout, weave
from wove.contrib.celery import TASK_NAME, CeleryEnv, PayloadTooLarge, capture
from wove.contrib.celery.envelope import seal

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("celery_worker")]


def wait_for(predicate: Any, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _testapp() -> Any:
    import celery_testapp

    return celery_testapp


def _call_body(function: Any) -> bytes:
    return capture.dumps((function, {}, function.__name__, "test"), limit=None, what="", parts=list)


def test_system_exit_in_remote_code_comes_back_as_that_error_not_a_lost_worker() -> None:
    with pytest.raises(SystemExit) as caught, weave() as w:

        @w.do(env="celery", timeout=15)
        def bye() -> None:
            raise SystemExit(3)

    assert caught.value.code == 3
    assert "remote traceback" in "\n".join(caught.value.__notes__)


def test_a_refused_envelope_comes_back_as_remote_task_error_naming_envelope_error(
    celery_app: Any,
) -> None:
    stranger = CeleryEnv(celery_app, keys=["unknown-to-the-worker-" + "q" * 40])
    remove = wove.register_env("stranger", stranger)
    try:
        with pytest.raises(RemoteTaskError) as caught, weave() as w:

            @w.do(env="stranger", timeout=15)
            def refused() -> int:
                return 1

    finally:
        remove()
    error = caught.value
    # Refused before anything was unpickled: the function never ran, resending is safe.
    assert isinstance(error, RemoteNeverRan)
    assert error.may_have_started is False
    assert error.remote_type.endswith("EnvelopeError"), error.remote_type
    assert error.remote_message.startswith("no CeleryEnv is registered as 'stranger'"), (
        error.remote_message
    )


def test_a_detached_weave_too_large_names_what_on_done_captured() -> None:
    blob = b"x" * 2_000_000

    def on_done(result: wove.WoveResult) -> None:
        print(len(blob))

    too_large = pytest.raises(PayloadTooLarge, match="on_done: captured variable 'blob'")
    with too_large, weave(background=True, env="celery", on_done=on_done) as w:

        @w.do
        def small() -> int:
            return 1


def test_sending_a_remote_call_does_not_block_the_event_loop_past_its_timeout() -> None:
    # A broker that accepts connections and never answers (an overloaded or
    # half-open one). The caller's timeout=0.5 must still fire on time.
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)
    app = Celery(
        "blackhole",
        broker=f"redis://127.0.0.1:{hole.getsockname()[1]}/0",
        backend=_testapp().REDIS_URL,
        set_as_current=False,
    )
    app.conf.broker_connection_retry_on_startup = True
    app.conf.broker_transport_options = {"socket_timeout": 3, "socket_connect_timeout": 3}
    remove = wove.register_env("blackhole", CeleryEnv(app, keys=_testapp().WOVE_KEYS))
    ticks: list[float] = []

    async def main() -> None:
        async with weave() as w:

            @w.do
            async def ticker() -> None:
                for _ in range(20):
                    await asyncio.sleep(0.01)
                    ticks.append(time.perf_counter())

            @w.do(env="blackhole", timeout=0.5)
            def remote() -> int:
                return 1

    start = time.perf_counter()
    try:
        with pytest.raises(TaskTimeout):
            asyncio.run(main())
    finally:
        remove()
        hole.close()
    elapsed = time.perf_counter() - start
    assert elapsed < 1.5, f"the loop was blocked: the weave took {elapsed:.1f} s"


def _big_result() -> bytes:
    return b"z" * 50_000


def test_two_environments_sharing_keys_each_keep_their_own_max_payload(celery_app: Any) -> None:
    # In Django every environment's KEYS default to SECRET_KEY: environments share keys.
    keys = ["shared-by-two-envs-" + "k" * 40]
    small = CeleryEnv(celery_app, keys=keys, max_payload=10_000)
    large = CeleryEnv(celery_app, keys=keys, max_payload=None)
    removers = [wove.register_env("small", small), wove.register_env("large", large)]
    outcomes = {}
    try:
        for name, env in (("small", small), ("large", large)):
            task_id = f"{name}-{os.urandom(4).hex()}"
            envelope = seal(env.keyring, "call", task_id, _call_body(_big_result))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # redis-py setex
                celery_app.tasks[TASK_NAME].apply(
                    args=[envelope], kwargs={"env": name}, task_id=task_id
                )
            meta = celery_app.backend.get_task_meta(task_id)
            try:
                env._outcome("big", task_id, meta["status"], meta["result"], None)
                outcomes[name] = "ok"
            except PayloadTooLarge:
                outcomes[name] = "too large"
    finally:
        for remove in removers:
            remove()
    assert outcomes == {"small": "too large", "large": "ok"}


class _Pwn:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (Path.write_text, (self.path, "pwned"))


def test_nothing_from_the_result_backend_is_unpickled_before_verification(
    tmp_path: Path,
) -> None:
    # An app whose result serializer is pickle (still common in old projects).
    app = Celery(
        "pickly",
        broker=_testapp().REDIS_URL,
        backend=_testapp().REDIS_URL,
        set_as_current=False,
    )
    app.conf.update(result_serializer="pickle", accept_content=["json", "pickle"])
    remove = wove.register_env("pickly", CeleryEnv(app, keys=_testapp().WOVE_KEYS))
    started, pwned = tmp_path / "started", tmp_path / "pwned"
    over = threading.Event()

    def forge() -> None:  # someone who can write to the result backend, without our keys
        while not (started.exists() and started.read_text()) and not over.is_set():
            time.sleep(0.02)
        if over.is_set():
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            app.backend.store_result(started.read_text(), _Pwn(pwned), "SUCCESS")

    forger = threading.Thread(target=forge)
    forger.start()
    try:
        with contextlib.suppress(Exception), weave() as w:  # genuine, or refused

            @w.do(env="pickly", timeout=10)
            def slow() -> str:
                from celery import current_task

                started.write_text(current_task.request.id)
                time.sleep(3)
                return "genuine"

    finally:
        over.set()
        forger.join()
        remove()
    assert not pwned.exists(), "the caller unpickled a forged result before verifying it"


def test_a_replayed_call_envelope_is_not_run_twice(tmp_path: Path, celery_app: Any) -> None:
    runs = tmp_path / "runs"

    def charge() -> str:
        with runs.open("a") as file:
            file.write("x")
        return "charged"

    keyring = _testapp().wove.environments.get_env("celery").keyring
    task_id = "replayed-" + os.urandom(4).hex()
    envelope = seal(keyring, "call", task_id, _call_body(charge))
    celery_app.send_task(
        TASK_NAME, args=[envelope], kwargs={"env": "celery"}, task_id=task_id, ignore_result=True
    )
    result = AsyncResult(task_id, app=celery_app)
    wait_for(lambda: result.state == "SUCCESS", what="the first run")
    assert runs.read_text() == "x"
    # Someone who can publish to the broker sends the very same message again.
    celery_app.send_task(
        TASK_NAME, args=[envelope], kwargs={"env": "celery"}, task_id=task_id, ignore_result=True
    )
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and runs.read_text() == "x":
        time.sleep(0.05)
    assert runs.read_text() == "x", "the replayed envelope ran again"
