"""A broker that does not answer holds up the messages of its own environment only.

Each environment sends from its own thread: a publish to a broker that accepted the
connection and never answers waits as long as its client lets it (kombu retries a
connection for minutes), and the sends of another environment must not queue behind it.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

import wove
from wove import TaskTimeout, weave
from wove.contrib.celery import CeleryEnv

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("celery_worker")]


@pytest.fixture
def silent_broker() -> Iterator[str]:
    """A Redis URL on 127.0.0.1 whose server accepts connections and never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:  # the accept timeout: look at stop again
                continue

    acceptor = threading.Thread(target=accept, name="silent-broker", daemon=True)
    acceptor.start()
    try:
        yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    finally:
        stop.set()
        acceptor.join()
        for connection in accepted:
            connection.close()
        server.close()


@pytest.mark.timeout(60)
def test_a_broker_that_does_not_answer_holds_up_only_its_own_environment(
    silent_broker: str, celery_app: Any
) -> None:
    app = Celery("silent", broker=silent_broker, backend=celery_app.conf.result_backend)
    remove = wove.register_env("silent", CeleryEnv(app, keys=["s" * 32]))
    try:
        with pytest.raises(TaskTimeout), weave() as w:

            @w.do(env="silent", timeout=0.5)
            def stuck() -> int:
                return 1

        # The silent environment's thread still waits on its broker's answer.
        with weave() as other:

            @other.do(env="celery", timeout=20)
            def answered() -> int:
                return 2

        assert other.result.answered == 2
    finally:
        remove()
