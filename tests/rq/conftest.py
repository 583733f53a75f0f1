"""Shared by the RQ tests: a real Redis on a free port of 127.0.0.1 (the Celery tests'
redisserver.py) and a real ``rq worker`` (rqworker.py), both started once per session
and stopped by PID afterwards, whatever happened.

pytest puts this directory on ``sys.path`` (rootdir-based "prepend" imports), so
``rqworker`` and ``rq_wove_settings`` import directly; redisserver.py is loaded from
tests/celery by its path.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from rqworker import RQWorker, start_rq_worker


def _redisserver() -> ModuleType:
    path = Path(__file__).resolve().parent.parent / "celery" / "redisserver.py"
    spec = importlib.util.spec_from_file_location("rq_tests_redisserver", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


redisserver = _redisserver()


@pytest.fixture(scope="session")
def rq_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    server = redisserver.start_redis(tmp_path_factory.mktemp("rq-redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def rq_settings(rq_redis: Any) -> Iterator[ModuleType]:
    """The environments, registered here as in the worker."""
    os.environ["WOVE_TEST_RQ_URL"] = rq_redis.url
    import rq_wove_settings

    assert rq_redis.url == rq_wove_settings.REDIS_URL, "rq_wove_settings was imported too early"
    try:
        yield rq_wove_settings
    finally:
        os.environ.pop("WOVE_TEST_RQ_URL", None)


@pytest.fixture(scope="session")
def rq_worker(
    rq_redis: Any, rq_settings: ModuleType, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RQWorker]:
    worker = start_rq_worker(rq_redis.url, rq_settings.QUEUE, tmp_path_factory.mktemp("rqw"))
    try:
        yield worker
    finally:
        worker.stop()
