"""Wove on RQ: tasks and detached weaves sent to RQ workers over Redis.

``pip install "wove[rq]"``. In the processes that send, and in a module the workers load
(``rq worker -c proj.wove_rq``)::

    import wove
    from wove.contrib.rq import RQEnv

    wove.register_env("rq", RQEnv("redis://127.0.0.1:6379/0", keys=[os.environ["WOVE_KEY"]]))

then ``@w.do(env="rq")`` runs a task on a worker. See docs/rq.md.
"""

from wove.contrib.remote.envelope import EnvelopeError, Keyring

from .env import RQEnv, lost_within
from .keys import JOB_FUNCTION

# Loaded with the environment, so a worker's process (``rq worker -c <module>``) has the
# job's function and cloudpickle imported before it forks a work horse per job.
from .worker import run_job  # isort: skip

__all__ = ["JOB_FUNCTION", "EnvelopeError", "Keyring", "RQEnv", "lost_within", "run_job"]
