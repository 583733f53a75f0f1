"""Wove on Celery: tasks and detached weaves sent to Celery workers.

``pip install "wove[celery]"``. In the processes that send and in the workers::

    import wove
    from wove.contrib.celery import CeleryEnv

    wove.register_env("celery", CeleryEnv(app, keys=[os.environ["WOVE_KEY"]]))

then ``@w.do(env="celery")`` runs a task on a worker, ``weave(env="celery")`` all of a
weave's tasks, and ``weave(background=True, env="celery")`` a whole detached weave.
Importing this package registers Wove's Celery task (``wove.run``) with every app: list
it in the app's ``include`` (see docs/celery.md).
"""

from .capture import PayloadError, PayloadTooLarge
from .env import TASK_NAME, CeleryEnv
from .envelope import EnvelopeError, Keyring
from .worker import run_envelope

__all__ = [
    "TASK_NAME",
    "CeleryEnv",
    "EnvelopeError",
    "Keyring",
    "PayloadError",
    "PayloadTooLarge",
    "run_envelope",
]
