"""The Celery app of the Celery benchmark, in the worker and in the benchmark's process.

The worker runs it with ``celery -A bench.celery.benchapp worker`` (see services.py),
which reads the broker (and result backend: the same Redis) from
``WOVE_BENCH_REDIS_URL``; the benchmark's process, which starts a Redis of its own for
each workload, builds its client app with :func:`make_app` instead. Both register the raw
task (``bench.add``, the baseline) and Wove's remote environment ``"celery"`` with the
same keys, as tests/celery/celery_testapp.py does for the tests.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

import wove
from wove.contrib.celery import CeleryEnv

ENV_NAME = "celery"
KEYS = [os.environ.get("WOVE_BENCH_KEY", "bench-key-" + "x" * 40)]


def add(x: int, y: int) -> int:
    """The raw Celery task of the baseline."""
    return x + y


def make_app(redis_url: str) -> tuple[Celery, Any]:
    """A Celery app on ``redis_url`` (broker and result backend) with Wove's task and
    ``bench.add`` registered; returns the app and its ``add`` task."""
    app = Celery(
        "wove_bench",
        broker=redis_url,
        backend=redis_url,
        include=["wove.contrib.celery"],
    )
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # Set explicitly: left unset, Celery 5 warns (CPendingDeprecationWarning).
        broker_connection_retry_on_startup=True,
        result_expires=3600,
    )
    task = app.task(name="bench.add")(add)
    return app, task


def register(app: Celery) -> Any:
    """Register Wove's ``"celery"`` environment on ``app``; returns its remover."""
    return wove.register_env(ENV_NAME, CeleryEnv(app, keys=KEYS))


if "WOVE_BENCH_REDIS_URL" in os.environ:  # the worker (and whoever sets it)
    app, add_task = make_app(os.environ["WOVE_BENCH_REDIS_URL"])
    register(app)
