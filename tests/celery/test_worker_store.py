"""The worker's store of a reply, against a real Redis: its short retry policy applies
to that store only, never to the thread's later use of its cached backend."""

from __future__ import annotations

import json
from typing import Any

import pytest
from celery import Celery

from wove.contrib.celery import CeleryEnv, results
from wove.contrib.celery.results import json_backend
from wove.contrib.celery.worker import _store

pytestmark = pytest.mark.slow


@pytest.mark.timeout(60)
def test_store_leaves_the_thread_s_backend_retry_policy_as_it_was(redis_server: Any) -> None:
    app = Celery("store-test", broker=redis_server.url, backend=redis_server.url)
    try:
        env = CeleryEnv(app, keys=["store-test-key-" + "s" * 40], lease=4.0, heartbeat=1.0)
        backend = json_backend(app)
        before = dict(backend.retry_policy)
        reply = json.dumps({"ok": True}).encode()

        _store(backend, env, "store-test-task", reply, None, {"worker": "here"})

        assert json_backend(app) is backend  # the thread's cached backend
        assert backend.retry_policy == before
        stored = backend.get_task_meta("store-test-task")
        assert stored["status"] == "SUCCESS"
        assert stored["result"] is not None  # the sealed reply, stored
    finally:
        json_backend(app).client.connection_pool.disconnect()
        # The thread's cache is keyed by id(app): a later app must not find this one's.
        results._local.backends.pop(id(app), None)
        app.close()
