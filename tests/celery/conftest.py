"""Shared by the Celery integration's tests (part of the core session: no Django).

A real Redis (redisserver.py) on a free port of 127.0.0.1 and a real ``celery worker``
(worker.py) running ``celery_testapp``, both started once per session and stopped by PID
afterwards, whatever happened. Nothing is skipped: without ``redis-server`` the fixtures
fail and say to run ``make redis``.

pytest puts this directory on ``sys.path`` (rootdir-based "prepend" imports, as for
tests/starlette), so ``celery_testapp``, ``redisserver`` and ``worker`` import directly.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from redisserver import RedisServer, start_redis
from worker import Worker, start_worker


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def celery_worker(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    # celery_testapp reads the broker from the environment when it is first imported:
    # set it here, in the test process, before anything imports it.
    os.environ["WOVE_TEST_REDIS_URL"] = redis_server.url
    import celery_testapp

    assert redis_server.url == celery_testapp.REDIS_URL, "celery_testapp was imported too early"
    worker = start_worker(
        "celery_testapp",
        broker_url=redis_server.url,
        env_extra={},
        directory=tmp_path_factory.mktemp("celery"),
    )
    try:
        yield worker
    finally:
        try:
            worker.stop()
        finally:
            celery_testapp.app.close()  # the client's pooled connections to this Redis
            os.environ.pop("WOVE_TEST_REDIS_URL", None)


@pytest.fixture
def celery_app(celery_worker: Worker) -> Any:
    """``celery_testapp.app``, the client, talking to the session's Redis and worker."""
    import celery_testapp

    return celery_testapp.app
