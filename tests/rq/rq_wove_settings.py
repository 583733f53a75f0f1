"""Loaded by the test RQ worker (``rq worker -c rq_wove_settings``) and by the tests:
the environments, registered under the same names with the same keys on both sides."""

from __future__ import annotations

import os

import wove
from wove.contrib.rq import RQEnv

REDIS_URL = os.environ["WOVE_TEST_RQ_URL"]  # rq reads it from here too
KEYS = ["rq-test-secret-" + "s" * 40]
#: The queue of the session's worker, and the queue of the worker a test loses.
QUEUE = "wove-test"
LOST_QUEUE = "wove-lost"
LEASE = 3.0

test_env = RQEnv(REDIS_URL, keys=KEYS, queue=QUEUE)
lost_env = RQEnv(REDIS_URL, keys=KEYS, queue=LOST_QUEUE, lease=LEASE)
wove.register_env("rq-test", test_env)
wove.register_env("rq-lost", lost_env)
