"""Loaded by the RQ benchmark's workers (``rq worker -c bench.rq_settings``) and by the
benchmark's process: Wove's environment ``"bench-rq"``, and the raw job's function."""

from __future__ import annotations

import os

import wove
from wove.contrib.rq import RQEnv

REDIS_URL = os.environ["WOVE_TEST_RQ_URL"]  # set by the worker's starter; rq reads it too
KEYS = ["bench-rq-key-" + "x" * 40]
QUEUE = "wove-bench"
ENV = "bench-rq"

env = RQEnv(REDIS_URL, keys=KEYS, queue=QUEUE)
wove.register_env(ENV, env)


def add(x: int, y: int) -> int:
    """The raw RQ job of the baseline."""
    return x + y
