"""The Celery tests' own machinery: a real Redis and a real worker, stopped by PID."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from redisserver import start_redis
from worker import Worker


@pytest.mark.slow
def test_raw_celery_task_runs_on_the_worker(celery_app: Any, celery_worker: Worker) -> None:
    import celery_testapp

    assert celery_testapp.add.delay(2, 3).get(timeout=10) == 5
    assert "tests.add" in celery_worker.log_text()


@pytest.mark.slow
def test_the_worker_runs_the_same_wove_as_the_client(celery_app: Any) -> None:
    import celery_testapp

    import wove

    assert celery_testapp.wove_file.delay().get(timeout=10) == wove.__file__


@pytest.mark.slow
def test_the_worker_runs_during_the_test(celery_worker: Worker) -> None:
    os.kill(celery_worker.pid, 0)  # raises if it is gone
    assert celery_worker.pid in celery_worker.group_pids()
    # The prefork pool (4 children) shares the parent's process group.
    assert len(celery_worker.group_pids()) >= 2
    assert celery_worker.name.startswith("wove-test-")


@pytest.mark.slow
def test_a_stopped_redis_is_gone_and_stopping_again_does_nothing(tmp_path: Path) -> None:
    server = start_redis(tmp_path)  # a throwaway one, not the session's
    try:
        assert server.ping()
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        os.kill(server.pid, 0)
    finally:
        server.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(server.pid, 0)  # reaped, not a zombie
    assert not server.ping()
    server.stop()
